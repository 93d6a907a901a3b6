import json
from pathlib import Path

import pytest

# CI clones the repository next to shared/, so find the data relative to the repo.
MBPP_PATH = Path(__file__).parents[2].parent / "shared/data/mbpp/mbpp.jsonl"


@pytest.fixture
def mbpp_path():
    if not MBPP_PATH.is_file():
        pytest.skip(f"MBPP data not found at {MBPP_PATH}")
    return str(MBPP_PATH)


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
