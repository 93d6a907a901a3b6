"""Records -> tokenized documents, a chunk at a time (one Rust `encode_batch` per chunk).

A text document is an int32 array `(n + 1,)`: its tokens then EOS. A chat
document is `(ids, mask)`, int32 and uint8 arrays `(n,)` laid out by the one
chat function (`smallcoder.tokenizer.format_chat`); `mask` is 1 on assistant
tokens and their EOS. Bad records are skipped and counted by reason:
`missing_field`, `empty`, `undecodable`, `invalid_json`, `not_text`,
`invalid_chat`, `no_response`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from smallcoder.data.sources import END, BadRecord, Several, SourceError
from smallcoder.tokenizer import EOS_TOKEN, format_chat

CHUNK_DOCUMENTS = 512  # documents per encode_batch call ...
CHUNK_CHARS = 1 << 21  # ... or this many characters, whichever comes first
MAX_RECORDS_PER_DOCUMENT = 8  # ... or 8x CHUNK_DOCUMENTS records (mostly bad ones)
MAX_BAD_START = 4096  # a source whose first 4096 records are all bad is misconfigured


def _as_text(value):
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return BadRecord("undecodable")
    if not isinstance(value, str):
        return BadRecord("not_text")
    return value if value.strip() else BadRecord("empty")


def extract_text(record, field):
    """The document text of a record (str/bytes, or `record[field]`), else a `BadRecord`."""
    if isinstance(record, BadRecord):
        return record
    if isinstance(record, (str, bytes)):
        return _as_text(record)
    if field not in record or record[field] is None:
        return BadRecord("missing_field")
    return _as_text(record[field])


def extract_chat(record, spec):
    """The `[{role, content}, ...]` conversation of a record, else a `BadRecord`."""
    if isinstance(record, BadRecord):
        return record
    if not isinstance(record, dict):
        return BadRecord("not_text")
    if "prompt" in spec:
        texts = []
        for key in (spec["prompt"], spec["response"]):
            if record.get(key) is None:
                return BadRecord("missing_field")
            text = _as_text(record[key])
            if isinstance(text, BadRecord):
                return text
            texts.append(text)
        messages = [{"role": "user", "content": texts[0]}, {"role": "assistant", "content": texts[1]}]
    else:
        raw = record.get(spec.get("messages", "messages"))
        if raw is None:
            return BadRecord("missing_field")
        try:
            messages = [{"role": m["role"], "content": m["content"]} for m in raw]
        except (TypeError, KeyError):
            return BadRecord("invalid_chat")
    try:
        format_chat(messages)
    except (ValueError, AttributeError, TypeError):
        return BadRecord("invalid_chat")
    if not any(m["role"] == "assistant" for m in messages):
        return BadRecord("no_response")
    return messages


def encode_ids(tokenizer, texts):
    """`list[str]` -> `list[list[int]]` in one parallel Rust call, no special tokens.

    Uses `encode_batch_fast` (same ids as `encode_batch`, without computing
    character offsets, which packing never needs) where `tokenizers` has it.
    """
    fast = getattr(tokenizer.backend, "encode_batch_fast", None)
    if fast is None:
        return tokenizer.encode_batch(texts)
    return [e.ids for e in fast(list(texts), add_special_tokens=False)]


def encode_texts(tokenizer, texts):
    """`list[str]` -> list of int32 arrays, each the tokens then EOS (one batched call)."""
    eos = tokenizer.eos_token_id
    return [np.array(ids + [eos], dtype=np.int32) for ids in encode_ids(tokenizer, texts)]


def encode_chats(tokenizer, conversations):
    """Conversations -> `[(ids, mask)]`, identical to `tokenizer.encode_chat` but batched.

    Every non-EOS segment of every conversation goes through one
    `encode_batch`; segments are tokenized separately, as `encode_chat` does.
    """
    layouts = [format_chat(messages) for messages in conversations]
    texts = [text for segments in layouts for text, _ in segments if text != EOS_TOKEN]
    encoded = iter(encode_ids(tokenizer, texts))
    eos = tokenizer.eos_token_id
    out = []
    for segments in layouts:
        ids, mask = [], []
        for text, is_target in segments:
            piece = [eos] if text == EOS_TOKEN else next(encoded)
            ids.extend(piece)
            mask.extend([int(is_target)] * len(piece))
        out.append((np.array(ids, dtype=np.int32), np.array(mask, dtype=np.uint8)))
    return out


class Chunk:
    """Documents read and tokenized together, with what reading them counted."""

    def __init__(self, start, epoch):
        self.start, self.documents, self.exhausted = start, [], False
        self.records, self.bad = 0, {}
        self.start_epoch = self.end_epoch = epoch


class DocumentStream:
    """The tokenized documents of one source, in order, with an exact position.

    Args:
        spec: the resolved source spec (`name`, `field`/`messages`/...).
        reader: its record reader (`smallcoder.data.sources`).
        tokenizer: a `SmallCoderTokenizer`.
        data_format: "text" or "chat".
        prefetch: read and tokenize the next chunk in a background thread
            while this one is consumed (the Rust tokenizer releases the GIL).

    The position is `(chunk_start, index)`: the reader position where the
    current chunk began and how many of its documents were handed out.
    Restoring re-reads and re-tokenizes that one chunk. A prefetched chunk is
    not part of the position (nor of the counters) until it becomes current.
    """

    def __init__(self, spec, reader, tokenizer, data_format, chunk_chars=CHUNK_CHARS, prefetch=True):
        self.spec, self.name, self.reader = spec, spec["name"], reader
        self.tokenizer, self.format = tokenizer, data_format
        self.chunk_documents = getattr(reader, "chunk_documents", CHUNK_DOCUMENTS)
        self.chunk_chars = chunk_chars
        self.counters = {"records": 0, "documents": 0, "bad": {}}
        self._chunk, self._index, self._chunk_start = [], 0, None
        self.exhausted = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"data-{self.name}") if prefetch else None
        self._pending = None  # Future of the next Chunk
        self._empty_since = None  # epoch where a run of chunks without documents began

    def next_document(self):
        """The next document, or None when a non-repeating source is done."""
        while self._index >= len(self._chunk):
            if self.exhausted:
                return None
            self._advance()
        self._index += 1
        return self._chunk[self._index - 1]

    def last_document(self):
        """The document `next_document` returned last."""
        return self._chunk[self._index - 1]

    def _advance(self, count=True):
        chunk = self._pending.result() if self._pending else self._read_chunk()
        self._pending = None
        self._chunk_start, self._chunk, self._index = chunk.start, chunk.documents, 0
        self.exhausted = chunk.exhausted
        if count:
            self.counters["records"] += chunk.records
            self.counters["documents"] += len(chunk.documents)
            for reason, n in chunk.bad.items():
                self.counters["bad"][reason] = self.counters["bad"].get(reason, 0) + n
        self._check_usable(chunk)
        if self._executor is not None and not chunk.exhausted:
            self._pending = self._executor.submit(self._read_chunk)

    def _check_usable(self, chunk):
        """Fail, instead of reading forever, when the records yield no documents at all."""
        if chunk.documents or not chunk.records:
            self._empty_since = None
            return
        if self._empty_since is None:
            self._empty_since = chunk.start_epoch
        never = self.counters["documents"] == 0
        if (never and self.counters["records"] >= MAX_BAD_START) or chunk.end_epoch >= self._empty_since + 2:
            raise SourceError(
                f"Source {self.name!r}: {'no' if never else 'a whole pass of'} records gave a usable "
                f"document ({self.counters['records']:,} read; bad: {self.counters['bad']}). Check "
                f"`path`{' and `field`' if self.format == 'text' else ', `messages` / `prompt` + `response`'} "
                "against the data's columns."
            )

    def _read_chunk(self):
        """Read records from the reader's position into a tokenized `Chunk`."""
        chunk = Chunk(self.reader.tell(), self.reader.epoch)
        items, chars = [], 0
        field = self.spec.get("field", "text")
        max_records = MAX_RECORDS_PER_DOCUMENT * self.chunk_documents
        while len(items) < self.chunk_documents and chars < self.chunk_chars and chunk.records < max_records:
            record = self.reader.next_record()
            if record is END:
                chunk.exhausted = True
                break
            chunk.records += 1
            for r in record if isinstance(record, Several) else [record]:
                item = extract_text(r, field) if self.format == "text" else extract_chat(r, self.spec)
                if isinstance(item, BadRecord):
                    chunk.bad[item.reason] = chunk.bad.get(item.reason, 0) + 1
                    continue
                items.append(item)
                chars += len(item) if self.format == "text" else sum(len(m["content"]) for m in item)
        chunk.end_epoch = self.reader.epoch
        encode = encode_texts if self.format == "text" else encode_chats
        chunk.documents = encode(self.tokenizer, items) if items else []
        return chunk

    def _cancel(self):
        if self._pending is not None:
            wait([self._pending])  # let the reader come to rest before it is moved; drop the chunk
            self._pending = None

    def close(self):
        """Stop the prefetch thread."""
        self._cancel()
        if self._executor is not None:
            self._executor.shutdown()

    # === State ===
    def state_dict(self):
        return {
            "name": self.name,
            "chunk_start": self._chunk_start,
            "index": self._index,
            "counters": {**self.counters, "bad": dict(self.counters["bad"])},
        }

    def load_state_dict(self, state):
        self._cancel()
        self.exhausted = False
        self.reader.seek(state["chunk_start"])
        self._chunk, self._index, self._chunk_start = [], 0, None
        if state["chunk_start"] is not None:
            self._advance(count=False)
            self._index = state["index"]
        self.counters = {**state["counters"], "bad": dict(state["counters"]["bad"])}
