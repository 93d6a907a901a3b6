"""`config.json` of a `LlamaForCausalLM` <-> `SmallCoderBackbone` arguments.

Reads configs of transformers 4 (`rope_theta`, `rope_scaling`) and 5
(`rope_parameters`). Missing keys take `transformers.LlamaConfig`'s defaults.
Anything the Keras model does not implement is refused, naming the field.
"""

import importlib.metadata
import json
import os

SUPPORTED_MODEL_TYPES = ("llama",)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _rope_theta(config, where):
    """RoPE base from `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling` (4)."""
    rope = config.get("rope_parameters")
    if rope is None:
        rope = config.get("rope_scaling") or {}
        field = "rope_scaling"
    else:
        field = "rope_parameters"
    if not isinstance(rope, dict):
        raise ValueError(f"{where}: '{field}' must be an object, got {rope!r}.")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", None):
        raise ValueError(
            f"{where}: {field}.rope_type is {kind!r}; only plain RoPE ('default') is "
            "implemented, so this checkpoint's long-context scaling cannot be reproduced."
        )
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return float(theta)


def backbone_kwargs_from_hf(config, where="config.json"):
    """`SmallCoderBackbone` keyword arguments for a Llama `config.json` dict.

    Args:
        config: the parsed `config.json`.
        where: the file name used in error messages.

    Raises:
        ValueError naming the field for anything unsupported: another
        `model_type`, `hidden_act` other than silu, attention or MLP biases,
        scaled RoPE, a `head_dim` other than `hidden_size / num_attention_heads`.
    """
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{where}: model_type is {model_type!r}; only {SUPPORTED_MODEL_TYPES} "
            "(LlamaForCausalLM) checkpoints can be converted."
        )
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ValueError(f"{where}: '{key}' must be a positive integer, got {config.get(key)!r}.")
    act = config.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"{where}: hidden_act is {act!r}; only 'silu' (SwiGLU) is implemented.")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False):
            raise ValueError(f"{where}: {key} is true; SmallCoder's projections have no biases.")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads:
        raise ValueError(f"{where}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}).")
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != hidden // heads:
        raise ValueError(
            f"{where}: head_dim is {head_dim} but hidden_size / num_attention_heads is "
            f"{hidden // heads}; a separate head_dim is not implemented."
        )
    kv_heads = config.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ValueError(
            f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})."
        )
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": config["num_hidden_layers"],
        "num_query_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": config["intermediate_size"],
        "num_key_value_heads": kv_heads,
        "rope_max_wavelength": _rope_theta(config, where),
        "layer_norm_epsilon": float(config.get("rms_norm_eps", 1e-6)),
        "max_sequence_length": int(config.get("max_position_embeddings", 2048)),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "initializer_range": float(config.get("initializer_range", 0.02)),
    }


def hf_config_from_backbone(backbone, dtype, bos_token_id=None, eos_token_id=None):
    """A `config.json` dict for `backbone` that `LlamaForCausalLM` loads.

    Written for transformers 4 and 5 alike: `rope_theta` and
    `rope_parameters`, `torch_dtype` and `dtype`.
    """
    theta = float(backbone.rope_max_wavelength)
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        version = None
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "intermediate_size": backbone.intermediate_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_query_heads,
        "num_key_value_heads": backbone.num_key_value_heads,
        "head_dim": backbone.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": backbone.max_sequence_length,
        "initializer_range": backbone.initializer_range,
        "rms_norm_eps": backbone.layer_norm_epsilon,
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": bool(backbone.tie_word_embeddings),
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": dtype,
        "torch_dtype": dtype,
    }
    if version:
        config["transformers_version"] = version
    return config


def generation_config(bos_token_id, eos_token_id, pad_token_id):
    """`generation_config.json`: greedy by default, stops at EOS."""
    return {
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }


def write_json(folder, name, data):
    with open(os.path.join(folder, name), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
