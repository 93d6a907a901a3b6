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


# Modules that never build a Keras model or run one (data pipeline, tokenizer, recipes,
# the sandbox and pass@k, Hub checks, CLI errors raised before a model is built): their
# results cannot depend on the backend, so they run once, in the JAX session.
BACKEND_INDEPENDENT = (
    "tests/data/",
    "tests/eval/test_humaneval.py",
    "tests/eval/test_mbpp.py",
    "tests/eval/test_passk.py",
    "tests/eval/test_sandbox.py",
    "tests/convert/test_convert_errors.py",
    "tests/bench/test_bench_reference.py",
    "tests/test_cli_errors.py",
    "tests/test_hub_access.py",
    "tests/test_malloc_tuning.py",
    "tests/test_recipes.py",
    "tests/test_tokenizer.py",
    "tests/test_wheel.py",
)


def _backend_independent(item):
    path = item.path.relative_to(item.config.rootpath).as_posix()
    return "slow" in item.keywords or path.startswith(BACKEND_INDEPENDENT)


def pytest_collection_modifyitems(config, items):
    """`slow` tests and the BACKEND_INDEPENDENT modules run once, in the JAX session."""
    if os.environ["KERAS_BACKEND"] == "jax":
        return
    skip = pytest.mark.skip(reason="backend-independent: runs in the JAX session")
    for item in items:
        if _backend_independent(item):
            item.add_marker(skip)
