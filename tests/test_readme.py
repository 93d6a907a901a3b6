"""The README's Python snippet runs as written."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # half a minute; the model, fit and generate are tested on every backend elsewhere
def test_the_readme_python_snippet_runs(tmp_path):
    (snippet,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("[") and "Epoch 2/2" in result.stdout  # generate's two strings, then fit
    assert (tmp_path / "my-model" / "model.weights.h5").is_file()
