"""`--data FILE`: detected columns, weights by size, and the held-out validation fraction."""

import json

import pytest
from data_helpers import write_jsonl

from smallcoder.data.config import resolve_sources
from smallcoder.data.files import apply_data_files, sources_from_files
from smallcoder.data.sources import END, make_reader


def test_chat_columns_are_detected_or_named(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "response": "b", "id": 1}])
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "a"}]}])
    other = write_jsonl(tmp_path / "qa.jsonl", [{"question": "a", "answer": "b"}])
    found = sources_from_files([pairs, chats], "chat")
    assert [(s["name"], s["type"], s["path"]) for s in found] == [("pairs", "jsonl", pairs), ("chats", "jsonl", chats)]
    assert {k: found[0][k] for k in ("prompt", "response")} == {"prompt": "prompt", "response": "response"}
    assert found[1]["messages"] == "messages" and "prompt" not in found[1]
    with pytest.raises(ValueError, match=r"--data .*qa\.jsonl: format chat needs a `messages` column or `prompt` "
                                         r"\+ `response` columns; its first record has \['question', 'answer'\]\. "
                                         r"Name the columns with --set data\.columns\.prompt=COLUMN"):
        sources_from_files([other], "chat")
    (named,) = sources_from_files([other], "chat", {"prompt": "question", "response": "answer"})
    assert (named["prompt"], named["response"]) == ("question", "answer")
    with pytest.raises(ValueError, match=r"no column 'answr'"):
        sources_from_files([other], "chat", {"prompt": "question", "response": "answr"})
    text = write_jsonl(tmp_path / "docs.jsonl", [{"content": "def f(): pass"}])
    assert sources_from_files([text], "text")[0]["field"] == "content"


def test_parquet_files_and_weights_by_size(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "rows.parquet")
    pq.write_table(pa.table({"prompt": ["a"] * 300, "response": ["b"] * 300}), path)
    small = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "a", "response": "b"}])
    found = sources_from_files([path, small], "chat")
    assert [(s["name"], s["type"]) for s in found] == [("rows", "parquet"), ("rows-2", "jsonl")]
    assert sum(s["weight"] for s in found) == pytest.approx(1.0, abs=1e-9)
    assert found[0]["weight"] > found[1]["weight"] > 0
    with pytest.raises(ValueError, match=r"--data .*x\.csv: expected a \.jsonl"):
        sources_from_files([str(tmp_path / "x.csv")], "chat")
    with pytest.raises(ValueError, match=r"--data .*missing\.jsonl: no such file"):
        sources_from_files([str(tmp_path / "missing.jsonl")], "chat")


def _records(spec, split, shard_index=0, shard_count=1):
    reader = make_reader(spec, split=split, seed=0, shard_index=shard_index, shard_count=shard_count, repeat=False)
    found = []
    while (record := reader.next_record()) is not END:
        found.append(record["prompt"])
    return found


@pytest.mark.parametrize("shards", [1, 3])
def test_the_held_out_fraction_is_disjoint_from_training_and_the_same_on_any_shards(tmp_path, shards):
    records = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(2000)]
    data = apply_data_files({"format": "chat"}, [write_jsonl(tmp_path / "rows.jsonl", records)])
    assert data["validation_fraction"] == 0.05  # the default for --data
    train_spec, = resolve_sources(data, False, "train")
    validation_spec, = resolve_sources(data, False, "validation")
    assert train_spec["holdout"] == validation_spec["holdout"] == 0.05
    train = [p for s in range(shards) for p in _records(train_spec, "train", s, shards)]
    held = [p for s in range(shards) for p in _records(validation_spec, "validation", s, shards)]
    assert not set(train) & set(held) and sorted(train + held) == sorted(r["prompt"] for r in records)
    assert 0.03 < len(held) / len(records) < 0.07
    # Decided by content alone: the same records, whatever the order or the file.
    reversed_file = write_jsonl(tmp_path / "reversed.jsonl", records[::-1])
    again = resolve_sources(apply_data_files({"format": "chat"}, [reversed_file]), False, "validation")[0]
    assert sorted(_records(again, "validation")) == sorted(held)


def test_validation_files_replace_the_held_out_fraction(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"q{i}", "response": "a"} for i in range(50)])
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"prompt": "v", "response": "a"}])
    data = apply_data_files({"format": "chat", "validation_fraction": 0.5}, [train], [valid])
    (train_spec,) = resolve_sources(data, False, "train")
    assert "holdout" not in train_spec and len(_records(train_spec, "train")) == 50
    (validation_spec,) = resolve_sources(data, False, "validation")
    assert validation_spec["name"] == "validation-valid" and _records(validation_spec, "validation") == ["v"]


def test_a_hub_source_needs_its_own_validation_split():
    data = {"format": "chat", "validation_fraction": 0.05,
            "sources": [{"name": "hub", "weight": 1.0, "type": "hf", "path": "org/set", "messages": "messages"}]}
    assert "holdout" not in resolve_sources(data, False, "train")[0]
    with pytest.raises(ValueError, match=r"data\.sources\[0\]\.validation: missing; .*validation: \{split: test\}\."):
        resolve_sources(data, False, "validation")


def test_data_files_in_a_recipe(tmp_path):
    from smallcoder.recipes import RecipeError, load_recipe

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                              {"role": "assistant", "content": "b"}]}])
    recipe = load_recipe("sft", demo=True, data_files=[rows], overrides=["data.validation_fraction=0.1"])
    assert recipe.data_files == [rows] and recipe.demo and not recipe.demo_data
    assert recipe["data.sources"] == [{"name": "rows", "weight": 1.0, "type": "jsonl", "path": rows,
                                       "messages": "messages"}]
    assert recipe["data.demo"] is None and recipe["data.validation_fraction"] == 0.1
    assert recipe.where("data.sources") == "--data" and "data files:        " + rows in recipe.describe()
    with pytest.raises(RecipeError, match=r"--validation-data: data.validation_sources: needs --data"):
        load_recipe("sft", validation_files=[rows], check_init=False)
    assert json.loads(json.dumps(recipe.ordered_config()))["data"]["format"] == "chat"
