"""A small Hugging Face Llama checkpoint written by `transformers`, and rows to fine-tune it on."""

import json

VOCAB, HIDDEN, HEADS, KV_HEADS, LAYERS, INTERMEDIATE, CONTEXT = 512, 64, 4, 2, 2, 128, 256


def rows(count=200):
    """`{prompt, response}` records: sums of small numbers."""
    return [{"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."}
            for a in range(count // 10) for b in range(10)][:count]


def write_rows(path, records):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def write_llama(folder, texts, seed=0):
    """A random `LlamaForCausalLM` (GQA, untied) saved by `save_pretrained`, with a BPE tokenizer
    trained on `texts` whose EOS is `<|endoftext|>` (id 0)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smallcoder.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=VOCAB)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save(str(folder))
    return str(folder)


def hf_logits(folder, token_ids):
    """transformers' float32 logits of `token_ids` (B, T) for the checkpoint in `folder`."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(token_ids), dtype=torch.long)).logits.numpy()


def keras_logits(lm, token_ids):
    """Our model's float32 logits of `token_ids` (B, T), one document per row."""
    import keras
    import numpy as np

    token_ids = np.asarray(token_ids, "int32")
    logits = lm({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    return keras.ops.convert_to_numpy(logits).astype("float32")
