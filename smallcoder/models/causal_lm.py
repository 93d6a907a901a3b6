"""SmallCoder causal LM: logits for `fit`, KV-cache `generate` on strings or ids."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import CausalLM

from smallcoder import compat
from smallcoder.models.backbone import SmallCoderBackbone
from smallcoder.models.embedding import SmallCoderEmbedding
from smallcoder.models.implementation import uses_jax_kernels
from smallcoder.models.quantization import QUANTIZE_CHOICES

# Generation pads the total length up to a multiple of this, so prompts of
# nearby lengths reuse one compiled XLA program instead of recompiling.
_LENGTH_BUCKET = 64
# The prefill (the prompt block) is bucketed finer: its cost grows with its
# padded length.
_PREFILL_BUCKET = 16


@keras.saving.register_keras_serializable(package="smallcoder")
class SmallCoderCausalLM(CausalLM):
    """Next-token prediction head on a `SmallCoderBackbone`, with `generate()`.

    Called on `{"token_ids", "padding_mask"}` (both int (B, T); `padding_mask`
    holds segment ids, see `SmallCoderBackbone`) it returns logits (B, T, V).
    `fit` takes `(x, y, sample_weight)` batches: next-token targets `y` int
    (B, T) and a loss mask float (B, T). Tokenization happens in Python with
    the Rust `tokenizers` library (`self.tokenizer`), outside the graph.

    Args:
        backbone: a `SmallCoderBackbone`.
        tokenizer: a `smallcoder.SmallCoderTokenizer`, or None (then
            `generate` takes token ids only).

    Example:
    ```python
    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.compile(sampler="greedy")
    lm.generate(["def add(a, b):", "# sort a list"], max_new_tokens=16)
    ```
    """

    backbone_cls = SmallCoderBackbone
    preprocessor_cls = None

    def __init__(self, backbone, tokenizer=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = None
        self.tokenizer = tokenizer

        # === Functional Model ===
        inputs = backbone.input
        hidden_states = backbone(inputs)
        logits = backbone.token_embedding(hidden_states, reverse=True)  # (B, T, V)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

    def compile(
        self, optimizer="auto", loss="auto", *, weighted_metrics="auto", sampler="greedy", **kwargs
    ):
        """`CausalLM.compile` with AdamW and greedy decoding as defaults.

        For the recipes' loss, per-step loss log and in-step microbatches use
        `smallcoder.training.metrics.compile_for_training`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(3e-4, weight_decay=0.1)
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, sampler=sampler, **kwargs)

    # keras-hub's PipelineModel re-wraps every input of fit/evaluate/predict in
    # tf.data or grain for an in-graph preprocessor. SmallCoder tokenizes in
    # Python, so arrays, generators and PyDatasets go straight to Keras.
    def fit(self, *args, **kwargs):
        return keras.Model.fit(self, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        return keras.Model.evaluate(self, *args, **kwargs)

    def predict(self, *args, **kwargs):
        return keras.Model.predict(self, *args, **kwargs)

    # === Presets ===
    @classmethod
    def from_preset(cls, preset, load_weights=True, dtype=None, **kwargs):
        """Build from a built-in preset name or a saved preset folder.

        Built-in names (`smallcoder_test`, `smallcoder_tiny`, `smallcoder_303m`)
        give the architecture with fresh random weights and, for the small
        ones, the demo tokenizer. A folder is one written by `save_to_preset`.
        """
        from smallcoder.models.presets import load_causal_lm

        return load_causal_lm(preset, load_weights=load_weights, dtype=dtype, **kwargs)

    def save_to_preset(self, preset_dir):
        """Write config, weights and tokenizer to `preset_dir`, atomically."""
        from smallcoder.models.presets import save_causal_lm

        save_causal_lm(self, preset_dir)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """`keras.Model.quantize` without a warning per layer that has nothing to quantize.

        `"int8"` quantizes every projection (int8 kernels, per-output-channel
        scales) and the output projection of the embedding; activations are
        quantized to int8 per token on the fly (Keras' scheme). Norms and
        RoPE stay float. `quantize_blocks` leaves the embedding float too.
        """
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Layer .* does not have a `quantize` method")
            super().quantize(mode, config=config, filters=filters, **kwargs)

    def quantize_blocks(self, mode="int8"):
        """`quantize(mode)` for the decoder blocks only: the embedding and its
        output projection stay float, so the logits' last matmul is exact
        (greedy agreement with float32 measured in docs/bench.md)."""
        self.quantize(mode, filters=lambda layer: not isinstance(layer, SmallCoderEmbedding))

    def quantize_for_generation(self, choice):
        """Apply a `--quantize` choice: `"int8"` (`quantize`) or `"int8-blocks"` (`quantize_blocks`)."""
        if choice not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {choice!r}.")
        if choice == "int8-blocks":
            self.quantize_blocks("int8")
        else:
            self.quantize(choice)

    # === Generation ===
    def call_with_cache(self, token_ids, cache, cache_update_index, decode_kernels=None):
        """Logits (B, T, V), hidden states (B, T, D) and the updated cache (see `SmallCoderBackbone`)."""
        hidden_states, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index, decode_kernels)
        logits = self.backbone.token_embedding(hidden_states, reverse=True)
        return logits, hidden_states, cache

    def _build_cache(self, prompt_ids, cache_length):
        """Prefill: run the prompt block (B, P) into a zero cache of `cache_length` positions.

        The cache is a tuple of per-layer `(key, value)` pairs, each (B*K, S, H)
        (`SmallCoderBackbone.empty_cache`); keras-hub samplers carry it through
        their loop as an opaque structure.
        """
        cache = self.backbone.empty_cache(ops.shape(prompt_ids)[0], cache_length, self.compute_dtype)
        _, hidden_states, cache = self.call_with_cache(prompt_ids, cache, 0)
        return hidden_states, cache

    def generate_step(self, inputs, stop_token_ids=None):
        """Compilable generation for one right-padded batch.

        Args:
            inputs: dict of `token_ids` int (B, S) (prompts, right padded to
                the total length S) and `padding_mask` bool (B, S) (True on
                prompt tokens). Optional: `prompt_ids` int (B, P), the first
                P <= S columns of `token_ids` (at least the longest prompt),
                so the prefill runs over P positions instead of S; and
                `end_index` int scalar, the position after which no token is
                needed, so decoding stops there instead of at S.
            stop_token_ids: tuple of ids that end a row.

        Returns:
            dict of `token_ids` (B, S) and `padding_mask` (B, S), True up to
            and including each row's stop token.
        """
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        prompt_ids = inputs.get("prompt_ids", token_ids)
        hidden_states, cache = self._build_cache(prompt_ids, ops.shape(token_ids)[1])
        index = ops.min(ops.sum(ops.cast(padding_mask, "int32"), axis=-1))
        # Made here, outside the sampler's loop; one-row decoding only (at 16
        # rows the (16, F) x (F, D) product is faster on the kernel as it is).
        decode_kernels = self.backbone.decode_kernels() if token_ids.shape[0] == 1 else None

        def next(prompt, cache, index):
            # Feed the token at index - 1; its logits predict token `index`.
            batch_size = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, index - 1], [batch_size, 1])
            logits, hidden_states, cache = self.call_with_cache(prompt, cache, index - 1, decode_kernels)
            return ops.squeeze(logits, axis=1), ops.squeeze(hidden_states, axis=1), cache

        sampler = self.sampler
        if inputs.get("end_index") is not None:
            sampler = compat.sampler_stopping_at(sampler, inputs["end_index"])
        token_ids = sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is None:
            return {"token_ids": token_ids, "padding_mask": ops.ones_like(token_ids, dtype="bool")}
        generated = ops.logical_not(padding_mask)
        ends = ops.cast(ops.logical_and(_is_any(token_ids, stop_token_ids), generated), "int32")
        after_end = ops.cumsum(ends, axis=-1) - ends
        return {"token_ids": token_ids, "padding_mask": ops.equal(after_end, 0)}

    def generate(
        self,
        inputs,
        max_new_tokens=128,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=False,
        truncate_prompt=False,
    ):
        """Generate continuations with the compiled sampler (see `compile`).

        Args:
            inputs: a string, a list of strings, or a list of token-id lists
                (prompts may differ in length; they are batched together).
            max_new_tokens: int. Tokens to generate per prompt at most.
            max_length: optional int. Total length (prompt + new tokens) of the
                longest row instead of `max_new_tokens`.
            stop_token_ids: `"auto"` (the tokenizer's EOS), None, or a tuple.
            strip_prompt: return only the continuation.
            truncate_prompt: if a prompt and its new tokens do not fit the
                context, drop the prompt's oldest tokens (left truncation)
                instead of raising.

        Returns:
            Strings for string inputs (the stop token is not included),
            otherwise lists of token ids; a single string for a single string.
        """
        single = isinstance(inputs, str)
        prompts = [inputs] if single else list(inputs)
        if not prompts:
            return []
        as_text = isinstance(prompts[0], str)
        prompts = self._prompt_ids(prompts, as_text)
        stop_token_ids = self._stop_token_ids(stop_token_ids)
        prompts, max_new_tokens = self._fit_context(
            prompts, max_new_tokens, max_length, truncate_prompt
        )

        num_prompts = len(prompts)
        rows = prompts + [prompts[0]] * self.extra_decode_rows(num_prompts)
        inputs = _padded_batch(rows, max_new_tokens, self.backbone.max_sequence_length,
                               pad_id=_pad_id(stop_token_ids))
        outputs = self.make_generate_function()(inputs, stop_token_ids=stop_token_ids)
        out_ids = ops.convert_to_numpy(outputs["token_ids"])
        out_mask = ops.convert_to_numpy(outputs["padding_mask"])

        results = []
        for row, prompt in enumerate(prompts):
            span = slice(len(prompt), len(prompt) + max_new_tokens)
            new = [int(t) for t in out_ids[row, span][out_mask[row, span]]
                   if stop_token_ids is None or int(t) not in stop_token_ids]
            ids = new if strip_prompt else prompt + new
            results.append(self.tokenizer.decode(ids) if as_text else ids)
        return results[0] if single else results

    def _prompt_ids(self, prompts, as_text):
        """Prompts (strings, or sequences of ids) as lists of int ids; none empty."""
        if as_text:
            if self.tokenizer is None:
                raise ValueError("This model has no tokenizer: pass token ids, or build it with one.")
            prompts = self.tokenizer.encode_batch(prompts)
        prompts = [[int(t) for t in np.asarray(p).reshape(-1)] for p in prompts]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("Every prompt needs at least one token.")
        return prompts

    def _stop_token_ids(self, stop_token_ids):
        """`"auto"` (the tokenizer's EOS), None or ids, as a tuple of ints or None."""
        if stop_token_ids == "auto":
            if self.tokenizer is None:
                raise ValueError('stop_token_ids="auto" needs a tokenizer; pass a tuple or None.')
            return (self.tokenizer.eos_token_id,)
        return None if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)

    def _fit_context(self, prompts, max_new_tokens, max_length, truncate_prompt):
        """`(prompts, max_new_tokens)` that fit the context; prompts cut on the left if asked."""
        context = self.backbone.max_sequence_length
        longest = max(len(p) for p in prompts)
        if max_length is not None:
            max_new_tokens = max_length - longest
        if max_new_tokens < 1:
            raise ValueError(f"Nothing to generate: max_new_tokens={max_new_tokens}.")
        if max_new_tokens >= context:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the {context}-token context."
            )
        if longest + max_new_tokens > context:
            if not truncate_prompt:
                raise ValueError(
                    f"Prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the "
                    f"{context}-token context. Shorten the prompt, lower max_new_tokens, "
                    "or pass truncate_prompt=True to keep only the prompt's last tokens."
                )
            keep = context - max_new_tokens
            prompts = [p[-keep:] for p in prompts]
        return prompts, max_new_tokens

    def extra_decode_rows(self, batch_size):
        """Copies of the first row to decode alongside a batch of `batch_size`, then drop.

        With the JAX kernels, a single int8-quantized prompt is decoded as a
        batch of 2: XLA:CPU's one-row int8 x int8 matmul takes a slow path
        (docs/models.md). Float one-row decoding is fastest as is.
        """
        if batch_size != 1 or not uses_jax_kernels(self.backbone.resolved_implementation):
            return 0
        layers = [self.backbone.token_embedding]
        for block in self.backbone.transformer_layers:
            layers += block.projections()
        int8 = any(getattr(layer, "quantization_mode", None) == "int8" for layer in layers)
        return 1 if int8 else 0

    def get_config(self):
        # The tokenizer is saved as tokenizer.json next to the weights by
        # `save_to_preset`, not in the Keras config.
        config = super().get_config()
        config.pop("preprocessor", None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config.pop("preprocessor", None)
        return cls(**config)


def _is_any(token_ids, ids):
    """bool, shaped like `token_ids`: True where the token is one of `ids`."""
    found = ops.equal(token_ids, ids[0])
    for token in ids[1:]:
        found = ops.logical_or(found, ops.equal(token_ids, token))
    return found


def _pad_id(stop_token_ids):
    """An id to pad with that does not look like a generated stop token to the sampler."""
    pad_id = 0
    while stop_token_ids and pad_id in stop_token_ids:
        pad_id += 1
    return pad_id


def _padded_batch(prompts, max_new_tokens, context, pad_id):
    """`generate_step`'s inputs for prompts (lists of ids): right padded, lengths bucketed.

    The total length is rounded up to a multiple of `_LENGTH_BUCKET` (capped
    at `context`) and the prefill to one of `_PREFILL_BUCKET`, so that nearby
    lengths share one compiled program; `end_index` stops decoding where the
    longest prompt has its `max_new_tokens`.
    """
    longest = max(len(p) for p in prompts)
    total = min(context, -(-(longest + max_new_tokens) // _LENGTH_BUCKET) * _LENGTH_BUCKET)
    token_ids = np.full((len(prompts), total), pad_id, dtype="int32")
    prompt_mask = np.zeros((len(prompts), total), dtype="bool")
    for row, prompt in enumerate(prompts):
        token_ids[row, : len(prompt)] = prompt
        prompt_mask[row, : len(prompt)] = True
    prefill = min(total, -(-longest // _PREFILL_BUCKET) * _PREFILL_BUCKET)
    return {
        "token_ids": token_ids,
        "padding_mask": prompt_mask,
        "prompt_ids": token_ids[:, :prefill],
        "end_index": np.asarray(longest + max_new_tokens, dtype="int32"),
    }
