"""SmallCoder causal LM: logits for `fit`, KV-cache `generate` on strings or ids."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import CausalLM
from keras_hub.samplers import GreedySampler

from smallcoder import compat
from smallcoder.models.backbone import SmallCoderBackbone
from smallcoder.models.embedding import SmallCoderEmbedding
from smallcoder.models.native_decoding import PackedWeights
from smallcoder.models.quantization import QUANTIZE_CHOICES

# Generation pads the total length up to a multiple of this, so prompts of
# nearby lengths reuse one compiled XLA program instead of recompiling.
_LENGTH_BUCKET = 64
# The prefill (the prompt block) is bucketed finer: its cost grows with its
# padded length.
_PREFILL_BUCKET = 16
# Overrides the default choice of decoding kernels (`SmallCoderCausalLM.decoding`).
DECODING_ENV = "SMALLCODER_DECODING"


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
        self._packed_weights = PackedWeights()  # the native decoding kernels' weights, between generate calls

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

        `"int8"` (Keras' default config) quantizes every projection (int8
        kernels, per-output-channel scales) and the output projection of the
        embedding, and quantizes activations to int8 per token on the fly.
        For generation, `quantize_for_generation` keeps activations float
        (weight-only int8), which the native decoding kernels run.
        """
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Layer .* does not have a `quantize` method")
            super().quantize(mode, config=config, filters=filters, **kwargs)

    def quantize_for_generation(self, choice):
        """Apply a `--quantize` choice (`smallcoder.models.quantization.QUANTIZE_CHOICES`).

        `"int8"`: weight-only int8 (int8 kernels with per-output-channel
        scales, float32 activations) for every projection and the output
        projection; `"int8-blocks"`: the decoder blocks only, the embedding and
        its output projection stay float32, so the logits' last product is
        exact. Accuracy against float32 is measured by `bench generate
        --quantize` (docs/bench.md).
        """
        if choice not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {choice!r}.")
        config = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)
        filters = None
        if choice == "int8-blocks":
            filters = lambda layer: not isinstance(layer, SmallCoderEmbedding)  # noqa: E731
        self.quantize("int8", config=config, filters=filters)
        self.generate_function = None

    # === Generation ===
    @property
    def decoding(self):
        """`"native"` or `"xla"`: what runs the one-token steps of `generate`.

        `"native"` (the default where `decode_kernels.available()` and the
        layers are float32 or weight-only int8) runs the projections and
        attention as XLA:CPU custom calls (`smallcoder.models.native_decoding`);
        `"xla"` runs `call_with_cache`, on every backend. `$SMALLCODER_DECODING`
        (`native`, `xla`) or `use_decoding` choose; asking for `"native"` where
        it cannot run is an error.
        """
        return self._resolve_decoding(getattr(self, "_decoding_choice", None))[0]

    @property
    def decoding_note(self):
        """`decoding` and why, in one line (the CLI prints it: a fallback to XLA is not an error)."""
        decoding, why = self._resolve_decoding(getattr(self, "_decoding_choice", None))
        return f"decoding: {decoding} ({why})"

    def use_decoding(self, choice):
        """Decode with `"native"`, `"xla"` or `"auto"` from now on (recompiles `generate`)."""
        self._resolve_decoding(choice)  # raises if it cannot run
        self._decoding_choice = choice
        self.generate_function = None

    def _resolve_decoding(self, choice):
        """`(decoding, why)` for a choice (None: `$SMALLCODER_DECODING` or "auto")."""
        import os

        from smallcoder.models import decode_kernels, native_decoding

        where = "decoding"
        if choice in (None, "auto") and os.environ.get(DECODING_ENV, "auto") != "auto":
            choice, where = os.environ[DECODING_ENV], f"${DECODING_ENV}"
        choice = choice or "auto"
        if choice not in ("auto", "native", "xla"):
            raise ValueError(f"{where}={choice!r}: expected one of auto, native, xla.")
        if choice == "xla":
            return "xla", f"chosen by {where}"
        why = decode_kernels.unavailable_reason()
        if why is None and not native_decoding.supports(self.backbone):
            why = "the native kernels run float32 or weight-only int8 layers with float32 compute only"
        if why is not None and choice == "native":
            raise ValueError(f"{where}='native' cannot run here: {why}. Use 'xla' or 'auto'.")
        if why is None:
            return "native", "XLA:CPU custom calls, smallcoder._decode_kernels"
        return "xla", f"native kernels unavailable: {why}"

    def call_with_cache(self, token_ids, cache, cache_update_index, start_index=None):
        """Logits (B, T, V), hidden states (B, T, D) and the updated cache (see `SmallCoderBackbone`)."""
        hidden_states, cache = self.backbone.call_with_cache(token_ids, cache, cache_update_index, start_index)
        logits = self.backbone.token_embedding(hidden_states, reverse=True)
        return logits, hidden_states, cache

    def _prefill(self, prompt_ids, start_index, cache_length):
        """Run the left-padded prompt block (B, P) into a zero cache of `cache_length` positions.

        Returns the logits of each row's last prompt token (B, V), which
        predict its first new token, and the cache: a tuple of per-layer
        `(key, value)` pairs, each (B*K, S, H) (`SmallCoderBackbone.empty_cache`).
        """
        batch_size, prompt_length = ops.shape(prompt_ids)
        # The block attends over a cache of its own P positions, not the whole
        # cache (at the eval's shape, 304 prompt columns of 816, that was 2.7x
        # the attention work); the room for new tokens is padded on after.
        # Shapes known only when run (TensorFlow graphs) take the whole cache.
        static = isinstance(prompt_length, int) and isinstance(cache_length, int)
        cache = self.backbone.empty_cache(batch_size, prompt_length if static else cache_length, self.compute_dtype)
        hidden_states, cache = self.backbone.call_with_cache(prompt_ids, cache, 0, start_index)
        if static and cache_length > prompt_length:
            room = [[0, 0], [0, cache_length - prompt_length], [0, 0]]
            cache = tuple((ops.pad(key, room), ops.pad(value, room)) for key, value in cache)
        logits = self.backbone.token_embedding(hidden_states[:, -1:], reverse=True)  # only the last position
        return logits[:, 0], cache

    def _next_token(self, logits):
        """The sampler's choice (`compile(sampler=...)`) from logits (B, V): int32 (B,).

        Greedy takes the argmax of the logits directly (the sampler's softmax
        first would only cost three passes over (B, V) per step).
        """
        if type(self.sampler) is GreedySampler:
            return ops.cast(ops.argmax(logits, axis=-1), "int32")
        probabilities = self.sampler.compute_probabilities(logits)
        return ops.cast(self.sampler.get_next_token(probabilities), "int32")

    def generate_step(self, inputs, stop_token_ids=None):
        """Compilable generation for one left-padded batch.

        Prompts end at one column P: the prefill runs the (B, P) prompt
        block at once, and every row's first new token comes from its
        logits; then one token per step for all rows. A step runs the
        native kernels or `call_with_cache` (`decoding`).

        Args:
            inputs: dict of `token_ids` int (B, S) (prompts in columns 0..P-1,
                left padded, then room for new tokens), `padding_mask` bool
                (B, S) (True on columns 0..P-1), `prompt_ids` int (B, P) (the
                first P columns), `start_index` int (B,) (each row's first
                prompt column) and `end_index` int scalar (the column after
                the last needed token, at most S).
            stop_token_ids: tuple of ids that end a row.

        Returns:
            dict of `token_ids` (B, S) and `padding_mask` (B, S), True up to
            and including each row's stop token.
        """
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        prompt_ids, start_index = inputs["prompt_ids"], ops.cast(inputs["start_index"], "int32")
        batch_size, total = ops.shape(token_ids)
        prompt_length = ops.shape(prompt_ids)[1]
        logits, cache = self._prefill(prompt_ids, start_index, total)
        first = self._next_token(logits)  # (B,)
        token_ids = ops.slice_update(token_ids, [0, prompt_length], ops.cast(first[:, None], token_ids.dtype))
        if total > prompt_length + 1:
            token_ids = self._decode(token_ids, cache, first, start_index, prompt_length,
                                     inputs["end_index"], stop_token_ids, inputs.get("decode_weights"))
        if stop_token_ids is None:
            return {"token_ids": token_ids, "padding_mask": ops.ones_like(token_ids, dtype="bool")}
        generated = ops.logical_not(padding_mask)
        ends = ops.cast(ops.logical_and(_is_any(token_ids, stop_token_ids), generated), "int32")
        after_end = ops.cumsum(ends, axis=-1) - ends
        return {"token_ids": token_ids, "padding_mask": ops.equal(after_end, 0)}

    def _decode(self, token_ids, cache, first, start_index, prompt_length, end_index, stop_token_ids,
                decode_weights=None):
        """The decoding loop: tokens at columns P+1 .. end_index-1, until every row has stopped.

        `decode_weights`: the native kernels' packed weights as `generate`
        passes them (`PackedWeights.arrays`), or None to pack them here.
        """
        if self.decoding == "native":
            from smallcoder.models import native_decoding

            if decode_weights is None:
                weights = native_decoding.decode_weights(self.backbone)  # packed once, outside the loop
            else:
                weights = self._packed_weights.rebuild(decode_weights)

            def step(tokens, cache, index):
                return native_decoding.decode_step(self.backbone, weights, tokens, cache, index, start_index)
        else:

            def step(tokens, cache, index):
                logits, _, cache = self.call_with_cache(tokens[:, None], cache, index, start_index)
                return logits[:, 0], cache

        def stopped(tokens):
            if stop_token_ids is None:
                return ops.zeros_like(tokens, dtype="bool")
            return _is_any(tokens, stop_token_ids)

        def cond(token_ids, cache, index, done):
            return ops.logical_and(ops.less(index, end_index), ops.logical_not(ops.all(done)))

        def body(token_ids, cache, index, done):
            # Feed the token at index - 1; its logits predict token `index`.
            tokens = ops.squeeze(ops.slice(token_ids, [0, index - 1], [ops.shape(token_ids)[0], 1]), 1)
            logits, cache = step(tokens, cache, index - 1)
            tokens = self._next_token(logits)
            token_ids = ops.slice_update(token_ids, [0, index], ops.cast(tokens[:, None], token_ids.dtype))
            return token_ids, cache, index + 1, ops.logical_or(done, stopped(tokens))

        total = ops.shape(token_ids)[1]
        loop_vars = (token_ids, cache, ops.convert_to_tensor(prompt_length + 1, "int32"), stopped(first))
        token_ids, *_ = compat.sampler_run_loop(self.sampler, cond, body, model=self, loop_vars=loop_vars,
                                                maximum_iterations=total - prompt_length - 1)
        return token_ids

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

        inputs = _padded_batch(prompts, max_new_tokens, pad_id=_pad_id(stop_token_ids))
        if self.decoding == "native" and max_new_tokens > 1:  # packed once for every call with these weights
            inputs["decode_weights"] = self._packed_weights.arrays(self.backbone)
        outputs = self.make_generate_function()(inputs, stop_token_ids=stop_token_ids)
        out_ids = ops.convert_to_numpy(outputs["token_ids"])
        out_mask = ops.convert_to_numpy(outputs["padding_mask"])

        results = []
        end = inputs["prompt_ids"].shape[1]  # every prompt ends here
        for row, prompt in enumerate(prompts):
            span = slice(end, end + max_new_tokens)
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


def _padded_batch(prompts, max_new_tokens, pad_id):
    """`generate_step`'s inputs for prompts (lists of ids): left padded, lengths bucketed.

    Every prompt ends at column P, the longest prompt's length rounded up to
    a multiple of `_PREFILL_BUCKET`; the buffer holds P + `max_new_tokens`
    columns rounded up to a multiple of `_LENGTH_BUCKET`, so that nearby
    lengths share one compiled program (one new token: exactly P + 1, which
    compiles no decoding loop). `end_index` stops decoding after
    `max_new_tokens`.
    """
    longest = max(len(p) for p in prompts)
    prompt_length = -(-longest // _PREFILL_BUCKET) * _PREFILL_BUCKET
    total = prompt_length + max_new_tokens
    if max_new_tokens > 1:
        total = -(-total // _LENGTH_BUCKET) * _LENGTH_BUCKET
    token_ids = np.full((len(prompts), total), pad_id, dtype="int32")
    start_index = np.asarray([prompt_length - len(p) for p in prompts], dtype="int32")
    for row, prompt in enumerate(prompts):
        token_ids[row, start_index[row] : prompt_length] = prompt
    prompt_mask = np.zeros((len(prompts), total), dtype="bool")
    prompt_mask[:, :prompt_length] = True
    return {
        "token_ids": token_ids,
        "padding_mask": prompt_mask,
        "prompt_ids": token_ids[:, :prompt_length],
        "start_index": start_index,
        "end_index": np.asarray(prompt_length + max_new_tokens, dtype="int32"),
    }
