"""`smallcoder plan`: steps, tokens, per-device memory and wall time of a recipe on a mesh.

Memory per device, in bytes (P parameters, s sequence, b micro-batch per
data shard, h hidden, a heads, L layers, F MLP, V vocab, t model-axis size):

- parameters 4P, gradients 4P, AdamW moments 8P (+ 4P accumulators with
  gradient accumulation), all float32 (`mixed_bfloat16` keeps float32
  variables) and divided by how many devices shard them in the layout:
  `data` 1, `fsdp` DATA, `tensor` MODEL, `fsdp_tensor` DATA x MODEL;
- with LoRA (`model.lora`, A adapter parameters): parameters 4P + 4A, but
  gradients 4A and AdamW moments 8A only (the base is frozen); the
  activations stay (their gradients still flow through every layer), and
  the compute is 4 FLOPs per frozen weight and token instead of 6;
- activations, bf16, per layer (Korthikanti et al. 2022, + SwiGLU's extra
  F-wide tensor): `s·b·h·(10 + 24/t + 5·a·s/(h·t)) + 4·s·b·F/t`; with
  rematerialisation only each layer's input `2·s·b·h` is kept, plus one
  layer's full set during recomputation (the recipe's `model.remat: full`);
- logits and their gradient in float32: `8·s·b·V/t`;
- with `training.microbatches` M > 1, the activation terms use b/M (one
  in-step microbatch is alive at a time) and the gradients count twice
  (the running sum and the current microbatch's).

Wall time = FLOPs per token (see `training.flops`) x tokens / (devices x peak x MFU).

Host memory per process (H hosts, the devices split evenly among them):

- data: each of the host's `data_streams / H` streams keeps, per source, the
  chunk being consumed and one read ahead, each up to 2 MiB of text and its
  int32 tokens (`smallcoder.data.documents.CHUNK_CHARS`), and the shuffle
  buffer's raw records plus the rows decoded from its 16 open shards
  (`smallcoder.data.order`), taken as 4 KiB each (a web page's size);
- checkpoint: an asynchronous save first copies the host's shards of the
  weights and AdamW state into host memory (its devices' share);
- export (process 0 only): the gathered float32 weights and the local model
  built from them, `2 x 4P`.
"""

from __future__ import annotations

from smallcoder.models.sizes import parameter_count
from smallcoder.training.flops import DEVICES, flops_per_token, peak_flops

__all__ = ["format_plan", "parameter_count", "plan"]

HEADROOM = 0.9  # fraction of device memory a plan may use (XLA scratch, fragmentation)


def host_memory(recipe, config, state_per_device, devices, hosts):
    """`{"data", "checkpoint", "export"}`: bytes of host memory per process (see the module doc)."""
    from smallcoder.data.config import DEFAULT_SHUFFLE_BUFFER
    from smallcoder.data.documents import CHUNK_CHARS
    from smallcoder.data.order import INTERLEAVE
    from smallcoder.data.sources import PARQUET_BATCH_ROWS

    sources = len(recipe["data"].get("sources") or [None])
    streams_per_host = -(-recipe.data_streams // hosts)
    chunk = CHUNK_CHARS * (1 + 4)  # the text, then at most one int32 token per character
    buffered = (recipe["data"].get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)
                + INTERLEAVE * PARQUET_BATCH_ROWS)  # records held, 4 KiB each
    return {
        "data": streams_per_host * sources * (2 * chunk + buffered * 4096),
        "checkpoint": state_per_device * devices // hosts,
        "export": 2 * 4 * parameter_count(config),
    }


def plan(recipe, config, mesh, device, layout=None, mfu=0.4, hosts=1):
    """A dict of the numbers `smallcoder plan` prints.

    Args:
        recipe: a `Recipe`.
        config: its backbone config.
        mesh: `(data, model)`.
        device: a `DEVICES` key or `"cpu"`.
        layout: overrides `distribution.layout`.
        mfu: model FLOPs utilisation assumed for the wall time.
        hosts: processes the devices are spread over (a TPU pod slice's VMs).
    """
    data, model = mesh
    layout = layout or recipe["distribution.layout"]
    if layout in (None, "none"):
        layout = "data"
    devices = data * model
    if hosts < 1 or devices % hosts:
        raise ValueError(f"{devices} devices do not split evenly over {hosts} hosts.")
    shards = {"data": 1, "fsdp": data, "tensor": model, "fsdp_tensor": data * model}[layout]
    t = model if layout in ("tensor", "fsdp_tensor") else 1
    accumulation = recipe["training.gradient_accumulation_steps"]
    s = recipe["training.sequence_length"]
    if recipe.micro_batch % data:
        raise ValueError(f"micro-batch {recipe.micro_batch} does not split over {data} data shards.")
    b = recipe.micro_batch // data
    microbatches = recipe["training.microbatches"]
    rows = b / microbatches  # activations are alive for one in-step microbatch at a time
    h, a, L = config["hidden_dim"], config["num_query_heads"], config["num_layers"]
    F, V = config["intermediate_dim"], config["vocabulary_size"]

    P = parameter_count(config)
    rank = recipe.lora_rank
    trained = P
    if rank:
        from smallcoder.training.lora import adapter_parameter_count

        trained = adapter_parameter_count(config, rank, recipe["model.lora.targets"])
    params = 4 * (P + (trained if rank else 0)) / shards
    grads = (8 if microbatches > 1 else 4) * trained / shards  # + the summed gradients of the microbatches
    optimizer = (8 + (4 if accumulation > 1 else 0)) * trained / shards
    layer = s * rows * h * (10 + 24 / t + 5 * a * s / (h * t)) + 4 * s * rows * F / t
    logits = 8 * s * rows * V / t
    activations = L * layer + logits
    activations_remat = L * 2 * s * rows * h + layer + logits

    if device == "cpu":
        import psutil

        (peak, _), memory = peak_flops("cpu"), psutil.virtual_memory().total
        devices_for_time = 1  # a measured host peak already covers every core
    else:
        peak, memory = DEVICES[device]["peak_flops"], DEVICES[device]["memory"]
        devices_for_time = devices
    fixed = params + grads + optimizer
    remat = recipe.remat
    flops = flops_per_token(config, s, frozen_base=bool(rank)) * recipe.steps * recipe.tokens_per_step
    return {
        "recipe": recipe.name, "layout": layout, "mesh": f"{data}x{model}", "device": device,
        "devices": devices, "hosts": hosts, "parameters": P, "trained_parameters": trained,
        "lora": {"rank": rank, "targets": list(recipe["model.lora.targets"])} if rank else None,
        "steps": recipe.steps,
        "tokens": recipe.steps * recipe.tokens_per_step, "micro_batch_per_device": b,
        "memory": {
            "parameters": params, "gradients": grads, "optimizer": optimizer,
            "activations": activations, "activations_remat": activations_remat,
            "total": fixed + activations, "total_remat": fixed + activations_remat,
            "device": memory,
        },
        "host_memory": host_memory(recipe, config, params + optimizer, devices, hosts),
        "fits": fixed + activations <= HEADROOM * memory,
        "fits_remat": fixed + activations_remat <= HEADROOM * memory,
        "remat": remat,  # the recipe's model.remat: which of the two the run uses
        "fits_recipe": fixed + (activations_remat if remat else activations) <= HEADROOM * memory,
        "flops": flops, "peak_flops": peak, "mfu": mfu,
        "wall_s": flops / (devices_for_time * peak * mfu),
    }


def _gib(n):
    return f"{n / 2**30:8.2f} GiB"


def _duration(seconds):
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return (f"{days}d " if days else "") + f"{hours}h {rest // 60:02d}m"


def format_plan(p):
    m, h = p["memory"], p["host_memory"]
    verdict = {True: "fits", False: "does NOT fit"}
    return "\n".join([
        f"plan {p['recipe']}: {p['layout']} layout on a {p['mesh']} mesh of {p['devices']} {p['device']}",
        f"  parameters        {p['parameters']:,}",
        *([f"  lora              rank {p['lora']['rank']} on {', '.join(p['lora']['targets'])}: "
           f"{p['trained_parameters']:,} trained parameters ({100 * p['trained_parameters'] / p['parameters']:.2f}%); "
           "gradients and AdamW state for those only"] if p.get("lora") else []),
        f"  steps             {p['steps']:,} ({p['tokens']:,} tokens), micro-batch {p['micro_batch_per_device']} "
        "per data shard",
        "  memory per device",
        f"    parameters      {_gib(m['parameters'])}",
        f"    gradients       {_gib(m['gradients'])}",
        f"    optimizer       {_gib(m['optimizer'])}",
        f"    activations     {_gib(m['activations'])}   (with remat {_gib(m['activations_remat']).strip()})",
        f"    total           {_gib(m['total'])}   (with remat {_gib(m['total_remat']).strip()})",
        f"    device          {_gib(m['device'])}   -> {verdict[p['fits']]}; with remat "
        f"{verdict[p['fits_remat']]} (budget {HEADROOM:.0%})",
        f"  model.remat       {p['remat'] or 'null'} -> the run {verdict[p['fits_recipe']]}"
        + ("; set model.remat: full (or --set model.remat=full)"
           if not p["fits_recipe"] and not p["remat"] and p["fits_remat"] else ""),
        f"  memory per host ({p['hosts']} host(s), {p['devices'] // p['hosts']} device(s) each)",
        f"    data streams    {_gib(h['data'])}",
        f"    checkpoint copy {_gib(h['checkpoint'])}   (asynchronous save: the host's shards of "
        "weights + AdamW state)",
        f"    final export    {_gib(h['export'])}   (process 0: the gathered float32 weights)",
        f"  compute           {p['flops']:.3e} FLOPs at {100 * p['mfu']:.0f}% MFU of "
        f"{p['peak_flops'] / 1e12:,.1f} TFLOP/s per device",
        f"  wall time         {_duration(p['wall_s'])}",
    ])
