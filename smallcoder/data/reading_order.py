"""`reading_order`: which shards one data stream reads first, and its first documents, per source.

What `smallcoder data inspect` shows before the batches, so a user can check
that a run does not start with one crawl or one language (see
`smallcoder.data.order` for how the order is made).
"""

from __future__ import annotations

from smallcoder.data.config import DEFAULT_SHUFFLE_BUFFER, resolve_sources
from smallcoder.data.documents import extract_chat, extract_text
from smallcoder.data.order import INTERLEAVE, shard_plan
from smallcoder.data.sources import END, BadRecord, DemoReader, Several, make_reader

PREVIEW_CHARS = 72


def _preview(record, spec, data_format):
    if data_format == "chat":
        item = extract_chat(record, spec)
        if not isinstance(item, BadRecord):
            item = next(m["content"] for m in item if m["role"] != "system")
    else:
        item = extract_text(record, spec.get("field", "text"))
    if isinstance(item, BadRecord):
        return f"(bad record: {item.reason})"
    text = " ".join(item.split())
    return text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")


def _demo_key(key):
    return ":".join(map(str, key))


def _slot(reader, shard, part, parts):
    slot = {"shard": reader.shard_name(shard)}
    if parts > 1:
        slot.update(part=part, parts=parts)
    return slot


def reading_order(
    data_config, *, seed=0, demo=False, split="train", stream=0, streams=1, documents=3
):
    """What stream `stream` of `streams` reads first, per source, as a JSON-serialisable dict.

    Returns:
        `{"stream", "streams", "seed", "shuffle_buffer", "sources": {name: ...}}`;
        per sharded source: `shards` (all of it), `order` (this stream's
        epoch-0 shards in order: `{"shard", "part", "parts"}`, the last two
        when only a part is read), `whole` / `split_inside` (how many of
        each), `read_at_once`, `first_by_stream` (the shards every stream
        opens first) and `first_documents` (`{"shard", "text"}` previews);
        per demo source: `items`, `order` (this stream's first items) and
        `first_documents`.
    """
    if not 0 <= stream < streams:
        raise ValueError(f"stream {stream} is not in [0, {streams}) (--stream, --streams).")
    buffer = data_config.get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)
    result = {"stream": stream, "streams": streams, "seed": seed, "shuffle_buffer": buffer}
    result["sources"] = {}
    for spec in resolve_sources(data_config, demo, split):
        reader = make_reader(spec, split=split, seed=seed, shard_index=stream,
                             shard_count=streams, repeat=split == "train", shuffle_buffer=buffer)
        if isinstance(reader, DemoReader):
            items = reader.items(0)[:INTERLEAVE]
            entry = {"items": len(reader.keys), "order": [_demo_key(key) for key in items]}
        else:
            entry = _shard_order(reader, streams, buffer)
        fmt = data_config.get("format", "text")
        entry = {"type": spec["type"], **entry,
                 "first_documents": _first_documents(reader, spec, fmt, documents)}
        result["sources"][spec["name"]] = entry
    return result


def _shard_order(reader, streams, buffer):
    """The epoch-0 shard order of a `ShardedReader`'s stream, and what every stream opens first."""
    plan = reader.plan(0)
    read_at_once = min(INTERLEAVE if buffer else 1, len(plan))

    def first_shards(stream):
        plan = shard_plan(len(reader.shards), key=reader.key, epoch=0, stream=stream,
                          streams=streams, shuffle=buffer > 0)
        return [reader.shard_name(shard) for shard, _, _ in plan[:read_at_once]]

    return {
        "shards": len(reader.shards),
        "whole": sum(parts == 1 for _, _, parts in plan),
        "split_inside": sum(parts > 1 for _, _, parts in plan),
        "read_at_once": read_at_once,
        "order": [_slot(reader, *slot) for slot in plan],
        "first_by_stream": [first_shards(s) for s in range(streams)],
    }


def _first_documents(reader, spec, data_format, documents, max_records=1000):
    """`[{"shard", "text"}, ...]`: previews of the first `documents` records the reader gives."""
    found = []
    for _ in range(max_records):  # demo items may hold no record; do not read forever
        record = reader.next_record()
        if record is END or len(found) >= documents:
            break
        shard = reader.last_shard
        shard = _demo_key(shard) if isinstance(reader, DemoReader) else reader.shard_name(shard)
        for r in record if isinstance(record, Several) else [record]:
            found.append({"shard": shard, "text": _preview(r, spec, data_format)})
    return found[:documents]


def format_reading_order(order, shards_shown=6):
    """`reading_order(...)` as text lines."""
    s, n = order["stream"], order["streams"]
    buffer = order["shuffle_buffer"]
    lines = [
        f"stream {s} of {n}, seed {order['seed']}, "
        + (f"shuffle_buffer {buffer:,}" if buffer else "shuffle_buffer 0 (stored order)")
    ]
    for name, entry in order["sources"].items():
        if "items" in entry:
            lines.append(
                f"{name} ({entry['type']}): {entry['items']:,} demo items, reshuffled by seed "
                f"each epoch; this stream reads every {n}th"
            )
            lines.append("  first items: " + ", ".join(entry["order"][:shards_shown]))
        else:
            left = entry["split_inside"]
            if not entry["whole"]:
                reads = (
                    f"fewer than the {n} streams, so stream {s} reads every {n}th record "
                    "(or row group) of each"
                )
            else:
                reads = f"stream {s} reads {entry['whole']:,} of them" + (
                    f", and every {n}th record (or row group) of the {left} left over"
                    if left
                    else ""
                )
            how = (
                f"{entry['read_at_once']} at a time interleaved, blocks of {buffer:,} records "
                "shuffled"
                if buffer
                else "one at a time, in stored order"
            )
            lines.append(f"{name} ({entry['type']}): {entry['shards']:,} shard(s); {reads}; {how}")
            shown = [
                slot["shard"]
                + (f" (part {slot['part'] + 1}/{slot['parts']})" if "parts" in slot else "")
                for slot in entry["order"][:shards_shown]
            ]
            more = len(entry["order"]) - len(shown)
            lines.append(
                "  first shards: " + ", ".join(shown) + (f", … {more} more" if more > 0 else "")
            )
            if n > 1:
                firsts = sorted({f for by_stream in entry["first_by_stream"] for f in by_stream})
                lines.append(f"  all {n} streams together start on {len(firsts)} shard(s)")
        if entry["first_documents"]:
            lines.append("  first documents:")
        for doc in entry["first_documents"]:
            lines.append(f"    [{doc['shard']}] {doc['text']}")
    return lines
