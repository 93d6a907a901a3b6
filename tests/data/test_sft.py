"""SFT: the loss covers exactly the assistant tokens and their EOS; packing and overlong."""

import numpy as np
import pytest
from data_helpers import write_jsonl

from smallcoder.data import build_pipeline
from smallcoder.data.documents import encode_chats

CHATS = [
    [{"role": "user", "content": "Add one to x."},
     {"role": "assistant", "content": "def f(x):\n    return x + 1"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
     {"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "Goodbye"}],
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
]


def test_batched_chat_encoding_matches_encode_chat(tokenizer):
    for (ids, mask), messages in zip(encode_chats(tokenizer, CHATS), CHATS):
        ref_ids, ref_mask = tokenizer.encode_chat(messages)
        assert ids.tolist() == ref_ids and mask.tolist() == ref_mask


def sft_pipeline(tmp_path, tokenizer, records, T=64, B=2, **data):
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    config = {"format": "chat", "shuffle_buffer": 0, **data,
              "sources": [{"name": "chat", "weight": 1.0, "type": "jsonl", "path": path}]}
    return build_pipeline(config, tokenizer, sequence_length=T, batch_size=B, split="train")


def test_loss_mask_covers_exactly_responses_and_eos(tmp_path, tokenizer):
    eos = tokenizer.eos_token_id
    pipeline = sft_pipeline(tmp_path, tokenizer, [{"messages": m} for m in CHATS], T=128, B=1)
    x, y, w = next(pipeline)
    seg = x["padding_mask"][0]
    # All three examples fit in one row of 129 tokens, in order, ids 1, 2, 3.
    lengths = [len(tokenizer.encode_chat(m)[0]) for m in CHATS]
    assert sum(lengths) <= 129
    expected_seg = np.concatenate([np.full(n, k + 1) for k, n in enumerate(lengths)])
    assert seg[: sum(lengths)].tolist() == expected_seg.tolist()
    assert (seg[sum(lengths):] == 0).all()
    trained = [int(t) for t, weight in zip(y[0], w[0]) if weight]
    expected = []
    for m in CHATS:
        for turn in m:
            if turn["role"] == "assistant":
                expected += tokenizer.encode(" " + turn["content"]) + [eos]
    assert trained == expected
    assert tokenizer.decode(trained).count("<|endoftext|>") == 4
    # The weight is exactly encode_chat's target mask shifted by one.
    row_mask = np.concatenate([tokenizer.encode_chat(m)[1] for m in CHATS])
    assert w[0][: sum(lengths) - 1].tolist() == row_mask[1:].tolist()
    assert (w[0][sum(lengths) - 1 :] == 0).all()


def test_prompt_response_columns(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pr.jsonl", [{"input": "Say hi", "output": "hi"}])
    config = {"format": "chat", "sources": [{"name": "pr", "weight": 1.0, "type": "jsonl",
                                             "path": path, "prompt": "input", "response": "output"}]}
    x, y, w = next(build_pipeline(config, tokenizer, sequence_length=32, batch_size=1))
    ids, _ = tokenizer.encode_chat([{"role": "user", "content": "Say hi"},
                                    {"role": "assistant", "content": "hi"}])
    assert x["token_ids"][0][: len(ids) - 1].tolist() == ids[:-1]
    assert tokenizer.decode(y[0][w[0] == 1]) == " hi<|endoftext|>"


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_overlong_examples(tmp_path, tokenizer, policy):
    long = {"messages": [{"role": "user", "content": "Repeat"},
                         {"role": "assistant", "content": "word " * 200}]}
    short = {"messages": CHATS[2]}
    pipeline = sft_pipeline(tmp_path, tokenizer, [short, long, short], T=32, B=1, overlong=policy)
    rows = [next(pipeline)[0] for _ in range(4)]  # one pass of the 3 examples and more
    assert pipeline.stats()["overlong"] >= 1
    long_rows = [r for r in rows if "word" in tokenizer.decode(r["token_ids"][0])]
    if policy == "drop":
        assert not long_rows
    else:  # truncated to exactly one full row of T + 1 tokens, one example
        assert long_rows and all((r["padding_mask"][0] == 1).all() for r in long_rows)
