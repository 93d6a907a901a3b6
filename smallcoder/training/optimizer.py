"""AdamW and learning-rate schedules from a recipe's `optimizer:` and `schedule:` sections."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="smallcoder")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, constant, then linear decay to `peak * min_ratio`.

    Args:
        peak: float. Learning rate after warmup.
        warmup_steps: int. Steps of linear warmup from 0.
        stable_steps: int. Steps at `peak`.
        decay_steps: int. Steps of linear decay at the end (0: stay at peak).
        min_ratio: float. Final learning rate as a fraction of `peak`.
    """

    def __init__(self, peak, warmup_steps, stable_steps, decay_steps, min_ratio=0.0):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        self.min_ratio = min_ratio

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        into_decay = ops.maximum(0.0, step - self.warmup_steps - self.stable_steps)
        decay = 1.0 - (1.0 - self.min_ratio) * ops.minimum(1.0, into_decay / max(self.decay_steps, 1))
        return self.peak * ops.minimum(warmup, decay)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "stable_steps": self.stable_steps,
            "decay_steps": self.decay_steps,
            "min_ratio": self.min_ratio,
        }


@keras.saving.register_keras_serializable(package="smallcoder")
class PerOptimizerStep(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(micro_step // accumulation)`.

    With `gradient_accumulation_steps`, Keras 3 calls the schedule with its raw
    micro-batch counter (`optimizer._iterations`); recipes count optimizer steps.
    """

    def __init__(self, schedule, accumulation):
        self.schedule = schedule
        self.accumulation = accumulation

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.accumulation))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "accumulation": self.accumulation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def learning_rate_schedule(recipe):
    """The recipe's schedule over optimizer steps (`recipe.steps`)."""
    peak = float(recipe["optimizer.learning_rate"])
    kind, warmup = recipe["schedule.type"], recipe.warmup_steps
    min_ratio = float(recipe["schedule.min_learning_rate_ratio"])
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            warmup_target=peak,
            warmup_steps=warmup,
            decay_steps=max(recipe.decay_steps, 1),
            alpha=min_ratio,
        )
    decay = recipe.decay_steps if kind == "wsd" else 0
    return WarmupStableDecay(peak, warmup, recipe.steps - warmup - decay, decay, min_ratio)


def build_optimizer(recipe, variables):
    """`keras.optimizers.AdamW` for `variables`, built, decay off where the recipe says.

    Args:
        recipe: a `smallcoder.recipes.Recipe`.
        variables: the model's trainable variables; those whose path contains
            a string of `optimizer.exclude_from_weight_decay` get no decay
            (norm scales and the input embedding by default).
    """
    accumulation = recipe["training.gradient_accumulation_steps"]
    schedule = learning_rate_schedule(recipe)
    if accumulation > 1:
        schedule = PerOptimizerStep(schedule, accumulation)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        beta_1=recipe["optimizer.beta_1"],
        beta_2=recipe["optimizer.beta_2"],
        epsilon=recipe["optimizer.epsilon"],
        weight_decay=recipe["optimizer.weight_decay"],
        global_clipnorm=recipe["optimizer.clipnorm"],
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
    )
    patterns = recipe["optimizer.exclude_from_weight_decay"] or []
    excluded = [v for v in variables if any(p in v.path for p in patterns)]
    if excluded:
        optimizer.exclude_from_weight_decay(var_list=excluded)
    optimizer.build(variables)
    return optimizer
