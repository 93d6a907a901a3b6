"""`smallcoder convert` both ways, and `from_preset` on a Hugging Face folder."""

import os
import subprocess
import sys

import numpy as np


def test_cli_round_trip_is_exact(make_hf_checkpoint, tmp_path):
    import torch
    from click.testing import CliRunner
    from keras import ops
    from safetensors.torch import load_file

    from smallcoder.cli import main
    from smallcoder.convert.weights import weight_specs
    from smallcoder.models import SmallCoderCausalLM

    src = make_hf_checkpoint(kv_heads=2, tied=True, dtype="bfloat16")
    keras_dir, hf_dir = str(tmp_path / "keras"), str(tmp_path / "hf")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "hf-to-keras", src, keras_dir])
    assert result.exit_code == 0, result.output
    assert {"config.json", "model.weights.h5", "tokenizer.json"} <= set(os.listdir(keras_dir))
    result = runner.invoke(main, ["convert", "keras-to-hf", keras_dir, hf_dir, "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output

    source = load_file(os.path.join(src, "model.safetensors"))
    written = load_file(os.path.join(hf_dir, "model.safetensors"))
    assert sorted(written) == sorted(source)
    assert all(torch.equal(written[k], source[k]) for k in source)

    # An existing destination is kept unless --overwrite.
    result = runner.invoke(main, ["convert", "keras-to-hf", keras_dir, hf_dir])
    assert result.exit_code != 0 and "--overwrite" in result.output

    # from_preset routes a Hugging Face folder through load_hf.
    from_hf = SmallCoderCausalLM.from_preset(src)
    for spec in weight_specs(from_hf.backbone):
        value = spec.to_hf(ops.convert_to_numpy(spec.variable.value))
        assert np.array_equal(value, source[spec.hf_name].float().numpy()), spec.hf_name


def test_convert_command_imports_only_click():
    code = (
        "import sys, smallcoder.commands.convert; "
        "print([m for m in ('keras', 'jax', 'torch', 'tensorflow', 'transformers', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
