"""The demo tokenizer: a small StarCoder-layout BPE trained on this Python's stdlib.

No download: the corpus is the running interpreter's own standard-library
sources and the `pydoc_data` reference topics, read in sorted order, so the
result is deterministic for a given Python version. Cached under
`$SMALLCODER_CACHE` (default `~/.cache/smallcoder`), written atomically.
"""

import os
import sys
import sysconfig
import tempfile

from smallcoder.tokenizer import SmallCoderTokenizer, train_tokenizer

DEMO_VOCAB_SIZE = 4096
_CORPUS_BYTES = 6_000_000  # enough for stable merges, trains in a few seconds


def cache_dir():
    return os.environ.get("SMALLCODER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "smallcoder"
    )


def stdlib_corpus(max_bytes=_CORPUS_BYTES):
    """Yield stdlib source files and pydoc topics (sorted, tests excluded) up to `max_bytes`."""
    from pydoc_data import topics

    total = 0
    for key in sorted(topics.topics):
        text = topics.topics[key]
        total += len(text)
        yield text
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in ("test", "tests", "idlelib", "site-packages", "__pycache__")
            and not d.startswith("lib2to3")
        )
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            total += len(text)
            yield text
            if total >= max_bytes:
                return


def demo_tokenizer(vocab_size=DEMO_VOCAB_SIZE):
    """Return the demo tokenizer, training (~5 s) and caching it on first use."""
    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    path = os.path.join(cache_dir(), f"demo-tokenizer-{version}-v{vocab_size}.json")
    if not os.path.exists(path):
        tokenizer = train_tokenizer(stdlib_corpus(), vocab_size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".json.tmp")
        os.close(fd)
        tokenizer.backend.save(tmp)
        os.replace(tmp, path)
    return SmallCoderTokenizer(path)
