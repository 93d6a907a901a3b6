"""Validation of the recipe `data:` section: errors name the file and key."""

import re

import pytest

from smallcoder.data import validate_data_config


def source(**kw):
    return {"name": "s", "weight": 1.0, "type": "jsonl", "path": "x.jsonl", **kw}


def test_valid_configs():
    validate_data_config({"format": "text", "document_masking": False, "sources": [source()]}, "f.yaml")
    validate_data_config({"format": "chat", "overlong": "drop", "sources": [source(prompt="q", response="a")],
                          "demo": [{"name": "d", "weight": 1, "type": "demo", "path": "sft"}]}, "f.yaml")


@pytest.mark.parametrize("data, key", [
    ({"sources": [source()], "colour": 1}, "data.colour"),
    ({"format": "html", "sources": [source()]}, "data.format"),
    ({"overlong": "cut", "sources": [source()]}, "data.overlong"),
    ({"document_masking": "yes", "sources": [source()]}, "data.document_masking"),
    ({"sources": [source(), source(name="t", weight=0.5)]}, "data.sources[1].weight"),
    ({"sources": [source(weight="1")]}, "data.sources[0].weight"),
    ({"sources": [source(type="s3")]}, "data.sources[0].type"),
    ({"sources": [source(colour="red")]}, "data.sources[0].colour"),
    ({"sources": [{"name": "s", "weight": 1.0, "type": "jsonl"}]}, "data.sources[0].path"),
    ({"sources": [source(config="x")]}, "data.sources[0].config"),
    ({"sources": [source(name="a", weight=0.5), source(name="a", weight=0.5)]}, "data.sources[1].name"),
    ({"format": "chat", "sources": [source(prompt="q")]}, "data.sources[0].prompt"),
    ({"format": "chat", "sources": [source(type="pyfiles")]}, "data.sources[0].type"),
    ({"sources": [source(messages="m")]}, "data.sources[0].messages"),
    ({"sources": [source()], "demo": [{"name": "d", "weight": 1, "type": "demo", "path": "poems"}]},
     "data.demo[0].path"),
    ({"sources": [source(validation={"weight": 2})]}, "data.sources[0].validation.weight"),
])
def test_errors_name_file_and_key(data, key):
    with pytest.raises(ValueError, match="^" + re.escape(f"recipes/sft.yaml: {key}: ")):
        validate_data_config(data, "recipes/sft.yaml")
