"""The one Hub check every loader uses: HF_HUB_OFFLINE read as huggingface_hub reads it, and a
probe of the endpoint (or of the proxy, when one is set) that answers within seconds."""

import socket
import time

import pytest

from smallcoder import hub_access


@pytest.fixture
def no_hub_settings(monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT",
                 "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


@pytest.fixture
def listening_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def _closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    return port


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("ON", True), ("yes", True), ("True", True), ("0", False), ("false", False), ("", False),
])
def test_offline_reads_the_variable_as_huggingface_hub_does(no_hub_settings, value, expected):
    no_hub_settings.setenv("HF_HUB_OFFLINE", value)
    assert hub_access.offline() is expected
    assert hub_access.offline(datasets=True) is expected


def test_datasets_offline_counts_for_dataset_loads_only(no_hub_settings):
    no_hub_settings.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub_access.offline(datasets=True) and not hub_access.offline()
    reason = hub_access.unavailable_reason(datasets=True)
    assert reason == "HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set"


def test_huggingface_hubs_own_setting_counts(no_hub_settings):
    from huggingface_hub import constants

    no_hub_settings.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_access.unavailable_reason() == "HF_HUB_OFFLINE is set"


def test_probe_of_the_endpoint(no_hub_settings, listening_port):
    no_hub_settings.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening_port}")
    assert hub_access.reachable() and hub_access.unavailable_reason() is None
    closed = f"http://127.0.0.1:{_closed_port()}"
    no_hub_settings.setenv("HF_ENDPOINT", closed)
    start = time.monotonic()
    assert hub_access.unavailable_reason(timeout=1.0) == f"{closed} is not reachable"
    assert time.monotonic() - start < 5


def test_with_a_proxy_the_proxy_is_probed(no_hub_settings, listening_port):
    # Only the proxy accepts connections.
    no_hub_settings.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    no_hub_settings.setenv("HTTPS_PROXY", f"127.0.0.1:{listening_port}")
    assert hub_access.reachable()
    no_hub_settings.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    assert not hub_access.reachable(timeout=1.0)
