"""tensorflow-datasets source, on a tiny builder the test prepares offline.

TensorFlow imports keras, and these tests must not, so the check runs in a
subprocess; it is slow (TensorFlow start-up), hence marked.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow_datasets as tfds
    from smallcoder.data import build_pipeline
    from smallcoder.tokenizer import train_tokenizer

    class TinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20), "test": self._generate_examples(6)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"text": f"tfds document {i}"}

    data_dir = sys.argv[1]
    TinyText(data_dir=data_dir).download_and_prepare()
    tok = train_tokenizer([f"tfds document {i}" for i in range(30)], 300)
    source = {"name": "tiny", "weight": 1.0, "type": "tfds", "path": "tiny_text", "data_dir": data_dir,
              "validation": {"split": "test"}}
    out = {}
    for rank in range(2):
        p = build_pipeline({"sources": [source]}, tok, sequence_length=256, batch_size=1,
                           split="validation", shard_index=rank, shard_count=2)
        x, _, _ = next(p)
        out[rank] = tok.decode(x["token_ids"][0][x["padding_mask"][0] > 0])
    train = build_pipeline({"sources": [source]}, tok, sequence_length=8, batch_size=2)
    [next(train) for _ in range(5)]
    state = json.loads(json.dumps(train.state_dict()))
    expected = [next(train)[0]["token_ids"].tolist() for _ in range(10)]
    resumed = build_pipeline({"sources": [source]}, tok, sequence_length=8, batch_size=2)
    resumed.load_state_dict(state)
    out["resume_ok"] = expected == [next(resumed)[0]["token_ids"].tolist() for _ in range(10)]
    print(json.dumps(out))
''')


@pytest.mark.slow
def test_tfds_source_shards_and_resumes(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    docs = out["0"].split("<|endoftext|>")[:-1] + out["1"].split("<|endoftext|>")[:-1]
    # The 6 test documents split evenly, 3 per process, none twice.
    assert sorted(docs) == sorted(f"tfds document {i}" for i in range(6))
    assert out["resume_ok"]
