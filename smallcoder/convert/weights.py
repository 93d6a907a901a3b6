"""Which Hugging Face tensor is which Keras variable, and how to reshape it.

Shapes (D hidden, N query heads, K KV heads, H head dim, F intermediate, V vocab):

| Hugging Face (`torch.nn.Linear` is (out, in))  | Keras                                     |
|------------------------------------------------|-------------------------------------------|
| model.embed_tokens.weight (V, D)               | token_embedding/embeddings (V, D)         |
| lm_head.weight (V, D), untied only             | token_embedding/reverse_embeddings (D, V) |
| layers.i.input_layernorm.weight (D,)           | pre_attention_norm/scale (D,)             |
| layers.i.self_attn.q_proj.weight (N*H, D)      | attention/query/kernel (D, N, H)          |
| layers.i.self_attn.k_proj / v_proj (K*H, D)    | attention/key, value/kernel (D, K, H)     |
| layers.i.self_attn.o_proj.weight (D, N*H)      | attention/attention_output/kernel (N, H, D) |
| layers.i.post_attention_layernorm.weight (D,)  | pre_feedforward_norm/scale (D,)           |
| layers.i.mlp.gate_proj / up_proj (F, D)        | feedforward_gate, _intermediate (D, F)    |
| layers.i.mlp.down_proj.weight (D, F)           | feedforward_output/kernel (F, D)          |
| model.norm.weight (D,)                         | final_norm/scale (D,)                     |

Both use the rotate-half RoPE layout, so q/k need no permutation.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

# Buffers some checkpoints carry that are recomputed, not loaded.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclass(frozen=True)
class WeightSpec:
    """One HF tensor <-> one Keras variable.

    `to_keras(hf_array) -> keras_array` and `to_hf(keras_array) -> hf_array`
    are pure reshapes/transposes, so conversions are exact both ways.
    """

    hf_name: str
    variable: object
    hf_shape: tuple
    to_keras: Callable
    to_hf: Callable


def _same(x):
    return x


def _transpose(x):
    return np.transpose(x)


def _in_projection(heads, head_dim, hidden):
    """(heads*H, D) <-> (D, heads, H)."""
    return (
        (heads * head_dim, hidden),
        lambda w: np.transpose(w).reshape(hidden, heads, head_dim),
        lambda k: np.transpose(np.reshape(k, (hidden, heads * head_dim))),
    )


def _out_projection(heads, head_dim, hidden):
    """(D, N*H) <-> (N, H, D)."""
    return (
        (hidden, heads * head_dim),
        lambda w: np.transpose(w).reshape(heads, head_dim, hidden),
        lambda k: np.transpose(np.reshape(k, (heads * head_dim, hidden))),
    )


def _layout(num_layers, hidden_dim, vocabulary_size, intermediate_dim, num_query_heads,
            num_key_value_heads, tie_word_embeddings, **_):
    """`[(hf_name, keras attribute path, hf_shape, to_keras, to_hf)]` in HF order."""
    D, V, F = hidden_dim, vocabulary_size, intermediate_dim
    N, K = num_query_heads, num_key_value_heads
    H = D // N
    norm, dense = ((D,), _same, _same), ((F, D), _transpose, _transpose)
    layout = [("model.embed_tokens.weight", "token_embedding.embeddings", (V, D), _same, _same)]
    for i in range(num_layers):
        hf, keras = f"model.layers.{i}.", f"transformer_layers.{i}."
        layout += [
            (hf + "input_layernorm.weight", keras + "pre_attention_norm.scale", *norm),
            (hf + "self_attn.q_proj.weight", keras + "attention.query.kernel", *_in_projection(N, H, D)),
            (hf + "self_attn.k_proj.weight", keras + "attention.key.kernel", *_in_projection(K, H, D)),
            (hf + "self_attn.v_proj.weight", keras + "attention.value.kernel", *_in_projection(K, H, D)),
            (hf + "self_attn.o_proj.weight", keras + "attention.attention_output.kernel", *_out_projection(N, H, D)),
            (hf + "post_attention_layernorm.weight", keras + "pre_feedforward_norm.scale", *norm),
            (hf + "mlp.gate_proj.weight", keras + "feedforward_gate.kernel", *dense),
            (hf + "mlp.up_proj.weight", keras + "feedforward_intermediate.kernel", *dense),
            (hf + "mlp.down_proj.weight", keras + "feedforward_output.kernel", (D, F), _transpose, _transpose),
        ]
    layout.append(("model.norm.weight", "final_norm.scale", *norm))
    if not tie_word_embeddings:
        layout.append(("lm_head.weight", "token_embedding.reverse_embeddings", (V, D), _transpose, _transpose))
    return layout  # fmt: skip


def hf_shapes(backbone_kwargs):
    """`{hf_name: shape}` a checkpoint for these `SmallCoderBackbone` kwargs must hold."""
    return {name: shape for name, _, shape, _, _ in _layout(**backbone_kwargs)}


def _attribute(obj, path):
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def weight_specs(backbone):
    """Every `WeightSpec` of `backbone`, in Hugging Face's tensor order."""
    return [
        WeightSpec(name, _attribute(backbone, path), shape, to_keras, to_hf)
        for name, path, shape, to_keras, to_hf in _layout(**backbone.get_config())
    ]


def unexpected_tensors(names, expected_names, tied):
    """Checkpoint tensors the model has no place for (a tied `lm_head.weight` is allowed)."""
    expected = set(expected_names)
    if tied:
        expected.add("lm_head.weight")
    return sorted(n for n in names if n not in expected and not n.endswith(IGNORED_SUFFIXES))
