"""Whether the Hugging Face Hub can be used from here, decided in seconds.

Every Hub load (datasets, checkpoints, MBPP, perplexity texts) asks
`unavailable_reason()` first, so that an offline machine fails at once with
a message naming what to use instead, rather than after minutes of retries.
"""

import os
import socket
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
# huggingface_hub's own reading of HF_HUB_OFFLINE (case-insensitive).
_TRUE = ("1", "on", "yes", "true")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline(datasets=False):
    """Whether `HF_HUB_OFFLINE` (and, with `datasets`, `HF_DATASETS_OFFLINE`) says offline.

    The environment is read now, so a value set after `huggingface_hub` was
    imported counts too, as does `huggingface_hub.constants.HF_HUB_OFFLINE`.
    """
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(name, "").strip().lower() in _TRUE for name in names
    )


def endpoint():
    """The Hub's URL: `HF_ENDPOINT`, else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def reachable(timeout=PROBE_TIMEOUT_S):
    """Whether a TCP connection to the Hub opens within `timeout` seconds.

    With an HTTPS proxy set (`HTTPS_PROXY`, `ALL_PROXY`) the proxy is probed
    instead: that is where the connection goes. The probe runs in a daemon
    thread, so a stalled DNS lookup cannot block either.
    """
    proxy = next((os.environ[name] for name in _PROXY_VARIABLES if os.environ.get(name)), None)
    if proxy:
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    else:
        url = urlparse(endpoint())
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def unavailable_reason(datasets=False, timeout=PROBE_TIMEOUT_S):
    """Why the Hub cannot be used (`"HF_HUB_OFFLINE is set"`, `"<endpoint> is not
    reachable"`), or None when it can."""
    if offline(datasets):
        names = "HF_DATASETS_OFFLINE or HF_HUB_OFFLINE" if datasets else "HF_HUB_OFFLINE"
        return f"{names} is set"
    if not reachable(timeout):
        return f"{endpoint()} is not reachable"
    return None
