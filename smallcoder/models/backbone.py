"""The SmallCoder backbone: token embedding, LLaMA decoder blocks, final RMSNorm."""

import keras
from keras import ops
from keras_hub.models import Backbone

from smallcoder.models.decoder import SmallCoderDecoderBlock
from smallcoder.models.embedding import SmallCoderEmbedding
from smallcoder.models.implementation import resolve_implementation
from smallcoder.models.masks import SegmentMask

REMAT_MODES = (None, "full")


def check_remat(remat, name="remat"):
    """Raise a ValueError unless `remat` is one of `REMAT_MODES` and runs on this Keras backend.

    `name`: the setting named in the message (`"model.remat"` for a recipe).
    """
    if remat not in REMAT_MODES:
        raise ValueError(f'{name}: must be null/None or "full", got {remat!r}.')
    if remat and keras.config.backend() == "tensorflow":
        raise ValueError(
            f"{name}: {remat!r} is not supported on the TensorFlow backend (tf.recompute_grad "
            "differentiates every block input, including the boolean attention mask); "
            f"use KERAS_BACKEND=jax or torch, or set {name} to null/None."
        )


def _initializer(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="smallcoder")
class SmallCoderBackbone(Backbone):
    """A LLaMA decoder stack (pre-norm RMSNorm, RoPE, SwiGLU, grouped KV heads, no biases).

    Inputs are a dict of `token_ids` int (B, T) and `padding_mask` int (B, T).
    `padding_mask` carries segment ids: 0 is padding, 1, 2, … number the
    documents packed into a row; tokens attend causally within their own
    segment and RoPE positions restart at each segment start, so a packed
    document gets the logits it would get alone. A 0/1 mask is the usual
    padding mask. The output is the final normalised hidden states (B, T, D);
    `token_embedding(x, reverse=True)` turns them into logits (B, T, V).

    Args:
        vocabulary_size: int. V.
        num_layers: int. Decoder blocks.
        num_query_heads: int. N.
        hidden_dim: int. D; must be a multiple of N (head_dim = D / N).
        intermediate_dim: int. F, SwiGLU hidden size.
        num_key_value_heads: int. K (K = N is plain multi-head attention).
        rope_max_wavelength: float. RoPE base (`rope_theta`).
        layer_norm_epsilon: float. RMSNorm epsilon (`rms_norm_eps`).
        max_sequence_length: int. Context length; longer inputs are refused.
        tie_word_embeddings: bool. Share the input embedding with the output
            projection (False for SmallCoder-303M).
        initializer_range: float. Std of the normal initializer of all kernels.
        remat: None or `"full"`. `"full"` recomputes each decoder block's
            activations in the backward pass (`keras.RematScope`) instead of
            keeping them (JAX and torch backends). Weights and results are
            the same either way.
        implementation: `"auto"` (default), `"keras"`, `"blocks"` or
            `"cudnn"`: the kernels of the full-sequence forward, chosen once
            here (`smallcoder.models.implementation`; `$SMALLCODER_ATTENTION`
            overrides `"auto"`). `resolved_implementation` says which runs.
            Decoding (`call_with_cache`) is the same on all of them.
        dtype: dtype or `keras.DTypePolicy` (e.g. `"mixed_bfloat16"`).

    Example:
    ```python
    backbone = SmallCoderBackbone(
        vocabulary_size=1000, num_layers=2, num_query_heads=4, hidden_dim=64,
        intermediate_dim=128, num_key_value_heads=2,
    )
    hidden = backbone({"token_ids": np.ones((1, 8), "int32"),
                       "padding_mask": np.ones((1, 8), "int32")})  # (1, 8, 64)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_query_heads,
        hidden_dim,
        intermediate_dim,
        num_key_value_heads=None,
        rope_max_wavelength=10000.0,
        layer_norm_epsilon=1e-5,
        max_sequence_length=1024,
        tie_word_embeddings=False,
        initializer_range=0.02,
        remat=None,
        implementation="auto",
        dtype=None,
        **kwargs,
    ):
        check_remat(remat)
        policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
        resolved_implementation = resolve_implementation(implementation, policy.compute_dtype)
        num_key_value_heads = num_key_value_heads or num_query_heads
        if hidden_dim % num_query_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be a multiple of num_query_heads ({num_query_heads})."
            )
        head_dim = hidden_dim // num_query_heads

        # === Layers ===
        self.token_embedding = SmallCoderEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=tie_word_embeddings,
            embeddings_initializer=_initializer(initializer_range),
            implementation=resolved_implementation,
            dtype=dtype,
            name="token_embedding",
        )
        # Blocks made in a RematScope are checkpointed as a whole; the layers
        # inside them are built later, outside it.
        with keras.RematScope(mode=remat):  # mode None: no remat
            self.transformer_layers = [
                SmallCoderDecoderBlock(
                    num_query_heads=num_query_heads,
                    num_key_value_heads=num_key_value_heads,
                    head_dim=head_dim,
                    intermediate_dim=intermediate_dim,
                    rope_max_wavelength=rope_max_wavelength,
                    layer_norm_epsilon=layer_norm_epsilon,
                    kernel_initializer=_initializer(initializer_range),
                    implementation=resolved_implementation,
                    dtype=dtype,
                    name=f"transformer_layer_{i}",
                )
                for i in range(num_layers)
            ]
        self.final_norm = keras.layers.RMSNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        attention_mask, positions = SegmentMask(name="segment_mask")(padding_mask)  # (B, T, T), (B, T)
        x = self.token_embedding(token_ids)  # (B, T, D)
        for block in self.transformer_layers:
            x = block(x, positions, attention_mask)
        sequence_output = self.final_norm(x)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=sequence_output,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_query_heads = num_query_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.max_sequence_length = max_sequence_length
        self.tie_word_embeddings = tie_word_embeddings
        self.initializer_range = initializer_range
        self.remat = remat
        self.implementation = implementation
        self.resolved_implementation = resolved_implementation

    def call_with_cache(self, token_ids, cache, cache_update_index, start_index=None):
        """Forward T new tokens against a per-layer KV cache of the whole sequence.

        Rows may be left padded (prompts aligned at their end, as `generate`
        lays them out): row b's tokens start at cache position
        `start_index[b]`; positions before it are never attended to, and RoPE
        positions count from it.

        Args:
            token_ids: int (B, T), tokens at cache positions
                `cache_update_index … cache_update_index + T - 1`.
            cache: a tuple of L `(key, value)` pairs, key and value each
                (B*K, S, H) (see `empty_cache`).
            cache_update_index: int scalar.
            start_index: optional int (B,), each row's first real position
                (default 0: no left padding).

        Returns:
            `(hidden_states (B, T, D), cache)`; cache positions from
            `start_index` up to the new ones are treated as valid (the caller
            fills them before reading them).
        """
        # One (key, value) array pair per layer, updated in place: keras-hub's
        # single (B, L, 2, S, K, H) cache tensor made XLA copy it per layer and
        # step (docs/models.md).
        batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        cache_length = ops.shape(cache[0][0])[1]  # key (B*K, S, H)
        if start_index is None:
            start_index = ops.zeros((batch_size,), "int32")
        start_index = ops.expand_dims(ops.cast(start_index, "int32"), 1)  # (B, 1)
        query_index = ops.expand_dims(ops.arange(length, dtype="int32") + cache_update_index, 0)  # (1, T)
        key_index = ops.arange(cache_length, dtype="int32")[None, None, :]  # (1, 1, S)
        attention_mask = ops.logical_and(key_index <= query_index[:, :, None],
                                         key_index >= start_index[:, :, None])  # (B, T, S)
        positions = ops.maximum(query_index - start_index, 0)  # (B, T); left pads get 0

        x = self.token_embedding(token_ids)
        new_cache = []
        for block, layer_cache in zip(self.transformer_layers, cache):
            x, layer_cache = block.call_with_cache(x, positions, attention_mask, layer_cache, cache_update_index)
            new_cache.append(layer_cache)
        return self.final_norm(x), tuple(new_cache)

    def empty_cache(self, batch_size, cache_length, dtype=None):
        """A zero KV cache: a tuple of `num_layers` `(key, value)` pairs, key
        and value each (B*K, S, H) (the layout is explained in
        `SmallCoderAttention.call_with_cache`)."""
        shape = (batch_size * self.num_key_value_heads, cache_length, self.head_dim)
        dtype = dtype or self.compute_dtype
        return tuple((ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype)) for _ in range(self.num_layers))

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A backbone from a built-in preset name (fresh weights), a Keras preset folder or a
        Hugging Face folder: what `SmallCoderCausalLM.from_preset` takes (`dtype`, `remat` too)."""
        from smallcoder.models.presets import backbone_from_preset

        return backbone_from_preset(preset, load_weights=load_weights, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_query_heads": self.num_query_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "rope_max_wavelength": self.rope_max_wavelength,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "max_sequence_length": self.max_sequence_length,
                "tie_word_embeddings": self.tie_word_embeddings,
                "initializer_range": self.initializer_range,
                "remat": self.remat,
                "implementation": self.implementation,
            }
        )
        return config
