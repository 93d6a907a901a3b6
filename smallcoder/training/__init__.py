"""Training: AdamW + schedules, `fit` callbacks, checkpoints, the stage runner.

`run_stage(recipe)` trains one curriculum stage; `smallcoder recipe run` calls it.
"""

from smallcoder.training.optimizer import build_optimizer, learning_rate_schedule
from smallcoder.training.runner import TrainingError, run_stage

__all__ = ["TrainingError", "build_optimizer", "learning_rate_schedule", "run_stage"]
