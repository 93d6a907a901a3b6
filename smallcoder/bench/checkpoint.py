"""`bench_checkpoint`: what an Orbax checkpoint of a model and its AdamW state costs."""

import os
import tempfile
import time


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_checkpoint(config, saves=3, directory=None, seed=0, lora_rank=None):
    """Save a compiled model `saves` times; time the blocking part and the whole save.

    Weights and optimizer variables are filled with random values first, as
    after training, so the sizes are not flattered by compressing zeros.
    `lora_rank`: rank-r adapters on query and value (`training.lora`); the
    checkpoint then holds them and their AdamW state only.

    Returns:
        `{"parameters", "trained_parameters", "saves": [{"blocking_s", "total_s", "bytes"}], "directory"}`.
    """
    import numpy as np

    from smallcoder.bench.train import build_causal_lm
    from smallcoder.training import checkpoint

    causal_lm = build_causal_lm(config, seed=seed)
    if lora_rank:
        from smallcoder.training import lora

        lora.enable(causal_lm.backbone, lora_rank)
    causal_lm.optimizer.build(causal_lm.trainable_variables)
    rng = np.random.default_rng(seed)
    for variable in checkpoint.training_variables(causal_lm).values():
        if variable.shape:
            variable.assign(rng.standard_normal(variable.shape).astype(variable.dtype))
    with tempfile.TemporaryDirectory(dir=directory) as folder:
        store = checkpoint.Checkpoints(folder, keep=1)
        saves_out = []
        for step in range(1, saves + 1):
            started = time.perf_counter()
            blocking = store.save(step, causal_lm, {})
            store.wait()
            saves_out.append({"blocking_s": blocking, "total_s": time.perf_counter() - started,
                              "bytes": _folder_bytes(store.path(step))})
        store.close()
    trained = sum(int(np.prod(v.shape)) for v in causal_lm.trainable_variables)
    return {"parameters": causal_lm.backbone.count_params(), "trained_parameters": trained, "saves": saves_out,
            "directory": directory or tempfile.gettempdir()}
