"""Layouts on 8 fake CPU devices (tests/conftest.py sets XLA_FLAGS): shardings and equal training."""

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.jax_only,
    pytest.mark.skipif(keras.config.backend() != "jax", reason="keras.distribution layouts need JAX"),
]

PRESET = "smallcoder_test"  # D 64, N 4, K 2, F 128, V 4096, 2 layers


def _config():
    from smallcoder.models.presets import preset_config

    return preset_config(PRESET)


def _build(distribution, microbatches=1):
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.training.microbatching import use_microbatches

    keras.utils.set_random_seed(0)
    with distribution.scope():
        lm = SmallCoderCausalLM.from_preset(PRESET)
        lm.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.1), loss=keras.losses.
                   SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
        use_microbatches(lm, microbatches)
        lm.optimizer.build(lm.trainable_variables)
    return lm


def _spec(variable):
    spec = tuple(variable.value.sharding.spec)
    return spec + (None,) * (len(variable.shape) - len(spec))


# Intended shardings on the test preset. On a 2x4 mesh K = 2 kv heads do not
# split 4 ways, so they stay replicated; with 8 devices on one axis, D = 64 splits 8 ways.
B, M = "batch", "model"
EXPECTED = {
    ("fsdp", "auto"): {
        "token_embedding/embeddings": (None, B), "token_embedding/reverse_embeddings": (B, None),
        "query": (B, None, None), "key": (B, None, None), "value": (B, None, None),
        "attention_output": (None, None, B), "feedforward_gate": (B, None),
        "feedforward_intermediate": (B, None), "feedforward_output": (None, B), "scale": (None,),
    },
    ("tensor", "auto"): {
        "token_embedding/embeddings": (M, None), "token_embedding/reverse_embeddings": (None, M),
        # K = 2 kv heads on an 8-way model axis: replicated; N = 4 likewise.
        "query": (None, None, None), "key": (None, None, None), "value": (None, None, None),
        "attention_output": (None, None, None), "feedforward_gate": (None, M),
        "feedforward_intermediate": (None, M), "feedforward_output": (M, None), "scale": (None,),
    },
    ("tensor", "2x4"): {
        "token_embedding/embeddings": (M, None), "token_embedding/reverse_embeddings": (None, M),
        "query": (None, M, None), "key": (None, None, None), "value": (None, None, None),
        "attention_output": (M, None, None), "feedforward_gate": (None, M),
        "feedforward_intermediate": (None, M), "feedforward_output": (M, None), "scale": (None,),
    },
    ("fsdp_tensor", "2x4"): {
        "token_embedding/embeddings": (M, B), "token_embedding/reverse_embeddings": (B, M),
        "query": (B, M, None), "key": (B, None, None), "value": (B, None, None),
        "attention_output": (M, None, B), "feedforward_gate": (B, M),
        "feedforward_intermediate": (B, M), "feedforward_output": (M, B), "scale": (None,),
    },
}


def _kind(path):
    if path.startswith("token_embedding/"):
        return path
    if path.endswith("/scale"):
        return "scale"
    return path.split("/")[-2]


def test_data_layout_replicates_everything():
    from smallcoder.distribution import make_distribution

    lm = _build(make_distribution(_config(), "data"))
    assert len(keras.distribution.list_devices()) == 8
    for variable in lm.weights + lm.optimizer.variables:
        assert all(axis is None for axis in _spec(variable)), variable.path
        assert len(variable.value.sharding.device_set) == 8


@pytest.mark.parametrize("layout,mesh", list(EXPECTED))
def test_every_weight_and_its_optimizer_state_get_the_intended_sharding(layout, mesh):
    from smallcoder.distribution import make_distribution

    lm = _build(make_distribution(_config(), layout, mesh))
    expected = EXPECTED[(layout, mesh)]
    for variable in lm.weights:
        assert _spec(variable) == expected[_kind(variable.path)], variable.path
    # AdamW moments mirror their weight (fsdp: optimizer state sharded too).
    by_shape_and_spec = {(tuple(v.shape), _spec(v)) for v in lm.weights}
    moments = [v for v in lm.optimizer.variables if v.name.endswith(("momentum", "velocity"))]
    assert len(moments) == 2 * len(lm.trainable_weights)
    for moment in moments:
        assert (tuple(moment.shape), _spec(moment)) in by_shape_and_spec, moment.path


def test_kernel_shapes_match_the_layout_map_axes():
    """The spec tuples are written for this model's kernel order, not keras-hub Llama's."""
    from smallcoder.distribution import weight_specs

    specs = weight_specs(_config(), "fsdp_tensor", (2, 2))
    assert specs[r".*/attention/query/kernel"] == (B, M, None)  # (D, N, H)
    assert specs[r".*/attention/attention_output/kernel"] == (M, None, B)  # (N, H, D)
    assert specs[r"token_embedding/reverse_embeddings"] == (B, M)  # (D, V): untied, sharded


def _batch():
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 4096, (8, 32)).astype("int32"),
         "padding_mask": np.repeat(np.array([[1] * 20 + [2] * 12]), 8, 0).astype("int32")}
    y = rng.integers(0, 4096, (8, 32)).astype("int32")
    weight = (rng.random((8, 32)) > 0.3).astype("float32")
    return x, y, weight


@pytest.mark.parametrize("layout,microbatches", [("fsdp_tensor", 1), ("tensor", 1), ("fsdp_tensor", 2)])
def test_one_step_on_a_2x4_mesh_equals_one_device(layout, microbatches):
    from smallcoder.distribution import make_distribution

    single = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    reference = _build(single)
    # In-step microbatches (strided rows) on the sharded side: still the one-device update.
    sharded = _build(make_distribution(_config(), layout, "2x4"), microbatches=microbatches)
    for a, b in zip(reference.weights, sharded.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))

    x, y, weight = _batch()
    with single.scope():
        loss_1 = reference.train_on_batch(x, y, sample_weight=weight)
    with make_distribution(_config(), layout, "2x4").scope():
        loss_8 = sharded.train_on_batch(x, y, sample_weight=weight)
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
    for a, b in zip(reference.weights, sharded.weights):
        want, got = np.asarray(a.value), np.asarray(b.value)
        # Whole tensor: 1e-5 relative. Element-wise, AdamW's first step is
        # g / (|g| + eps): for gradients near eps (rare tokens' embedding rows)
        # a float32 reduction-order difference moves a weight by a fraction of
        # the step size lr = 1e-3: up to ~2e-7 on one CPU, 1.3e-6 with the
        # `tensor` layout's partial sums on another (an AVX-512 Xeon), up to
        # 3e-6 with microbatches (their gradients summed in another order);
        # hence the 3e-6 absolute floor.
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want), a.path
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-6, err_msg=a.path)


# Adapters keep the split of the kernel axes they share with their kernel; the rank axis is replicated.
LORA_EXPECTED = {  # fsdp_tensor on 2x4: D = 64 on batch, N = 4 and F = 128 on model, K = 2 replicated
    "query": ((B, M, None), (None, None)), "key": ((B, None, None), (None, None)),
    "value": ((B, None, None), (None, None)), "attention_output": ((M, None, None), (None, B)),
    "feedforward_gate": ((B, None), (None, M)), "feedforward_intermediate": ((B, None), (None, M)),
    "feedforward_output": ((M, None), (None, B)),
}


def _build_lora(distribution):
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.training import lora

    keras.utils.set_random_seed(0)
    with distribution.scope():
        lm = SmallCoderCausalLM.from_preset(PRESET)
        lora.enable(lm.backbone, 4, alpha=8, targets=lora.TARGETS)
        for variable in lm.trainable_variables:  # b starts at zero: make the adapters matter at once
            if variable.path.endswith("lora_kernel_b"):
                variable.assign(np.random.default_rng(1).normal(0, 0.05, variable.shape).astype("float32"))
        lm.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.1), loss=keras.losses.
                   SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
        lm.optimizer.build(lm.trainable_variables)
    return lm


def test_lora_adapters_get_layouts_and_train_like_one_device():
    from smallcoder.distribution import make_distribution

    mesh = make_distribution(_config(), "fsdp_tensor", "2x4")
    sharded = _build_lora(mesh)
    adapters = [v for v in sharded.weights if "lora_kernel" in v.path]
    assert {v.path for v in sharded.trainable_variables} == {v.path for v in adapters} and len(adapters) == 28
    for variable in adapters:
        a, b = LORA_EXPECTED[variable.path.split("/")[-2]]
        assert _spec(variable) == (a if variable.path.endswith("_a") else b), variable.path

    single = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    reference = _build_lora(single)
    x, y, weight = _batch()
    with single.scope():
        loss_1 = reference.train_on_batch(x, y, sample_weight=weight)
    with mesh.scope():
        loss_8 = sharded.train_on_batch(x, y, sample_weight=weight)
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
    for a, b in zip(reference.weights, sharded.weights):
        want, got = np.asarray(a.value), np.asarray(b.value)
        if "lora_kernel" not in a.path:
            np.testing.assert_array_equal(got, want, err_msg=a.path)  # frozen
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-6, err_msg=a.path)
