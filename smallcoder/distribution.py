"""Device meshes and layout maps for SmallCoder (JAX backend, `keras.distribution`).

Layouts, on a 2-D mesh with axes `("batch", "model")`:

- `data`: every weight replicated, the batch split over all devices
  (`keras.distribution.DataParallel`).
- `fsdp`: the batch and the hidden axis D of every matrix split over `batch`;
  optimizer state follows its weight (Keras creates it with the same layout).
- `tensor`: heads (N, K), MLP intermediate F and vocabulary V on `model`;
  with a `batch` axis > 1 that is data x tensor parallel.
- `fsdp_tensor`: both, the 2-D layout (D on `batch`, N/K/F/V on `model`).

Kernel shapes (D hidden, N query heads, K kv heads, H head dim, F MLP, V vocab)::

    token_embedding/embeddings          (V, D)
    token_embedding/reverse_embeddings  (D, V)    untied output projection
    attention/query/kernel              (D, N, H)
    attention/key|value/kernel          (D, K, H)
    attention/attention_output/kernel   (N, H, D)
    feedforward_gate|intermediate       (D, F)
    feedforward_output/kernel           (F, D)
    *norm/scale                         (D,)      replicated

LoRA adapters (`smallcoder.training.lora`) of a kernel of shape S are
`lora_kernel_a` S[:-1] + (r,) and `lora_kernel_b` (r, S[-1]): each keeps the
split of the kernel axes it shares with it, and the rank axis r is replicated
(e.g. `query` a (D, N, r) as the kernel's (D, N), b (r, H) replicated).

An axis is only split when the mesh axis divides it (e.g. K = 2 kv heads on a
4-way `model` axis stay replicated), so every layout is valid for every preset.

Several hosts (a TPU pod slice, a GPU cluster): every process joins the job
first (`smallcoder.multihost.initialize`, the `--coordinator` flags of the
CLI), then builds the same mesh over all devices of the job, as here. Each
process feeds only the batch rows its own devices hold (`process_rows`), and
Keras assembles the global arrays (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import re

LAYOUTS = ("data", "fsdp", "tensor", "fsdp_tensor")
AXES = ("batch", "model")


def parse_mesh(mesh, num_devices, layout):
    """`"2x4"` | `"auto"` -> `(data, model)`; auto puts every device on one axis."""
    if mesh in (None, "auto"):
        return (1, num_devices) if layout == "tensor" else (num_devices, 1)
    match = re.fullmatch(r"(\d+)x(\d+)", str(mesh))
    if not match:
        raise ValueError(f"mesh must be 'auto' or DATAxMODEL such as 2x4, got {mesh!r}.")
    shape = (int(match.group(1)), int(match.group(2)))
    if shape[0] * shape[1] != num_devices:
        raise ValueError(f"mesh {mesh} needs {shape[0] * shape[1]} devices; {num_devices} are available.")
    return shape


def device_mesh(shape, devices=None):
    """A `keras.distribution.DeviceMesh` of `shape` (data, model) with axes `("batch", "model")`."""
    import keras

    devices = devices if devices is not None else keras.distribution.list_devices()
    count = shape[0] * shape[1]
    if len(devices) < count:
        raise ValueError(f"mesh {shape[0]}x{shape[1]} needs {count} devices; {len(devices)} are available.")
    return keras.distribution.DeviceMesh(shape, AXES, devices=devices[:count])


def weight_specs(config, layout, mesh_shape):
    """`{path regex: spec}` for a backbone config, one tuple entry per kernel axis.

    Args:
        config: the backbone config (`vocabulary_size`, `hidden_dim`,
            `num_query_heads`, `num_key_value_heads`, `intermediate_dim`).
        layout: one of `LAYOUTS`.
        mesh_shape: `(data, model)`.

    Returns:
        Ordered dict of regex (matched against the whole variable path, as
        `LayoutMap` does with `re.fullmatch`) -> spec tuple (`"batch"`, `"model"` or None per axis).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}.")
    data, model = mesh_shape
    fsdp = layout in ("fsdp", "fsdp_tensor")
    tensor = layout in ("tensor", "fsdp_tensor")

    def on(axis_name, size, enabled):
        """`axis_name` if the layout splits this axis and the mesh divides it."""
        mesh_size = data if axis_name == "batch" else model
        return axis_name if enabled and mesh_size > 1 and size % mesh_size == 0 else None

    D, V, F = config["hidden_dim"], config["vocabulary_size"], config["intermediate_dim"]
    N = config["num_query_heads"]
    K = config.get("num_key_value_heads") or N
    d = on("batch", D, fsdp)
    v, f = on("model", V, tensor), on("model", F, tensor)
    n, k = on("model", N, tensor), on("model", K, tensor)
    kernels = {
        r".*/attention/query/": (d, n, None),
        r".*/attention/(key|value)/": (d, k, None),
        r".*/attention/attention_output/": (n, None, d),
        r".*/feedforward_(gate|intermediate)/": (d, f),
        r".*/feedforward_output/": (f, d),
    }
    specs = {
        r"token_embedding/embeddings": (v, d),
        r"token_embedding/reverse_embeddings": (d, v),
    }
    for prefix, spec in kernels.items():
        specs[prefix + "kernel"] = spec
        specs[prefix + "lora_kernel_a"] = spec[:-1] + (None,)  # kernel axes but the last, then r
        specs[prefix + "lora_kernel_b"] = (None, spec[-1])  # r, then the kernel's last axis
    specs[r".*norm/scale"] = (None,)
    return specs


def layout_map(config, layout, mesh):
    """A `keras.distribution.LayoutMap` for `layout` on `mesh` (a `DeviceMesh`)."""
    import keras

    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, spec in weight_specs(config, layout, tuple(mesh.shape)).items():
        layout_map[pattern] = spec
    return layout_map


def make_distribution(config, layout, mesh="auto", devices=None):
    """The `keras.distribution.Distribution` for a recipe's `distribution:` section.

    Args:
        config: backbone config dict (see `weight_specs`).
        layout: `data`, `fsdp`, `tensor` or `fsdp_tensor`.
        mesh: `"auto"` or `"DATAxMODEL"`.
        devices: defaults to `keras.distribution.list_devices()`.

    Returns:
        `DataParallel` for `data`, otherwise `ModelParallel` over a
        `("batch", "model")` mesh with the batch split over `batch`. Input is
        not auto-sharded: each process passes its own rows (`process_rows`).

    Example:
    ```python
    dist = make_distribution(backbone.get_config(), "fsdp_tensor", "2x4")
    with dist.scope():
        lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    ```
    """
    import keras

    if keras.config.backend() != "jax":
        raise ValueError(f"keras.distribution layouts need the JAX backend; this is {keras.config.backend()!r}.")
    devices = devices if devices is not None else keras.distribution.list_devices()
    shape = parse_mesh(mesh, len(devices), layout)
    if layout == "data":
        if shape[1] != 1:
            raise ValueError(f"layout data replicates weights; use a mesh of Nx1, got {mesh}.")
        # DataParallel wants a 1-D mesh.
        mesh_1d = keras.distribution.DeviceMesh((shape[0],), ["batch"], devices=devices[: shape[0]])
        return keras.distribution.DataParallel(device_mesh=mesh_1d, auto_shard_dataset=False)
    device_mesh_ = device_mesh(shape, devices)
    return keras.distribution.ModelParallel(
        layout_map=layout_map(config, layout, device_mesh_), batch_dim_name="batch",
        auto_shard_dataset=False,
    )


def mesh_shape(distribution):
    """`(data, model)` of a distribution's mesh (a 1-D data mesh is `(N, 1)`), or None."""
    if distribution is None:
        return None
    shape = tuple(distribution.device_mesh.shape)
    return shape if len(shape) == 2 else (shape[0], 1)


def process_rows(distribution, batch, sequence_length):
    """`(start, stop)`: the rows of a global `(batch, sequence_length)` batch this process's devices hold.

    All of them with one process or no distribution; with several processes
    the block that the data layout puts on this process's devices (every row
    when the batch axis does not cross processes).

    Raises:
        ValueError: this process's rows are not one block.
    """
    if distribution is None:
        return 0, batch
    import jax

    if jax.process_count() == 1:
        return 0, batch
    shape = (batch, sequence_length)
    sharding = distribution.get_data_layout(shape).backend_layout
    rows = {(s.start or 0, batch if s.stop is None else s.stop)
            for s, *_ in sharding.addressable_devices_indices_map(shape).values()}
    start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
    if sum(b - a for a, b in rows) != stop - start:
        raise ValueError(f"process {jax.process_index()} holds batch rows {sorted(rows)}, which are "
                         "not one block; order the mesh devices by process.")
    return start, stop
