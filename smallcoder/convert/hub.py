"""Turn a local folder or a Hugging Face repo id into a local folder.

A repo id downloads with `huggingface_hub.snapshot_download` (only config,
safetensors and tokenizer files). Offline (`smallcoder.hub_access`:
`HF_HUB_OFFLINE`, or the Hub not answering within a few seconds) only the
local Hub cache is tried, so an unreachable Hub fails fast instead of hanging.
"""

import os
import re

from smallcoder import hub_access

DOWNLOAD_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_OWNER_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(name):
    """Whether `name` reads as a Hub repo id `owner/name` and is not a local path.

    Every model argument (`--model`, `init_from`, `model.preset`) that is
    neither a preset name nor an existing path is taken as a Hub id when it
    has this form.
    """
    name = os.fspath(name)
    return (bool(_OWNER_NAME.match(name)) and not name.startswith((".", "~"))
            and not os.path.exists(os.path.expanduser(name)))


def in_local_cache(repo_id):
    """Whether the local Hub cache holds `repo_id`'s config.json (a snapshot was downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid id, an unreadable cache: not usable offline
        return False


def unavailable(repo_id):
    """Why `repo_id` cannot be loaded from here, or None (the Hub answers, or the cache has it).

    Decided in seconds: `hub_access.unavailable_reason()` probes the Hub.
    """
    reason = hub_access.unavailable_reason()
    if reason is None or in_local_cache(repo_id):
        return None
    return f"{reason}, and it is not in the local Hub cache"


def offline_message(repo_id, reason):
    """One line: the Hub cannot give `repo_id` (`reason`), and what to pass instead."""
    return (f"cannot download {repo_id!r} from the Hugging Face Hub ({reason}). Pass a local folder "
            "holding config.json, *.safetensors and tokenizer.json instead (download it where the Hub "
            f"is reachable: huggingface-cli download {repo_id} --local-dir DIR).")


def resolve_folder(path_or_repo_id):
    """A local folder for a folder path or a Hub repo id like `"Beebey/smallcoder-303m"`.

    Raises:
        FileNotFoundError: a path that is not a folder (and not a repo id).
        OSError: the repo could not be downloaded (offline, unknown repo, …);
            the message says to pass a local folder.
    """
    name = os.fspath(path_or_repo_id)
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise NotADirectoryError(f"{name!r} is a file; pass the folder holding config.json.")
    if not _REPO_ID.match(name) or name.startswith((".", "~")):
        raise FileNotFoundError(f"No folder {name!r}, and it is not a Hugging Face repo id (owner/name).")
    return _download(name)


def _download(repo_id):
    from huggingface_hub import snapshot_download

    reason = hub_access.unavailable_reason()
    try:
        return snapshot_download(repo_id, allow_patterns=DOWNLOAD_PATTERNS, local_files_only=reason is not None)
    except Exception as e:  # hub errors, network errors, cache misses
        where = f"{reason}, and it is not in the local Hub cache" if reason else str(e)
        message = offline_message(repo_id, where)
        raise OSError(message[0].upper() + message[1:]) from e
