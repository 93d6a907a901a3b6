"""Orbax checkpoints: size, keep, atomicity, restore checks (any backend)."""

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from smallcoder.training import checkpoint


def _model(learning_rate=1e-3):
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.training.metrics import compile_for_training

    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    optimizer = keras.optimizers.AdamW(learning_rate)
    optimizer.build(lm.trainable_variables)
    compile_for_training(lm, optimizer)
    return lm


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_a_checkpoint_holds_weights_and_optimizer_state_once(tmp_path):
    lm = _model()
    variables = checkpoint.training_variables(lm)
    rng = np.random.default_rng(0)
    for v in variables.values():  # random bits: nothing for the compressor to squeeze
        v.assign(rng.standard_normal(v.shape).astype(v.dtype) if v.shape else v.value)
    store = checkpoint.Checkpoints(tmp_path, keep=2)
    store.save(1, lm, {"data": {"position": 7}})
    store.wait()
    array_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables.values())
    size = _folder_bytes(tmp_path / "step_00000001")
    assert 0.8 * array_bytes <= size <= 1.05 * array_bytes + 256 * 1024, (size, array_bytes)
    store.close()


def test_restore_gives_back_weights_optimizer_state_meta_and_keeps_the_newest(tmp_path):
    lm = _model()
    for v in lm.optimizer.variables:
        if "momentum" in v.path:
            v.assign(np.full(v.shape, 0.5, dtype="float32"))
    want = {k: keras.ops.convert_to_numpy(v.value) for k, v in checkpoint.training_variables(lm).items()}
    store = checkpoint.Checkpoints(tmp_path, keep=2)
    for step in (2, 4, 6):
        store.save(step, lm, {"data": {"step": step}})
    store.close()
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 6]

    fresh = _model(learning_rate=5e-4)
    store = checkpoint.Checkpoints(tmp_path, keep=2)
    meta = store.restore(6, fresh)
    store.close()
    assert meta["data"] == {"step": 6} and meta["step"] == 6
    got = {k: keras.ops.convert_to_numpy(v.value) for k, v in checkpoint.training_variables(fresh).items()}
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_restoring_into_another_model_names_what_differs(tmp_path):
    from smallcoder.models.backbone import SmallCoderBackbone
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.models.presets import preset_config

    store = checkpoint.Checkpoints(tmp_path)
    store.save(1, _model(), {})
    store.close()
    config = {**preset_config("smallcoder_test"), "num_layers": 1}
    other = SmallCoderCausalLM(SmallCoderBackbone(**config))
    other.compile(optimizer=keras.optimizers.AdamW(1e-3))
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(ValueError, match=r"holds other variables than this model.*transformer_layer_1"):
        checkpoint.Checkpoints(tmp_path).restore(1, other)


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import orbax.checkpoint as ocp
    from smallcoder.training import checkpoint

    manager = checkpoint.Checkpoints(sys.argv[1]).manager
    big = {"w": np.arange(64 * 2**20, dtype=np.float32)}  # 256 MiB
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(big),
                                            meta=ocp.args.JsonSave({"step": 1})))
    print("saving", flush=True)  # the files are being written in the background now
    manager.wait_until_finished()
    print("saved", flush=True)
""")


def test_a_save_killed_half_way_is_never_found(tmp_path):
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert saver.stdout.readline().strip() == "saving"
    saver.send_signal(signal.SIGKILL)
    saver.wait()
    found = checkpoint.latest(tmp_path)
    if found is None:  # killed while writing: the partial step is not a checkpoint
        assert not (tmp_path / "step_00000001").exists()
        assert os.listdir(tmp_path), "the save had not started"  # its temporary folder is left
    else:  # the write won the race: then it must be whole
        store = checkpoint.Checkpoints(tmp_path)
        restored = store.manager.restore(1)
        store.close()
        np.testing.assert_array_equal(np.asarray(restored["state"]["w"]),
                                      np.arange(64 * 2**20, dtype=np.float32))


@pytest.mark.jax_only
def test_a_checkpoint_saved_on_a_4x2_mesh_restores_on_one_device(tmp_path):
    """The run's own layout is asked for at restore: a sharded checkpoint reshards (here to no sharding)."""
    if keras.config.backend() != "jax":
        pytest.skip("meshes: JAX only")
    from smallcoder.distribution import make_distribution
    from smallcoder.models.presets import preset_config

    with make_distribution(preset_config("smallcoder_test"), "fsdp_tensor", "4x2").scope():
        sharded = _model()
        rng = np.random.default_rng(1)
        for v in checkpoint.training_variables(sharded).values():
            if v.shape:
                v.assign(rng.standard_normal(v.shape).astype(v.dtype))
        want = {k: keras.ops.convert_to_numpy(v.value) for k, v in checkpoint.training_variables(sharded).items()}
        assert any(len(v.value.sharding.device_set) == 8 for v in sharded.trainable_variables)
        store = checkpoint.Checkpoints(tmp_path, keep=1)
        store.save(3, sharded, {})
        store.close()

    alone = _model()
    store = checkpoint.Checkpoints(tmp_path, keep=1)
    store.restore(3, alone)
    store.close()
    for key, v in checkpoint.training_variables(alone).items():
        assert len(v.value.sharding.device_set) == 1, key
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), want[key], err_msg=key)
