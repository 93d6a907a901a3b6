"""Bad records are skipped and counted; sources read only their shard."""

import numpy as np
from data_helpers import write_jsonl

from smallcoder.data import build_pipeline


def test_bad_jsonl_records_skipped_and_counted(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"text": "good one"},
        {"body": "no text field"},
        {"text": "   "},
        b'{"text": "bad \xff\xfe bytes"}\n',
        b"{not json\n",
        {"text": 17},
        {"text": "good two"},
    ])
    config = {"shuffle_buffer": 0,
              "sources": [{"name": "mixed", "weight": 1.0, "type": "jsonl", "path": path,
                           "validation": {"path": path}}]}
    pipeline = build_pipeline(config, tokenizer, sequence_length=8, batch_size=1, split="validation")
    tokens = np.concatenate([x["token_ids"][0][x["padding_mask"][0] > 0] for x, _, _ in pipeline])
    assert tokenizer.decode(tokens) == "good one<|endoftext|>good two<|endoftext|>"
    stats = pipeline.stats()["sources"]["mixed"]
    assert stats["records"] == 7 and stats["documents"] == 2
    assert stats["bad"] == {"missing_field": 1, "empty": 1, "undecodable": 1, "invalid_json": 1, "not_text": 1}


def test_pyfiles_undecodable_and_sharding(tmp_path, tokenizer):
    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(6):
        (folder / f"m{i}.py").write_text(f"x = {i}\n")
    (folder / "bad.py").write_bytes(b"y = '\xff'\n")
    seen = []
    for rank in range(2):
        spec = {"name": "py", "weight": 1.0, "type": "pyfiles", "path": str(folder),
                "validation": {"path": str(folder)}}
        p = build_pipeline({"sources": [spec]}, tokenizer, sequence_length=4, batch_size=1,
                           split="validation", shard_index=rank, shard_count=2)
        text = "".join(tokenizer.decode(x["token_ids"][0][x["padding_mask"][0] > 0]) + "|" for x, _, _ in p)
        seen.append((text, p.stats()["sources"]["py"]))
    # 7 files split 4/3 between the two processes; the undecodable one is counted where it lands.
    assert [s["records"] for _, s in seen] == [4, 3]
    assert sum(s["bad"].get("undecodable", 0) for _, s in seen) == 1
    assert sum(s["documents"] for _, s in seen) == 6


def test_source_without_usable_documents_fails_instead_of_hanging(tmp_path, tokenizer):
    import pytest

    from smallcoder.data.sources import SourceError

    path = write_jsonl(tmp_path / "wrong.jsonl", [{"content": f"doc {i}"} for i in range(5)])
    config = {"sources": [{"name": "wrong-field", "weight": 1.0, "type": "jsonl", "path": path}]}
    pipeline = build_pipeline(config, tokenizer, sequence_length=8, batch_size=1)
    with pytest.raises(SourceError, match=r"'wrong-field'.*missing_field.*`field`"):
        next(pipeline)
