"""Tokenizer: ids equal transformers' fast tokenizer; round trips; chat format; training."""

import pytest

from smallcoder.tokenizer import (
    EOS_TOKEN,
    SmallCoderTokenizer,
    chat_prompt,
    format_chat,
    train_tokenizer,
)

CORPUS = [
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "class Stack:\n\tdef push(self, x):\n\t\tself.items.append(x)  # O(1)\n",
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; isn't it?",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🚀🐍, Ελληνικά, русский.",
    "digits 1234567890 and 3.14159e-10, 0xFF, 1_000_000",
    "whitespace   runs\n\n\n\t\t  \r\n    trailing    ",
    "    ",
    "",
    "<|endoftext|>special tokens<fim_prefix>inside<fim_suffix> text",
    "SELECT * FROM users WHERE id = 42; -- sql\n<div class=\"x\">html</div>",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    texts = [t * 3 for t in CORPUS] + ["import os\nimport sys\n" * 20]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    directory = tmp_path_factory.mktemp("tok")
    tokenizer.save(directory)
    return directory


def test_ids_equal_transformers_fast_tokenizer(trained):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ours = SmallCoderTokenizer(trained)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(trained / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(trained))
    for text in CORPUS:
        expected = theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected, text
        assert auto.encode(text, add_special_tokens=False) == expected, text
    assert ours.encode_batch(CORPUS) == [ours.encode(t) for t in CORPUS]
    assert auto.eos_token == EOS_TOKEN and auto.eos_token_id == ours.eos_token_id == 0


def test_decode_inverts_encode(trained, demo_tokenizer):
    for tokenizer in (SmallCoderTokenizer(trained), demo_tokenizer):
        for text in CORPUS:
            assert tokenizer.decode(tokenizer.encode(text)) == text
        assert tokenizer.decode_batch(tokenizer.encode_batch(CORPUS)) == CORPUS


def test_digits_are_split_one_by_one(trained):
    tokenizer = SmallCoderTokenizer(trained)
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("x = 2024")]
    assert pieces[-4:] == ["2", "0", "2", "4"]


def test_training_is_deterministic():
    texts = [t * 2 for t in CORPUS]
    first = train_tokenizer(texts, vocab_size=350).backend.to_str()
    assert train_tokenizer(texts, vocab_size=350).backend.to_str() == first


def test_chat_format_is_the_model_card_format(demo_tokenizer):
    assert chat_prompt("Sort a list") == "User: Sort a list\nAssistant:"
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Add 2+2"},
        {"role": "assistant", "content": "4"},
    ]
    segments = format_chat(messages)
    text = "".join(t for t, _ in segments)
    assert text == f"User: Hi\nAssistant: Hello{EOS_TOKEN}\nUser: Add 2+2\nAssistant: 4{EOS_TOKEN}"
    ids, mask = demo_tokenizer.encode_chat(messages)
    trained = [i for i, m in zip(ids, mask) if m]
    eos = demo_tokenizer.eos_token_id
    assert demo_tokenizer.decode(trained) == f" Hello{EOS_TOKEN} 4{EOS_TOKEN}"
    assert trained.count(eos) == 2 and ids[-1] == eos and mask[-1] == 1
    # The generation prompt tokenizes to the same ids as the start of an SFT example.
    prompt_ids = demo_tokenizer.encode(chat_prompt("Hi"))
    assert ids[: len(prompt_ids)] == prompt_ids


def test_chat_format_rejects_bad_turns():
    with pytest.raises(ValueError, match="expected 'user'"):
        format_chat([{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match="last message to be a user turn"):
        format_chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], True)


def test_missing_or_bad_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No tokenizer file"):
        SmallCoderTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        SmallCoderTokenizer(tmp_path)
