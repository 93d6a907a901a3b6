"""Read and write `.safetensors` checkpoints one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`)
and the raw little-endian tensor bytes. The `safetensors` package's numpy
API has no bfloat16 and its writers need every tensor in memory at once, so
this module reads through `numpy.memmap` (bfloat16 via `ml_dtypes`) and
streams tensors to disk: converting a model holds the model plus one tensor.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Shards above this many bytes split, as `save_pretrained` does.
DEFAULT_MAX_SHARD_SIZE = 5 * 10**9

_DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20


def numpy_dtype(name):
    """`"float32" | "bfloat16" | "float16"` (or a numpy dtype) -> numpy dtype."""
    if str(name) == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def read_header(path):
    """The JSON header of one safetensors file, checked against the file size.

    Returns:
        `(tensors, data_start)`: `{name: {"dtype", "shape", "data_offsets"}}`
        and the byte offset where tensor data begins.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file: it has only {size} bytes.")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER or 8 + header_len > size:
            raise ValueError(
                f"{path} is truncated or not a safetensors file: its header claims "
                f"{header_len} bytes but the file has {size}. Download or copy it again."
            )
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise ValueError(f"{path} has a corrupt safetensors header: {e}") from e
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if data_start + end > size:
            raise ValueError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} "
                f"but the file has {size} bytes. Download or copy it again."
            )
        if info["dtype"] not in _DTYPES:
            raise ValueError(
                f"{path}: tensor {name!r} has dtype {info['dtype']}; only "
                f"{', '.join(_DTYPES)} floating-point weights can be converted."
            )
        expected = int(np.prod(info["shape"], dtype=np.int64)) * _DTYPES[info["dtype"]].itemsize
        if end - begin != expected:
            raise ValueError(
                f"{path}: tensor {name!r} of shape {info['shape']} ({info['dtype']}) should "
                f"take {expected} bytes but its offsets span {end - begin}."
            )
    return header, data_start


class SafetensorsReader:
    """All tensors of a Hugging Face folder, single-file or sharded.

    Args:
        folder: holds `model.safetensors` or `model.safetensors.index.json`
            and its shards.

    `reader.shape(name)` is the stored shape; `reader.get(name)` a read-only
    memory-mapped numpy array in the stored dtype (nothing loads until used).

    Example:
    ```python
    reader = SafetensorsReader("llama-folder")
    reader.get("model.embed_tokens.weight").shape  # (V, D)
    ```
    """

    def __init__(self, folder):
        self.folder = folder
        index_path = os.path.join(folder, INDEX_FILE)
        single_path = os.path.join(folder, SINGLE_FILE)
        if os.path.isfile(index_path):
            with open(index_path) as f:
                try:
                    weight_map = json.load(f)["weight_map"]
                except (ValueError, KeyError) as e:
                    raise ValueError(f"{index_path} has no valid 'weight_map': {e}") from e
        elif os.path.isfile(single_path):
            weight_map = None
        else:
            present = ", ".join(sorted(os.listdir(folder))) or "nothing"
            raise FileNotFoundError(
                f"No {SINGLE_FILE} or {INDEX_FILE} in {folder} (it holds: {present}). "
                "Only safetensors weights are read; re-save the model with "
                "`save_pretrained(..., safe_serialization=True)`."
            )
        files = sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]
        self._entries = {}  # name -> (path, info, data_start)
        for file in files:
            path = os.path.join(folder, file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{index_path} lists {file}, which is not in {folder}.")
            header, data_start = read_header(path)
            for name, info in header.items():
                self._entries[name] = (path, info, data_start)
        if weight_map:
            missing = sorted(n for n in weight_map if n not in self._entries)
            if missing:
                raise ValueError(f"{index_path} lists tensors its shards lack: {missing[:5]}.")

    def names(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name):
        return tuple(self._entries[name][1]["shape"])

    def dtype(self, name):
        return _DTYPES[self._entries[name][1]["dtype"]]

    def get(self, name):
        """Tensor `name` as a read-only numpy memmap in its stored dtype."""
        path, info, data_start = self._entries[name]
        begin, _ = info["data_offsets"]
        shape = tuple(info["shape"])
        dtype = _DTYPES[info["dtype"]]
        if not shape or 0 in shape:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)


def plan_shards(specs, max_shard_size=DEFAULT_MAX_SHARD_SIZE):
    """Split `[(name, shape, dtype)]` into files of at most `max_shard_size` bytes.

    Returns:
        `[(file_name, [(name, shape, dtype), ...]), ...]`: one
        `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards
        (a tensor larger than the limit gets a shard of its own).
    """
    groups, current, current_size = [], [], 0
    for spec in specs:
        size = int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize
        if current and current_size + size > max_shard_size:
            groups.append(current)
            current, current_size = [], 0
        current.append(spec)
        current_size += size
    if current:
        groups.append(current)
    if len(groups) == 1:
        return [(SINGLE_FILE, groups[0])]
    n = len(groups)
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", group) for i, group in enumerate(groups)]


def write_safetensors(path, specs, tensor_fn):
    """Stream tensors into one safetensors file.

    Args:
        path: the file to write.
        specs: `[(name, shape, dtype)]`, in file order.
        tensor_fn: `name -> numpy array` of that shape; called once per
            tensor, right before its bytes are written, and cast to `dtype`.
    """
    header, offset = {}, 0
    for name, shape, dtype in specs:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": _NAMES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, shape, dtype in specs:
            array = np.asarray(tensor_fn(name))
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"Tensor {name!r} has shape {array.shape}, expected {tuple(shape)}.")
            array = np.ascontiguousarray(array.astype(dtype, copy=False))
            f.write(array.reshape(-1).view(np.uint8).data)


def write_checkpoint(folder, specs, tensor_fn, max_shard_size=DEFAULT_MAX_SHARD_SIZE):
    """Write `specs` as `model.safetensors`, or shards plus their index.

    Returns:
        The list of files written (names inside `folder`).
    """
    shards = plan_shards(specs, max_shard_size)
    for file_name, group in shards:
        write_safetensors(os.path.join(folder, file_name), group, tensor_fn)
    files = [file_name for file_name, _ in shards]
    if len(shards) > 1:
        total = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for _, s, d in specs)
        weight_map = {name: file_name for file_name, group in shards for name, _, _ in group}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(folder, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
        files.append(INDEX_FILE)
    return files
