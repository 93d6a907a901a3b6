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


def weight_specs(backbone):
    """Every `WeightSpec` of `backbone`, in Hugging Face's tensor order."""
    D, V, F = backbone.hidden_dim, backbone.vocabulary_size, backbone.intermediate_dim
    N, K, H = backbone.num_query_heads, backbone.num_key_value_heads, backbone.head_dim
    embedding = backbone.token_embedding
    specs = [WeightSpec("model.embed_tokens.weight", embedding.embeddings, (V, D), _same, _same)]
    for i, block in enumerate(backbone.transformer_layers):
        attention, prefix = block.attention, f"model.layers.{i}."
        specs += [
            WeightSpec(prefix + "input_layernorm.weight", block.pre_attention_norm.scale, (D,), _same, _same),
            WeightSpec(prefix + "self_attn.q_proj.weight", attention.query.kernel, *_in_projection(N, H, D)),
            WeightSpec(prefix + "self_attn.k_proj.weight", attention.key.kernel, *_in_projection(K, H, D)),
            WeightSpec(prefix + "self_attn.v_proj.weight", attention.value.kernel, *_in_projection(K, H, D)),
            WeightSpec(
                prefix + "self_attn.o_proj.weight", attention.attention_output.kernel, *_out_projection(N, H, D)
            ),
            WeightSpec(
                prefix + "post_attention_layernorm.weight", block.pre_feedforward_norm.scale, (D,), _same, _same
            ),
            WeightSpec(prefix + "mlp.gate_proj.weight", block.feedforward_gate.kernel, (F, D), _transpose, _transpose),
            WeightSpec(
                prefix + "mlp.up_proj.weight", block.feedforward_intermediate.kernel, (F, D), _transpose, _transpose
            ),
            WeightSpec(prefix + "mlp.down_proj.weight", block.feedforward_output.kernel, (D, F), _transpose, _transpose),
        ]
    specs.append(WeightSpec("model.norm.weight", backbone.final_norm.scale, (D,), _same, _same))
    if not backbone.tie_word_embeddings:
        specs.append(WeightSpec("lm_head.weight", embedding.reverse_embeddings, (V, D), _transpose, _transpose))
    return specs


def unexpected_tensors(names, specs, tied):
    """Checkpoint tensors no spec consumes (a tied `lm_head.weight` is allowed)."""
    expected = {spec.hf_name for spec in specs}
    if tied:
        expected.add("lm_head.weight")
    return sorted(n for n in names if n not in expected and not n.endswith(IGNORED_SUFFIXES))
