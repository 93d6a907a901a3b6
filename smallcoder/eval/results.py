"""Result files of an eval run, in `output_dir`:

- `{name}_results.jsonl`: one line per executed sample, appended and flushed
  as soon as it is known: `{"task_id", "sample", "completion", "raw",
  "passed", "result", "timed_out", "duration_s"}` (`result` is `"passed"`,
  `"timed out"` or `"failed: <reason>"`; `raw` is the model's text, or
  the `--samples` file's completion, before post-processing).
- `{name}_config.json`: the settings of the run; a resumed run must match.
- `{name}_summary.json`: pass@k, counts, the model card's reference numbers
  and the protocol, written atomically at the end.

A rerun into the same folder reads the jsonl and skips the (task_id, sample)
pairs already there, so an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading


def write_json_atomic(path, obj):
    """Write `obj` as JSON to `path` via a temp file and `os.replace`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_jsonl(path):
    """Rows of a jsonl file; a torn last line (from a killed run) is ignored."""
    rows = []
    with open(path) as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number >= len(lines) - 1:  # the last line: cut off mid-write
                break
            raise ValueError(f"{path}: line {number} is not JSON ({e}).") from e
    return rows


class ResultsLog:
    """The per-sample results jsonl: load what is done, append new rows.

    Thread-safe; every row is flushed and fsynced before `append` returns.
    """

    def __init__(self, path):
        self.path = path
        self.rows = read_jsonl(path) if os.path.exists(path) else []
        self._lock = threading.Lock()
        self._file = None

    def done(self):
        """`{(str(task_id), sample)}` of the rows already written."""
        return {(str(r["task_id"]), int(r.get("sample", 0))) for r in self.rows}

    def append(self, row):
        line = json.dumps(row) + "\n"
        with self._lock:
            if self._file is None:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._repair_torn_tail()
                self._file = open(self.path, "a")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.rows.append(row)

    def _repair_torn_tail(self):
        # A run killed mid-line leaves a partial row; cut it before appending.
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def close(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
