"""Exact resume: state after N batches -> a new pipeline yields batches N+1... exactly."""

import json

from data_helpers import assert_batches_equal, batches, write_jsonl

from smallcoder.data import build_pipeline


def check_resume(make, n_before, n_after):
    reference = make()
    batches(reference, n_before)
    state = json.loads(json.dumps(reference.state_dict()))  # must be JSON-serialisable
    expected = batches(reference, n_after)
    resumed = make()
    resumed.load_state_dict(state)
    assert_batches_equal(batches(resumed, n_after), expected)
    assert resumed.token_counts() == reference.token_counts()
    assert resumed.stats() == reference.stats()


def text_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"def f{i}(x):\n    return x * {i}\n" * (i % 9 + 1)}
                                           for i in range(40)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "Some prose about item %d. " % i * (i % 4 + 1)}
                                           for i in range(25)])
    return [{"name": "code", "weight": 0.7, "type": "jsonl", "path": a},
            {"name": "prose", "weight": 0.3, "type": "jsonl", "path": b}]


def test_resume_text_mixture(tmp_path, tokenizer):
    config = {"sources": text_sources(tmp_path)}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=32, batch_size=3, seed=1)

    # 40 batches pass the end of both sources (epochs) and many chunk/document edges.
    for n in (0, 1, 7, 23):
        check_resume(make, n, 17)


def test_resume_demo_text_mixture(tokenizer):
    config = {"demo": [{"name": "math", "weight": 0.6, "type": "demo", "path": "math"},
                       {"name": "prose", "weight": 0.4, "type": "demo", "path": "prose"}]}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=64, batch_size=2, seed=3, demo=True)

    check_resume(make, 9, 6)


def test_resume_sft(tmp_path, tokenizer):
    records = [{"messages": [{"role": "user", "content": f"Question {i}?" * (i % 5 + 1)},
                             {"role": "assistant", "content": f"Answer {i}." * (i % 11 + 1)}]}
               for i in range(60)]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    config = {"format": "chat", "sources": [
        {"name": "chat", "weight": 0.5, "type": "jsonl", "path": path},
        {"name": "sft-demo", "weight": 0.5, "type": "demo", "path": "sft"}]}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=48, batch_size=2, demo=False)

    for n in (0, 5, 13):
        check_resume(make, n, 8)


def test_resume_validation_to_the_end(tmp_path, tokenizer):
    config = {"sources": text_sources(tmp_path)}
    for s in config["sources"]:
        s["validation"] = {"path": s["path"]}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=32, batch_size=3, split="validation")

    full = list(make())
    assert full and (full[-1][0]["padding_mask"] == 0).any()  # padded last batch
    check_resume(make, len(full) - 2, 2)
