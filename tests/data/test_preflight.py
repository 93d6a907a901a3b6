"""`check_sources_open`: a run learns that a dataset cannot be opened before it builds anything."""

import pytest

from smallcoder.data import check_sources_open
from smallcoder.data import sources as sources_module
from smallcoder.data.sources import SourceError


def config(*sources):
    total = len(sources)
    return {"format": "text", "sources": [dict(s, weight=1 / total) for s in sources],
            "demo": [{"name": "d", "weight": 1.0, "type": "demo", "path": "prose"}]}


def test_sources_that_exist_pass(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("x = 1\n")
    check_sources_open(config({"name": "a", "type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                              {"name": "c", "type": "pyfiles", "path": str(tmp_path / "code")}))
    check_sources_open(config(), demo=True)


def test_a_missing_local_file_names_the_source(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(SourceError, match=r"Source 'b': no .*files at '.*missing\.jsonl'.*--demo"):
        check_sources_open(config({"name": "a", "type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                                  {"name": "b", "type": "jsonl", "path": str(tmp_path / "missing.jsonl")}))


def test_an_unreachable_hub_dataset_names_it(monkeypatch):
    monkeypatch.setattr(sources_module.hub_access, "reachable", lambda timeout=3.0: False)
    with pytest.raises(SourceError, match=r"Source 'web': cannot reach the Hugging Face hub for dataset "
                                          r"'HuggingFaceFW/fineweb-edu'.*--demo"):
        check_sources_open(config({"name": "web", "type": "hf", "path": "HuggingFaceFW/fineweb-edu"}))
