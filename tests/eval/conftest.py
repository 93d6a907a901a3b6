import json

import pytest


@pytest.fixture
def write_samples():
    """`write_samples(path, [(task_id, completion)]) -> str(path)`: a samples jsonl."""

    def write(path, rows):
        with open(path, "w") as f:
            for task_id, completion in rows:
                f.write(
                    json.dumps({"task_id": task_id, "completion": completion}) + "\n"
                )
        return str(path)

    return write
