"""Test set-up: pick the Keras backend and fake 8 CPU devices before any import."""

import os

# Must happen before JAX (and keras) are imported anywhere.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
# The XLA:CPU memory scheduler, as the `smallcoder` command sets it
# (`smallcoder.tune_process`; importing smallcoder sets nothing).
from smallcoder import xla_flags  # noqa: E402

xla_flags.apply()
os.environ.setdefault("KERAS_BACKEND", "jax")
# On a GPU, JAX runs float32 matmuls in TF32 by default (~1e-3 relative error);
# the tests compare float32 math at tight tolerances, so they ask for full
# float32 precision (on a CPU it is full precision either way, at the same speed).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def backend():
    import keras

    return keras.config.backend()


@pytest.fixture(scope="session")
def demo_tokenizer():
    from smallcoder.demo_tokenizer import demo_tokenizer

    return demo_tokenizer()


def pytest_collection_modifyitems(config, items):
    """`slow` tests do not depend on the Keras backend: run them once, in the JAX session."""
    if os.environ["KERAS_BACKEND"] == "jax":
        return
    skip = pytest.mark.skip(reason="slow and backend-independent: runs in the JAX session")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
