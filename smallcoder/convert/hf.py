"""Load a Hugging Face Llama checkpoint as a `SmallCoderCausalLM`, and save one back.

Both directions go tensor by tensor (safetensors memory-mapped on read,
streamed on write), so a conversion holds the model plus one tensor.
"""

import os

from smallcoder.atomic import staging_folder
from smallcoder.convert import hf_config, safetensors_io
from smallcoder.convert.hub import resolve_folder
from smallcoder.convert.weights import hf_shapes, unexpected_tensors, weight_specs

SAVE_DTYPES = ("float32", "bfloat16", "float16")


def _progress(desc, enabled, **kwargs):
    from tqdm import tqdm

    # enabled=None: show a bar only on a terminal.
    return tqdm(desc=desc, unit="tensor", disable=None if enabled is None else not enabled, **kwargs)


def _token_name(value):
    """`"<eos>"` or `{"content": "<eos>", ...}` (tokenizer_config.json) -> str."""
    return value.get("content") if isinstance(value, dict) else value


def folder_tokenizer(folder, config=None):
    """The folder's `tokenizer.json` as a `SmallCoderTokenizer`, or None if absent.

    A Hugging Face folder or a Keras preset folder alike. EOS comes from
    `tokenizer_config.json`'s `eos_token`, else `config`'s `eos_token_id`
    (the HF `config.json`), else `<|endoftext|>`.
    """
    from smallcoder.tokenizer import EOS_TOKEN, SmallCoderTokenizer

    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    eos = None
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_path):
        eos = _token_name(hf_config.read_json(config_path).get("eos_token"))
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception
        raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
    if eos is None and config:
        eos_id = config.get("eos_token_id")
        eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
        eos = backend.id_to_token(eos_id) if isinstance(eos_id, int) else None
    tokenizer = SmallCoderTokenizer(backend, eos_token=eos or EOS_TOKEN)
    return tokenizer


def _check_tensors(reader, expected, tied, folder):
    """Refuse missing, unexpected or misshapen tensors (`expected`: {name: shape})."""
    missing = [name for name in expected if name not in reader]
    if missing:
        raise ValueError(
            f"{folder}: {len(missing)} tensor(s) the config implies are not in the "
            f"safetensors files, e.g. {missing[:3]}. Is this a LlamaForCausalLM checkpoint "
            "matching its config.json?"
        )
    extra = unexpected_tensors(reader.names(), expected, tied)
    if extra:
        raise ValueError(
            f"{folder}: tensors with no place in the model, e.g. {extra[:3]} (biases or "
            "layers the config does not declare); refusing to drop them silently."
        )
    for name, shape in expected.items():
        found = reader.shape(name)
        if found != tuple(shape):
            raise ValueError(
                f"{folder}: tensor {name!r} has shape {found} but config.json implies "
                f"{tuple(shape)}. The weights do not match the config."
            )


def load_hf(path_or_repo_id, dtype=None, progress=None, remat=None):
    """A `SmallCoderCausalLM` (with its tokenizer) from a Hugging Face Llama checkpoint.

    Args:
        path_or_repo_id: a folder with `config.json`, `model.safetensors` (or
            a sharded `model.safetensors.index.json`) and `tokenizer.json`, or
            a Hub repo id such as `"Beebey/smallcoder-303m"`.
        dtype: Keras dtype or policy of the model (default: Keras' default,
            float32). float32, bfloat16 and float16 files are all accepted.
        progress: show a progress bar (default: only on a terminal).
        remat: None or `"full"`, as `SmallCoderBackbone` takes it.

    Example:
    ```python
    lm = load_hf("path/to/smallcoder-303m")
    lm.generate(["def fib(n):"], max_new_tokens=32)
    ```
    """
    folder = resolve_folder(path_or_repo_id)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"No config.json in {folder}; is it a Hugging Face model folder?")
    config = hf_config.read_json(config_path)
    kwargs = hf_config.backbone_kwargs_from_hf(config, where=config_path)
    reader = safetensors_io.SafetensorsReader(folder)
    _check_tensors(reader, hf_shapes(kwargs), kwargs["tie_word_embeddings"], folder)
    tokenizer = folder_tokenizer(folder, config)
    if tokenizer is not None and tokenizer.vocab_size > kwargs["vocabulary_size"]:
        raise ValueError(
            f"{folder}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json's "
            f"vocab_size is {kwargs['vocabulary_size']}."
        )

    from smallcoder.models.backbone import SmallCoderBackbone
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    backbone = SmallCoderBackbone(**kwargs, dtype=dtype, remat=remat)
    for spec in _progress("hf -> keras", progress, iterable=weight_specs(backbone)):
        target = safetensors_io.numpy_dtype(spec.variable.dtype)
        spec.variable.assign(spec.to_keras(reader.get(spec.hf_name)).astype(target))  # a copy: never alias the file
    return SmallCoderCausalLM(backbone, tokenizer=tokenizer)


def save_hf(causal_lm, directory, dtype="float32", max_shard_size=None, overwrite=False, progress=None):
    """Write `causal_lm` as a folder `transformers.AutoModelForCausalLM` loads.

    Writes `config.json` (LlamaForCausalLM), `generation_config.json`,
    `model.safetensors` (or shards above `max_shard_size` bytes, plus
    `model.safetensors.index.json`) and the tokenizer files. Everything goes
    to a temporary sibling folder that is renamed into place when complete;
    on any error nothing is left behind.

    Args:
        causal_lm: a `SmallCoderCausalLM`.
        directory: the folder to create.
        dtype: `"float32"`, `"bfloat16"` or `"float16"`, the stored dtype.
        max_shard_size: bytes per safetensors file (default 5 GB).
        overwrite: replace an existing non-empty `directory`.
        progress: show a progress bar (default: only on a terminal).

    Example:
    ```python
    save_hf(lm, "smallcoder-hf", dtype="bfloat16")
    AutoModelForCausalLM.from_pretrained("smallcoder-hf")
    ```
    """
    from keras import ops

    if str(dtype) not in SAVE_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {SAVE_DTYPES}.")
    dtype = str(dtype)
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        if not os.path.isdir(directory) or os.listdir(directory):
            raise FileExistsError(f"{directory} exists and is not empty; pass overwrite=True to replace it.")
    backbone, tokenizer = causal_lm.backbone, causal_lm.tokenizer
    eos_id = tokenizer.eos_token_id if tokenizer is not None else None
    specs = weight_specs(backbone)
    by_name = {spec.hf_name: spec for spec in specs}
    file_specs = [(s.hf_name, s.hf_shape, safetensors_io.numpy_dtype(dtype)) for s in specs]

    def tensor(name):
        spec = by_name[name]
        bar.update(1)
        return spec.to_hf(ops.convert_to_numpy(spec.variable.value))

    bar = _progress("keras -> hf", progress, total=len(specs))
    with bar, staging_folder(directory, overwrite) as tmp:
        hf_config.write_json(tmp, "config.json", hf_config.hf_config_from_backbone(backbone, dtype, eos_id, eos_id))
        hf_config.write_json(tmp, "generation_config.json", hf_config.generation_config(eos_id, eos_id, eos_id))
        safetensors_io.write_checkpoint(
            tmp, file_specs, tensor, max_shard_size or safetensors_io.DEFAULT_MAX_SHARD_SIZE
        )
        if tokenizer is not None:
            tokenizer.save(tmp)
    return directory
