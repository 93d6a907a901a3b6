"""The StarCoder byte-level BPE tokenizer and the one SmallCoder chat format.

The Rust `tokenizers` library does the work, so ids are exactly those of
`transformers.AutoTokenizer` on the same `tokenizer.json`.

Chat format (used by generation, SFT data and evaluation alike)::

    User: {prompt}\nAssistant: {response}<|endoftext|>

`format_chat` is the only place that spells it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

EOS_TOKEN = "<|endoftext|>"
USER_PREFIX = "User: "
ASSISTANT_PREFIX = "\nAssistant:"
TURN_SEPARATOR = "\n"


def format_chat(messages, add_generation_prompt=False):
    """Lay out a conversation in the SmallCoder chat format.

    Args:
        messages: a prompt string, or a list of `{"role": "user"|"assistant",
            "content": str}` dicts alternating user/assistant, starting with user.
        add_generation_prompt: end with `"\\nAssistant:"` after the last user
            turn, ready for the model to answer.

    Returns:
        A list of `(text, is_target)` segments. `is_target` marks assistant
        text the SFT loss covers; the string `EOS_TOKEN` stands for the EOS
        token id after each assistant answer (also a target: the model must
        learn to stop). Turns are joined by `"\\n"` (not a target).

    Example:
    >>> format_chat([{"role": "user", "content": "Hi"},
    ...              {"role": "assistant", "content": "Hello"}])
    [('User: Hi\\nAssistant:', False), (' Hello', True), ('<|endoftext|>', True)]
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    segments = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"Chat message {i} has role {role!r}; expected {expected!r} "
                "(turns alternate user/assistant, starting with user)."
            )
        if not isinstance(content, str):
            raise ValueError(f"Chat message {i} has no string 'content'.")
        if role == "user":
            separator = TURN_SEPARATOR if i else ""
            segments.append((separator + USER_PREFIX + content + ASSISTANT_PREFIX, False))
        else:
            segments.append((" " + content, True))
            segments.append((EOS_TOKEN, True))
    if add_generation_prompt and (not messages or messages[-1]["role"] != "user"):
        raise ValueError("add_generation_prompt needs the last message to be a user turn.")
    if not add_generation_prompt and messages and messages[-1]["role"] == "user":
        # A trailing user turn without a generation prompt: keep only the question.
        text, _ = segments[-1]
        segments[-1] = (text[: -len(ASSISTANT_PREFIX)], False)
    return segments


def chat_prompt(prompt):
    """The generation prompt for one user message: `"User: {prompt}\\nAssistant:"`."""
    return "".join(text for text, _ in format_chat(prompt, add_generation_prompt=True))


class SmallCoderTokenizer:
    """StarCoder-style byte-level BPE over a `tokenizer.json`.

    Args:
        tokenizer: a path to a `tokenizer.json`, a folder holding one, or a
            `tokenizers.Tokenizer`.
        eos_token: the end-of-sequence token; must be in the vocabulary.

    Example:
    >>> tok = SmallCoderTokenizer("path/to/tokenizer.json")  # doctest: +SKIP
    >>> tok.decode(tok.encode("def f(x):\\n    return x"))  # doctest: +SKIP
    'def f(x):\\n    return x'
    """

    def __init__(self, tokenizer, eos_token=EOS_TOKEN):
        from tokenizers import Tokenizer

        if isinstance(tokenizer, (str, os.PathLike)):
            path = os.fspath(tokenizer)
            if os.path.isdir(path):
                path = os.path.join(path, "tokenizer.json")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"No tokenizer file at {path!r}. Pass a tokenizer.json or a "
                    "folder that holds one (a Keras preset or Hugging Face folder)."
                )
            try:
                tokenizer = Tokenizer.from_file(path)
            except Exception as e:  # tokenizers raises a bare Exception
                raise ValueError(f"{path!r} is not a valid tokenizer.json: {e}") from e
        self.backend = tokenizer
        self.eos_token = eos_token
        self.eos_token_id = tokenizer.token_to_id(eos_token)
        if self.eos_token_id is None:
            raise ValueError(
                f"The tokenizer has no {eos_token!r} token; SmallCoder uses it as "
                "EOS. Pass eos_token=... naming the end-of-text token of this vocabulary."
            )

    @classmethod
    def from_preset(cls, preset):
        """The tokenizer of a built-in preset name (the small ones share the demo tokenizer), a
        Keras preset folder or a Hugging Face folder, as the model classes' `from_preset` take them."""
        from smallcoder.models.presets import tokenizer_from_preset

        return tokenizer_from_preset(preset)

    # === Encoding ===
    @property
    def vocab_size(self):
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text):
        """`str` -> `list[int]` (no special tokens added)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        """`list[str]` -> `list[list[int]]`, in parallel on the Rust side."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids, skip_special_tokens=False):
        """`list[int]` -> `str`."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch, skip_special_tokens=False):
        return self.backend.decode_batch(
            [[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special_tokens
        )

    def token_to_id(self, token):
        return self.backend.token_to_id(token)

    def encode_chat(self, messages, add_generation_prompt=False):
        """Token ids and loss mask of a conversation in the chat format.

        Returns:
            `(ids, target_mask)`: two equal-length lists; `target_mask[i]` is 1
            where token `i` is assistant text or its EOS (what SFT trains on).
        """
        ids, mask = [], []
        for text, is_target in format_chat(messages, add_generation_prompt):
            piece = [self.eos_token_id] if text == EOS_TOKEN else self.encode(text)
            ids.extend(piece)
            mask.extend([int(is_target)] * len(piece))
        return ids, mask

    # === Saving ===
    def save(self, directory):
        """Write `tokenizer.json` and `tokenizer_config.json` into `directory`."""
        os.makedirs(directory, exist_ok=True)
        self.backend.save(os.path.join(directory, "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": self.eos_token,
            "bos_token": self.eos_token,
            "unk_token": self.eos_token,
            "pad_token": self.eos_token,
            "model_max_length": 1024,
            "clean_up_tokenization_spaces": False,
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)


STARCODER_SPECIAL_TOKENS = [
    EOS_TOKEN, "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<empty_output>", "<commit_before>", "<commit_msg>", "<commit_after>", "<reponame>",
]  # fmt: skip


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> SmallCoderTokenizer:
    """Train a StarCoder-layout byte-level BPE on `texts`, deterministically.

    Same pipeline as StarCoder's `tokenizer.json`: single-digit pre-split,
    GPT-2 byte-level pre-tokenizer/decoder, its 19 special tokens first
    (`<|endoftext|>` = 0). Used for tests and the demo preset.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=STARCODER_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return SmallCoderTokenizer(tokenizer)
