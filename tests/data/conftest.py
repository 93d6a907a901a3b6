import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """A tiny StarCoder-layout BPE (EOS id 0), trained in well under a second."""
    from pydoc_data import topics

    from smallcoder.tokenizer import train_tokenizer

    texts = [topics.topics[k] for k in sorted(topics.topics)[:40]]
    return train_tokenizer(texts + ["def f(x):\n    return x + 1\n"] * 5, vocab_size=400)
