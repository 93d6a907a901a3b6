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


@pytest.mark.slow  # a demo-sized fine-tune (120 steps of the demo model), its gate and a generation: a few minutes
def test_the_readme_fine_tune_example_runs_as_written(tmp_path):
    import json
    import os

    text = (ROOT / "README.md").read_text()
    recipes = text.index("## Recipes")
    block = re.search(r"\*\*Fine-tune on your data\*\*.*?```bash\n(.*?)```", text[recipes:], re.S)
    assert block and text.index("```", recipes) == recipes + block.start(1) - len("```bash\n")  # the first example
    lines = block.group(1).strip().splitlines()
    assert len(lines) <= 10
    # What the quickstart leaves behind: a Keras preset of the demo model in runs/demo/sft/model.
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([sys.executable, "-c", "from smallcoder import SmallCoderCausalLM; SmallCoderCausalLM."
                    "from_preset('smallcoder_demo').save_to_preset('runs/demo/sft/model')"],
                   cwd=tmp_path, env=env, check=True, timeout=600)
    result = subprocess.run(["bash", "-e", "-c", block.group(1)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    run = tmp_path / "runs" / "mine"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tokens_per_source"] == {"rows": summary["tokens_per_source"]["rows"]} and summary["validation"]
    assert (run / "model" / "model.weights.h5").is_file() and (run / "hf" / "config.json").is_file()
    assert "initialised from runs/demo/sft/model" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1]  # the generation


def test_ci_runs_exactly_the_readme_test_command():
    text = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"## Tests\n\n```bash\n(.*?)\n```", text, re.S)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [command]
