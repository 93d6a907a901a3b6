"""Parameter counts of a backbone config, without building the model.

`parameter_count` is what `SmallCoderBackbone(**config).count_params()` gives
(302,027,520 for smallcoder_303m); `matmul_params` is the N of the PaLM FLOPs
formula (`training.flops`): the weights a token is multiplied by.
"""


def _shape(config):
    """(D, F, L, V, N, K, H) of a backbone config."""
    D, N = config["hidden_dim"], config["num_query_heads"]
    K = config.get("num_key_value_heads") or N
    F, L, V = config["intermediate_dim"], config["num_layers"], config["vocabulary_size"]
    return D, F, L, V, N, K, D // N


def _block_kernels(config):
    """Kernel weights of one decoder block: q, k, v and output (D x N*H, 2 x D x K*H,
    N*H x D), SwiGLU (3 x D x F)."""
    D, F, _, _, N, K, H = _shape(config)
    return D * N * H + 2 * D * K * H + N * H * D + 3 * D * F


def matmul_params(config):
    """Every non-embedding kernel plus the output projection (V x D).

    The input embedding is a lookup, not a matmul.
    """
    D, _, L, V, *_ = _shape(config)
    return L * _block_kernels(config) + V * D


def parameter_count(config):
    """All weights: kernels, the input embedding (and an untied output projection), and
    the 2L + 1 RMSNorm scales."""
    D, _, L, V, *_ = _shape(config)
    embeddings = V * D * (1 if config.get("tie_word_embeddings") else 2)
    return L * (_block_kernels(config) + 2 * D) + embeddings + D
