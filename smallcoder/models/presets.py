"""Built-in presets, the Keras preset folder format, and every other model source.

A preset folder holds `config.json` (the backbone's Keras config),
`model.weights.h5`, `tokenizer.json` (+ `tokenizer_config.json`) and
`metadata.json`, as `keras_hub`'s `save_to_preset` writes them.

A model source, wherever one is taken (`--model`, a recipe's `init_from` and
`model.preset`), is one of: a built-in preset name (fresh weights), a Keras
preset folder, a Hugging Face folder (`config.json` with `model_type`,
safetensors), or a Hugging Face Hub id `owner/name` (downloaded once into the
Hub cache; offline, a one-line error within seconds).
"""

import json
import os

PRESETS = {
    # The model card's SmallCoder-303M: count_params() == 302,027,520.
    "smallcoder_303m": {
        "vocabulary_size": 49152,
        "num_layers": 24,
        "num_query_heads": 8,
        "num_key_value_heads": 8,
        "hidden_dim": 768,
        "intermediate_dim": 3072,
        "max_sequence_length": 1024,
        "rope_max_wavelength": 10000.0,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
    },
    # The `--demo` recipes' model: learns the demo tasks on 2 CPU cores in ~2 minutes (1.6M parameters).
    "smallcoder_demo": {
        "vocabulary_size": 4096,
        "num_layers": 2,
        "num_query_heads": 4,
        "num_key_value_heads": 4,
        "hidden_dim": 128,
        "intermediate_dim": 512,
        "max_sequence_length": 1024,
        "rope_max_wavelength": 10000.0,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
    },
    # A small model for checks and benchmarks on a CPU (6.3M parameters).
    "smallcoder_tiny": {
        "vocabulary_size": 4096,
        "num_layers": 4,
        "num_query_heads": 4,
        "num_key_value_heads": 4,
        "hidden_dim": 256,
        "intermediate_dim": 1024,
        "max_sequence_length": 1024,
        "rope_max_wavelength": 10000.0,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
    },
    # For tests: grouped KV heads, seconds to compile.
    "smallcoder_test": {
        "vocabulary_size": 4096,
        "num_layers": 2,
        "num_query_heads": 4,
        "num_key_value_heads": 2,
        "hidden_dim": 64,
        "intermediate_dim": 128,
        "max_sequence_length": 1024,
        "rope_max_wavelength": 10000.0,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
    },
}

# Where the trained weights of a built-in preset live on the Hugging Face Hub.
HF_REPOS = {"smallcoder_303m": "Beebey/smallcoder-303m"}


def preset_config(preset):
    """The backbone config (a new dict) of a built-in preset name, a Keras preset folder or a
    Hugging Face folder, read without building the model.

    A Keras folder's is the `config` of its `config.json`, as `save_to_preset`
    wrote it, without the layer's `name` and `trainable`; a Hugging Face
    folder's is translated from its Llama `config.json` (`convert.hf_config`).
    """
    preset = os.fspath(preset)
    if preset in PRESETS:
        return dict(PRESETS[preset])
    if not os.path.isdir(preset):
        raise ValueError(
            f"Unknown preset {preset!r}. Built-in presets: {', '.join(PRESETS)}; or pass a folder."
        )
    path = os.path.join(preset, "config.json")
    if is_hf_folder(preset):
        from smallcoder.convert.hf_config import backbone_kwargs_from_hf, read_json

        return backbone_kwargs_from_hf(read_json(path), where=path)
    try:
        with open(path) as f:
            config = json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Keras preset config ({type(e).__name__}: {e}).") from e
    config.pop("name", None)
    config.pop("trainable", None)
    return config


def is_keras_preset(path):
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
        os.path.join(path, "model.weights.h5")
    )


def is_hf_folder(path):
    if not os.path.isfile(os.path.join(path, "config.json")):
        return False
    with open(os.path.join(path, "config.json")) as f:
        try:
            return "model_type" in json.load(f)
        except ValueError:
            return False


def is_hub_id(source):
    """Whether `source` is taken as a Hugging Face Hub id: `owner/name`, not a preset name or a path."""
    from smallcoder.convert.hub import is_repo_id

    return os.fspath(source) not in PRESETS and is_repo_id(source)


_KEEP = object()  # `remat` default: the preset's own setting


def load_backbone(preset, load_weights=True, dtype=None, remat=_KEEP):
    """A `SmallCoderBackbone` from a preset name or a Keras preset folder.

    `remat` (None or `"full"`) replaces the saved setting; by default a folder
    keeps its own and a built-in preset has none.
    """
    from smallcoder.models.backbone import SmallCoderBackbone

    if preset in PRESETS:
        return SmallCoderBackbone(**preset_config(preset), dtype=dtype, remat=None if remat is _KEEP else remat)
    _check_folder(preset)
    config = preset_config(preset)
    if dtype is not None:
        config["dtype"] = dtype
    if remat is not _KEEP:
        config["remat"] = remat
    backbone = SmallCoderBackbone.from_config(config)
    if load_weights:
        weights = os.path.join(preset, "model.weights.h5")
        try:
            backbone.load_weights(weights)
        except Exception as e:
            raise ValueError(f"Could not load weights from {weights!r}: {e}") from e
    return backbone


def backbone_from_preset(preset, load_weights=True, dtype=None, remat=_KEEP):
    """`SmallCoderBackbone.from_preset`: what `load_causal_lm` takes, without the LM head."""
    preset = os.fspath(preset)
    if is_hub_id(preset) or (preset not in PRESETS and os.path.isdir(preset) and is_hf_folder(preset)):
        return load_causal_lm(preset, load_weights=load_weights, dtype=dtype, remat=remat).backbone
    return load_backbone(preset, load_weights=load_weights, dtype=dtype, remat=remat)


def tokenizer_from_preset(preset):
    """`SmallCoderTokenizer.from_preset`: the tokenizer of a preset name or folder, or a clear error."""
    preset = os.fspath(preset)
    check_model_source(preset)
    if is_hub_id(preset):
        from smallcoder.convert.hub import resolve_folder

        preset = resolve_folder(preset)
    tokenizer = load_tokenizer(preset)
    if tokenizer is None:
        where = (f"the built-in preset {preset!r} ships none (its tokenizer.json comes with the Hugging Face "
                 f"folder {HF_REPOS[preset]})" if preset in HF_REPOS else f"{preset!r} holds no tokenizer.json")
        raise ValueError(f"No tokenizer: {where}. Use SmallCoderTokenizer('path/to/tokenizer.json').")
    return tokenizer


def load_tokenizer(preset):
    """The tokenizer of a preset name (demo tokenizer for the small ones) or folder (Keras or
    Hugging Face: EOS from its `tokenizer_config.json`), or None."""
    if preset in PRESETS:
        from smallcoder.demo_tokenizer import DEMO_VOCAB_SIZE, demo_tokenizer

        if PRESETS[preset]["vocabulary_size"] != DEMO_VOCAB_SIZE:
            return None  # smallcoder_303m: the StarCoder tokenizer comes with its HF folder
        return demo_tokenizer()
    from smallcoder.convert.hf import folder_tokenizer

    config_path = os.path.join(preset, "config.json")
    hf_config = None
    if is_hf_folder(preset):
        with open(config_path) as f:
            hf_config = json.load(f)
    return folder_tokenizer(preset, hf_config)


def load_causal_lm(preset, load_weights=True, dtype=None, remat=_KEEP, **kwargs):
    """A `SmallCoderCausalLM` from any model source (see the module doc).

    `remat`: see `load_backbone` (a Hugging Face checkpoint has none saved).
    """
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    preset = os.fspath(preset)
    if is_hub_id(preset) or (preset not in PRESETS and os.path.isdir(preset) and is_hf_folder(preset)):
        from smallcoder.convert import load_hf

        return load_hf(preset, dtype=dtype, remat=None if remat is _KEEP else remat)
    backbone = load_backbone(preset, load_weights=load_weights, dtype=dtype, remat=remat)
    tokenizer = load_tokenizer(preset)
    if tokenizer is not None and tokenizer.vocab_size > backbone.vocabulary_size:
        raise ValueError(
            f"Tokenizer of {preset!r} has {tokenizer.vocab_size} tokens but the model only "
            f"{backbone.vocabulary_size} embeddings."
        )
    return SmallCoderCausalLM(backbone, tokenizer=tokenizer, **kwargs)


def save_causal_lm(causal_lm, preset_dir):
    """Write a Keras preset folder; a temporary sibling is renamed into place."""
    from smallcoder.atomic import staging_folder

    with staging_folder(os.path.abspath(os.fspath(preset_dir))) as tmp:
        causal_lm.backbone.save_to_preset(tmp)
        if causal_lm.tokenizer is not None:
            causal_lm.tokenizer.save(tmp)


def check_model_source(preset):
    """Raise `ValueError` unless `preset` is a model source that can be loaded from here: a
    built-in preset name, a Keras preset folder, a Hugging Face folder, or a Hub id that the Hub
    (probed for a few seconds) or the local Hub cache can give. Reads only the folder listing and
    config.json, so a command can check `--model` before it imports Keras."""
    preset = os.fspath(preset)
    if preset in PRESETS or (os.path.isdir(preset) and is_hf_folder(preset)):
        return
    if is_hub_id(preset):
        from smallcoder.convert.hub import offline_message, unavailable

        reason = unavailable(preset)
        if reason:
            raise ValueError(f"{preset!r} is not a local folder, and as a Hugging Face Hub id: "
                             f"{offline_message(preset, reason)}")
        return
    _check_folder(preset)


def _check_folder(path):
    if not os.path.isdir(path):
        hub = HF_REPOS.get(path)
        raise ValueError(
            f"{path!r} is neither a built-in preset ({', '.join(PRESETS)}) nor a folder."
            + (f" Its weights are on the Hugging Face Hub as {hub}." if hub else "")
        )
    if not is_keras_preset(path):
        raise ValueError(
            f"{path!r} is not a Keras preset folder (needs config.json and model.weights.h5) "
            "nor a Hugging Face folder (config.json with model_type)."
        )
