"""One test per private-API shim of smallcoder/compat.py: each checks the behaviour smallcoder
relies on, so that an upstream change fails here, by name, rather than somewhere deep in a model."""

import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from smallcoder import compat


def test_rope_cos_sin_are_the_tables_keras_hub_applies():
    rotary = keras_hub.layers.RotaryEmbedding(max_wavelength=10000.0)
    rng = np.random.default_rng(0)
    x = ops.convert_to_tensor(rng.normal(size=(2, 7, 3, 8)).astype("float32"))
    positions = np.asarray([list(range(7)), [0, 1, 2, 0, 1, 2, 3]], dtype="int32")

    def rotate(x, cos, sin):  # x * cos + rotate_half(x) * sin, rotate-half as Hugging Face's Llama
        x1, x2 = ops.split(x, 2, axis=-1)
        return x * cos + ops.concatenate([-x2, x1], axis=-1) * sin

    cos, sin = compat.rope_cos_sin(rotary, x, positions)
    assert tuple(cos.shape) == (2, 7, 1, 8)
    np.testing.assert_allclose(ops.convert_to_numpy(rotate(x, cos, sin)),
                               ops.convert_to_numpy(rotary(x, positions=positions)),
                               rtol=1e-6, atol=1e-6)
    cos, sin = compat.rope_cos_sin(rotary, x)  # positions 0..T-1
    assert tuple(cos.shape) == (1, 7, 1, 8)
    np.testing.assert_allclose(ops.convert_to_numpy(rotate(x, cos, sin)),
                               ops.convert_to_numpy(rotary(x)), rtol=1e-6, atol=1e-6)
    with pytest.raises(compat.UpstreamChanged, match="_compute_cos_sin_embedding.*keras-hub"):
        compat.rope_cos_sin(object(), x)


def test_remat_mode_is_the_scope_a_layer_was_made_in():
    with keras.RematScope(mode="full"):
        inside = keras.layers.Dense(2)
    assert compat.remat_mode(inside) == "full"
    assert compat.remat_mode(keras.layers.Dense(2)) is None
    with pytest.raises(compat.UpstreamChanged, match="_remat_mode"):
        compat.remat_mode(object())


class _Last(keras.metrics.Metric):
    def __init__(self):
        super().__init__(name="loss")
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, values, sample_weight=None):
        self.value.assign(ops.cast(ops.mean(values), self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)


def test_the_loss_tracker_is_what_fit_logs_and_can_be_replaced():
    x = np.ones((4, 3), "float32")
    targets = (np.zeros((4, 1), "float32"), np.full((4, 1), 5.0, "float32"))

    def two_steps(replace):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay as they are
        tracker = compat.loss_tracker(model)
        assert tracker in model.metrics and tracker.name == "loss"
        if replace:  # after compile, before the first step (as compile_for_training does)
            replacement = _Last()
            compat.set_loss_tracker(model, replacement)
            assert compat.loss_tracker(model) is replacement and replacement in model.metrics
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(logs["loss"]))
        model.fit(((x, y) for y in targets), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False,
                  callbacks=[record])
        step_losses = [float(np.mean((model.predict_on_batch(x) - y) ** 2)) for y in targets]
        return seen, step_losses

    logs, step_losses = two_steps(replace=False)
    assert logs[1] == pytest.approx(np.mean(step_losses), rel=1e-5)  # Keras' running mean
    logs, step_losses = two_steps(replace=True)
    assert logs == pytest.approx(step_losses, rel=1e-5)  # each step's own loss
    with pytest.raises(compat.UpstreamChanged, match="_loss_tracker"):
        compat.loss_tracker(object())


def test_jax_train_state_is_what_the_compiled_train_step_takes(backend):
    if backend != "jax":
        pytest.skip("JAX trainer")
    import jax

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    data = (np.ones((4, 3), "float32"), np.zeros((4, 1), "float32"))
    state = compat.jax_train_state(model, data)
    trainable, non_trainable, optimizer, metrics = state
    assert len(trainable) == len(model.trainable_variables)
    assert len(metrics) == len(model.metrics_variables)
    assert len(optimizer) == len(model.optimizer.variables) > 0  # built, as train_on_batch does
    logs, (new_trainable, *_) = jax.jit(model.train_step)(state, data)
    assert float(logs["loss"]) > 0 and not np.allclose(new_trainable[0], trainable[0])
    with pytest.raises(compat.UpstreamChanged, match="_symbolic_build"):
        compat.jax_train_state(object(), data)


def test_jax_backends_initialized_turns_true_when_jax_starts():
    code = ("from smallcoder import compat; started = compat.jax_backends_initialized; "
            "print(started()); import jax; print(started()); jax.devices(); print(started())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_sampler_run_loop_runs_a_decoding_loop_with_the_samplers_state():
    def cond(prompt, index):
        return ops.less(index, 5)

    def body(prompt, index):  # writes the sampler's (random, seeded) choice at `index`
        probabilities = ops.one_hot(ops.full((2,), 7, "int32"), 11)
        token = ops.cast(sampler.get_next_token(probabilities), "int32")
        return ops.slice_update(prompt, [0, index], token[:, None]), index + 1

    sampler = keras_hub.samplers.RandomSampler(seed=0)
    prompt = np.zeros((2, 10), "int32")
    out, index = compat.sampler_run_loop(sampler, cond, body, model=None,
                                         loop_vars=(prompt, ops.convert_to_tensor(2, "int32")),
                                         maximum_iterations=8)
    assert int(ops.convert_to_numpy(index)) == 5
    np.testing.assert_array_equal(ops.convert_to_numpy(out), [[0, 0, 7, 7, 7, 0, 0, 0, 0, 0]] * 2)
    with pytest.raises(compat.UpstreamChanged, match="Sampler.run_loop"):
        compat.sampler_run_loop(object(), cond, body, model=None, loop_vars=(prompt, 2), maximum_iterations=8)


@pytest.mark.jax_only
def test_jax_coordination_client_is_a_key_value_store_shared_by_the_job(backend):
    if backend != "jax":
        pytest.skip("JAX only")
    # One process joins a one-process job in a child interpreter (this one already runs JAX).
    code = """
import jax
from smallcoder import compat
assert compat.jax_coordination_client() is None
jax.distributed.initialize("127.0.0.1:{port}", num_processes=1, process_id=0)
client = compat.jax_coordination_client()
client.key_value_set("smallcoder/test/0", "7", allow_overwrite=True)
print(dict(client.key_value_dir_get("smallcoder/test/")))
jax.distributed.shutdown()
"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", code.format(port=port)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{'smallcoder/test/0': '7'}" in out.stdout
