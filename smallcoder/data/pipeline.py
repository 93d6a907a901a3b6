"""`build_pipeline`: a recipe's `data:` section -> an iterator of training batches.

sources (readers) -> documents (batched Rust tokenization) -> mixture (token
shares) -> packing (text windows or SFT rows) -> `(x, y, sample_weight)`.
"""

from __future__ import annotations

import copy

from smallcoder.data.config import (
    DEFAULT_SHUFFLE_BUFFER,
    resolve_sources,
    validate_data_config,
)
from smallcoder.data.documents import DocumentStream
from smallcoder.data.mixture import Mixture
from smallcoder.data.packing import TextPacker
from smallcoder.data.sft import ChatPacker
from smallcoder.data.sources import make_reader

STATE_VERSION = 2  # 2: shard-order positions (smallcoder.data.order)


class Pipeline:
    """An iterator of batches `(x, y, sample_weight)`, with exact save/restore.

    Each batch, all `(B, T)` numpy arrays:
    - `x["token_ids"]` int32: window[:-1] of each packed window of T + 1 tokens;
    - `x["padding_mask"]` int32: segment ids, 0 = padding, 1, 2, ... = the
      document (or SFT example) within the row; 1 on every real token when
      document masking is off;
    - `y` int32: window[1:], the next-token targets;
    - `sample_weight` float32: 1 where the loss counts (pretraining: real
      targets, not across a document boundary when masking is on; SFT: the
      assistant tokens and their EOS only).

    Training pipelines repeat their sources forever (epoch after epoch);
    validation pipelines make one pass and end with a padded batch.
    Build one with `build_pipeline`.
    """

    def __init__(self, data_config, tokenizer, *, sequence_length, batch_size, seed=0,
                 demo=False, split="train", shard_index=0, shard_count=1):
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} is not in [0, {shard_count}).")
        if sequence_length < 1 or batch_size < 1:
            raise ValueError(f"sequence_length ({sequence_length}) and batch_size ({batch_size}) must be >= 1.")
        self.format = data_config.get("format", "text")
        self.document_masking = data_config.get("document_masking", True)
        self.sequence_length, self.batch_size, self.seed = sequence_length, batch_size, seed
        self.split, self.demo = split, demo
        self.shuffle_buffer = data_config.get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)
        self.specs = resolve_sources(data_config, demo, split)
        self.names = [s["name"] for s in self.specs]
        self.streams = []
        for spec in self.specs:
            reader = make_reader(spec, split=split, seed=seed, shard_index=shard_index,
                                 shard_count=shard_count, repeat=split == "train",
                                 shuffle_buffer=self.shuffle_buffer)
            self.streams.append(DocumentStream(spec, reader, tokenizer, self.format))
        self.mixture = Mixture(self.streams, [s["weight"] for s in self.specs])
        pad_id = tokenizer.eos_token_id
        if self.format == "chat":
            self.packer = ChatPacker(batch_size, sequence_length, pad_id, self.document_masking,
                                     data_config.get("overlong", "truncate"), len(self.specs))
        else:
            self.packer = TextPacker(batch_size, sequence_length, pad_id, self.document_masking,
                                     len(self.specs))
        self.batches = 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.packer.next_batch(self.mixture)
        if batch is None:
            raise StopIteration
        self.batches += 1
        token_ids, segment_ids, targets, weights = batch
        return {"token_ids": token_ids, "padding_mask": segment_ids}, targets, weights

    def close(self):
        """Stop the background tokenization threads (also done when the pipeline is collected)."""
        for stream in self.streams:
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def token_counts(self):
        """`{source name: tokens it put into the batches so far}` (after packing)."""
        return dict(zip(self.names, self.packer.counts))

    def stats(self):
        """Counters: batches, tokens and per source records/documents/bad records by reason."""
        return {
            "batches": self.batches,
            "tokens": self.token_counts(),
            "overlong": getattr(self.packer, "overlong_count", 0),
            "overlong_policy": getattr(self.packer, "overlong", None),
            "sources": {s.name: copy.deepcopy(s.counters) for s in self.streams},
        }

    # === State ===
    def _signature(self):
        return {"names": self.names, "format": self.format, "split": self.split,
                "sequence_length": self.sequence_length, "batch_size": self.batch_size,
                "document_masking": self.document_masking, "seed": self.seed,
                "shuffle_buffer": self.shuffle_buffer}

    def state_dict(self):
        """A JSON-serialisable snapshot; `load_state_dict` on a fresh pipeline resumes exactly here."""
        return {
            "version": STATE_VERSION,
            "signature": self._signature(),
            "batches": self.batches,
            "sources": [s.state_dict() for s in self.streams],
            "mixture": self.mixture.state_dict(),
            "packer": self.packer.state_dict(),
        }

    def load_state_dict(self, state):
        """Restore a `state_dict()`; the next batch is the one that followed it."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"Data pipeline state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}: another smallcoder version wrote it.")
        ours = self._signature()
        for key, value in state["signature"].items():
            if ours.get(key) != value:
                raise ValueError(
                    f"Data pipeline state was saved with {key}={value!r} but this pipeline has "
                    f"{key}={ours.get(key)!r}; resume with the same recipe data section and batch shape."
                )
        for stream, s in zip(self.streams, state["sources"]):
            stream.load_state_dict(s)
        self.mixture.load_state_dict(state["mixture"])
        self.packer.load_state_dict(state["packer"], self.streams)
        self.batches = state["batches"]


def build_pipeline(data_config: dict, tokenizer, *, sequence_length: int, batch_size: int,
                   seed: int = 0, demo: bool = False, split: str = "train",
                   shard_index: int = 0, shard_count: int = 1) -> Pipeline:
    """Build the batch iterator for a recipe's `data:` section.

    Args:
        data_config: the `data:` mapping (schema in `smallcoder.data.config`).
        tokenizer: a `SmallCoderTokenizer` (e.g. `demo_tokenizer()` for --demo).
        sequence_length: T; windows hold T + 1 tokens.
        batch_size: B, rows per batch.
        seed: drives the shard order and shuffle buffer of every source
            (`smallcoder.data.order`) and the demo corpora's shuffles.
        demo: read `data.demo` (offline stdlib corpora) instead of `data.sources`.
        split: "train" (repeats forever) or "validation" (one pass; demo
            corpora hold out 5%, other sources use their `validation:` overrides).
        shard_index, shard_count: read only shard `shard_index` of
            `shard_count` of every source (one data stream of several).

    Returns:
        A `Pipeline` yielding `({"token_ids", "padding_mask"}, y, sample_weight)`.

    Example:
    >>> from smallcoder.demo_tokenizer import demo_tokenizer
    >>> p = build_pipeline({"format": "chat"}, demo_tokenizer(), sequence_length=256,
    ...                    batch_size=2, demo=True)  # doctest: +SKIP
    >>> x, y, w = next(p); x["token_ids"].shape  # doctest: +SKIP
    (2, 256)
    """
    validate_data_config(data_config, "build_pipeline")
    return Pipeline(data_config, tokenizer, sequence_length=sequence_length,
                    batch_size=batch_size, seed=seed, demo=demo, split=split,
                    shard_index=shard_index, shard_count=shard_count)
