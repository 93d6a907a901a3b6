"""What one data stream reads from one source, in what order, with a small exact position.

Per source and epoch `e`, stream `s` of `S` (`smallcoder.data.streams`):

1. **Shard order.** The source's `N` shards (the files of a glob or folder, the data
   files of a Hugging Face dataset, a tfds split's files) are permuted by
   `Random(f"{seed}/{source}/shards/{e}")`. Every stream computes the same
   permutation: it depends on neither `S` nor the process.
2. **Assignment.** Stream `s` reads the whole shards `order[s], order[s + S], ...`
   of the first `N // S` rounds; each of the `N % S` shards left over is split
   inside (`parts` = S: every S-th record, or row group for parquet), stream `s`
   reading part `(s + i) % S` of left-over shard `i`. Within an epoch the streams
   read disjoint records that together cover the source once; with `N < S`
   every shard is split this way.
3. **Interleave.** The stream opens `INTERLEAVE` of its shards and takes one record
   from each in turn (tf.data's interleave, cycle 16, block 1); a finished shard
   is replaced by its next one.
4. **Shuffle buffer.** The interleaved records are cut into blocks of
   `shuffle_buffer` records; each block is permuted by
   `Random(f"{seed}/{source}/{s}/{e}/{block}")`.

`shuffle_buffer: 0` reads the stored order: shards in stored order, one at a
time, records as stored (split among streams as above).

A position is `{"block", "start", "index"}`: the block's number, the interleave
state where it began (which shards are open and each one's cursor, a
`(row group, row)` or byte offset) and how many of its records were handed
out. Restoring re-opens those shards at their cursors and re-reads one block:
the cost is bounded by `shuffle_buffer` records, not by what was consumed.
"""

from __future__ import annotations

import random

INTERLEAVE = 16  # shards read at once per stream and source (the shuffle buffer mixes them)


def shard_order(num_shards, key, epoch, shuffle):
    """The epoch's order of all `num_shards` shards (the same for every stream)."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(f"{key}/shards/{epoch}").shuffle(order)
    return order


def shard_plan(num_shards, *, key, epoch, stream, streams, shuffle):
    """`[(shard, part, parts), ...]`: what `stream` of `streams` reads in `epoch`, in order.

    `parts == 1`: the whole shard; otherwise only part `part` of `parts` of it.
    `key` is `f"{seed}/{source name}"`.
    """
    order = shard_order(num_shards, key, epoch, shuffle)
    whole = num_shards - num_shards % streams
    plan = [(order[i], 0, 1) for i in range(stream, whole, streams)]
    plan += [(order[i], (stream + i) % streams, streams) for i in range(whole, num_shards)]
    return plan


class Interleave:
    """The records of a plan's slots, `cycle` slots open at once, one record from each in turn.

    Args:
        plan: `shard_plan(...)`.
        read_shard: `read_shard(shard, part, parts, cursor)` -> an iterator of
            `(item, cursor after it)`; cursor `None` is the shard's start.
        cycle: how many slots are open at once.
        state: a `state()` to continue from; `None` starts at the beginning.
    """

    def __init__(self, plan, read_shard, cycle, state=None):
        self.plan, self._read_shard, self.cycle = plan, read_shard, cycle
        if state is None:
            self.next_slot, self.turn, self.open = 0, 0, []
            while len(self.open) < cycle and self.next_slot < len(plan):
                self.open.append(self._open(self.next_slot, None))
                self.next_slot += 1
        else:
            self.next_slot, self.turn = state["next"], state["turn"]
            self.open = [self._open(i, cursor) for i, cursor in state["open"]]

    def _open(self, slot, cursor):
        shard, part, parts = self.plan[slot]
        return [slot, self._read_shard(shard, part, parts, cursor), cursor]

    def next(self):
        """`(item, shard)`, or `None` when every slot is read."""
        while self.open:
            entry = self.open[self.turn]
            try:
                item, entry[2] = next(entry[1])
            except StopIteration:
                if self.next_slot < len(self.plan):  # its place in the cycle goes to the next slot
                    self.open[self.turn] = self._open(self.next_slot, None)
                    self.next_slot += 1
                else:
                    del self.open[self.turn]
                    if self.turn == len(self.open):
                        self.turn = 0
                continue
            self.turn = (self.turn + 1) % len(self.open)
            return item, self.plan[entry[0]][0]
        return None

    def state(self):
        """`{"next", "turn", "open": [[slot, cursor], ...]}`, JSON-serialisable."""
        return {
            "next": self.next_slot,
            "turn": self.turn,
            "open": [
                [slot, list(cursor) if isinstance(cursor, tuple) else cursor]
                for slot, _, cursor in self.open
            ],
        }


class EpochOrder:
    """One epoch of a stream's records of one source: interleaved shards, shuffled in blocks.

    Args:
        plan: `shard_plan(...)` of the epoch.
        read_shard: as `Interleave`.
        shuffle_buffer: records per shuffled block; 0 = stored order, one shard at a time.
        block_key: `f"{seed}/{source}/{stream}/{epoch}"`, seeds each block's permutation.
        position: a `tell()` to continue from; `None` starts the epoch.
    """

    def __init__(self, plan, read_shard, *, shuffle_buffer, block_key, position=None):
        self.block_size = max(shuffle_buffer, 1)
        self.shuffle = shuffle_buffer > 0
        self.block_key = block_key
        position = position or {"block": 0, "start": None, "index": 0}
        cycle = INTERLEAVE if self.shuffle else 1
        self.interleave = Interleave(plan, read_shard, cycle, position["start"])
        self.block_number = position["block"]
        self.start, self.block, self.index = position["start"], [], 0
        if position["index"]:
            self._fill()
            self.index = position["index"]
            if self.index > len(self.block):
                raise ValueError(
                    f"position {position['index']} is past the end of block "
                    f"{self.block_number} ({len(self.block)} records)"
                )

    def _fill(self):
        """Read the current block (`block_number`) from the interleave."""
        if self.block_size > 1:
            self.start = self.interleave.state()
        block = []
        while len(block) < self.block_size:
            got = self.interleave.next()
            if got is None:
                break
            block.append(got)
        if self.shuffle:
            random.Random(f"{self.block_key}/{self.block_number}").shuffle(block)
        self.block, self.index = block, 0

    def next(self):
        """`(item, shard)`, or `None` at the end of the epoch."""
        if self.index == len(self.block):
            if self.block:
                self.block_number += 1
            self._fill()
            if not self.block:
                return None
        self.index += 1
        return self.block[self.index - 1]

    def tell(self):
        """`{"block", "start", "index"}`: where the next record is, JSON-serialisable."""
        if self.index == len(self.block):  # the next record starts the next block
            number = self.block_number + (1 if self.block else 0)
            return {"block": number, "start": self.interleave.state(), "index": 0}
        return {"block": self.block_number, "start": self.start, "index": self.index}
