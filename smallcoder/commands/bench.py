"""`smallcoder bench ...`: speed figures measured against a reference in the same run."""

import click

from smallcoder.commands._multihost import join_job, multihost_options
from smallcoder.models.quantization import QUANTIZE_CHOICES


@click.group("bench")
def command():
    """Benchmarks: each prints its figure next to a reference run on the same machine."""


@command.command("data")
@click.option("--megabytes", default=8.0, show_default=True, help="Text to tokenize (demo code and prose).")
@click.option("--sequence-length", default=1024, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--repeats", default=5, show_default=True, help="Alternating runs; the best of each counts.")
@click.option("--tokenizer", "tokenizer_path", default=None, help="A tokenizer.json (default: the demo tokenizer).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def data(megabytes, sequence_length, batch_size, repeats, tokenizer_path, as_json):
    """Data pipeline tokens/s (jsonl -> tokenize -> pack) vs raw `tokenizers` encode_batch."""
    import json

    from smallcoder.data.bench import bench_data

    tokenizer = None
    if tokenizer_path:
        from smallcoder.tokenizer import SmallCoderTokenizer

        tokenizer = SmallCoderTokenizer(tokenizer_path)
    result = bench_data(tokenizer, megabytes=megabytes, sequence_length=sequence_length,
                        batch_size=batch_size, repeats=repeats)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"text: {result['documents']} documents, {result['megabytes']} MB, "
               f"{result['text_tokens']:,} tokens ({result['cores']} cores)")
    click.echo(f"raw tokenizers encode_batch      : {result['raw_tokens_per_s']:>12,} tokens/s")
    if "raw_fast_tokens_per_s" in result:
        click.echo(f"raw tokenizers encode_batch_fast : {result['raw_fast_tokens_per_s']:>12,} tokens/s")
    click.echo(f"data pipeline (jsonl -> packed)  : {result['pipeline_tokens_per_s']:>12,} "
               f"tokens/s ({result['shards']} shards, shuffle_buffer "
               f"{result['shuffle_buffer']:,})")
    click.echo(f"  the same in stored order       : {result['stored_order_tokens_per_s']:>12,} "
               f"tokens/s (shuffle_buffer 0; {result['ratio_stored_order']:.1%} of raw "
               "encode_batch)")
    click.echo(f"ratio: {result['ratio']:.1%} of raw encode_batch (target >= 80%); "
               f"by CPU time {result['cpu_ratio']:.1%}"
               + (f"; {result['ratio_vs_fast']:.1%} of encode_batch_fast" if "ratio_vs_fast" in result else ""))


@command.command("data-resume")
@click.option("--format", "file_type", type=click.Choice(["jsonl", "parquet"]), default="jsonl",
              show_default=True)
@click.option("--shards", default=64, show_default=True)
@click.option("--documents-per-shard", default=2000, show_default=True)
@click.option("--shuffle-buffer", default=None, type=int,
              help="Default: data.shuffle_buffer's default.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def data_resume(file_type, shards, documents_per_shard, shuffle_buffer, as_json):
    """Seconds to restore a data position and make the next batch, at depths of an epoch."""
    import json

    from smallcoder.data.bench import bench_resume
    from smallcoder.data.config import DEFAULT_SHUFFLE_BUFFER

    buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
    result = bench_resume(file_type=file_type, shards=shards,
                          documents_per_shard=documents_per_shard, shuffle_buffer=buffer)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['documents']:,} documents, {result['megabytes']} MB in "
               f"{result['shards']} {file_type} shards; shuffle_buffer {buffer:,}; "
               f"{result['tokens_per_byte']} tokens/byte")
    click.echo("depth    consumed (est. tokens)   restore + next batch   reading up to it")
    for row in result["depths"]:
        click.echo(f"{row['depth']:>5.0%}    {row['tokens']:>22,}   {row['restore_s']:>18.3f} s"
                   f"   {row['forward_s']:>14.2f} s")


def _config(preset, num_layers):
    from smallcoder.models.presets import preset_config

    try:
        config = preset_config(preset)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--preset") from e
    if num_layers:
        config["num_layers"] = num_layers
    return config


def _vs(value):
    """Whether to run transformers alongside; it shares the GPU, if any, with JAX."""
    if value not in (None, "hf"):
        raise click.BadParameter("the only reference is 'hf' (transformers + torch)", param_hint="--vs")
    if value == "hf":
        import os

        # JAX would otherwise reserve 75 % of the GPU up front, leaving torch the rest.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return value == "hf"


@command.command("train")
@click.option("--preset", default="smallcoder_303m", show_default=True, help="Built-in preset (random weights).")
@click.option("--num-layers", default=None, type=int, help="Override the preset's decoder block count.")
@click.option("--batch", default=4, show_default=True)
@click.option("--seq", default=1024, show_default=True)
@click.option("--steps", default=2, show_default=True, help="Timed steps per side (after one warm-up step).")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "mixed_bfloat16"]))
@click.option("--remat", default="none", show_default=True, type=click.Choice(["none", "full"]),
              help="Rematerialise each decoder block in the backward pass.")
@click.option("--microbatches", default=1, show_default=True,
              help="Run each step as this many sequential microbatches (both sides; one optimizer update).")
@click.option("--vs", "vs", default=None, help="Reference to run alongside: 'hf'.")
@click.option("--interleave/--one-after-other", default=True, show_default=True,
              help="Alternate steps of both sides (both models in memory), or run them one after the other.")
@click.option("--memory-analysis", is_flag=True, help="Also measure the step's activation memory with and "
              "without remat: XLA's compiled temp bytes (jax) or the bytes autograd saves (torch); on jax "
              "also the whole step's compiled peak (weights, AdamW state, gradients, activations).")
@click.option("--memory-only", is_flag=True, help="Only the --memory-analysis figures (compiled, no step run): "
              "for a batch that may not fit this machine.")
@click.option("--layout", default="none", show_default=True,
              type=click.Choice(["none", "data", "fsdp", "tensor", "fsdp_tensor"]),
              help="Train on a JAX device mesh (all devices of the job) with this layout.")
@click.option("--mesh", default="auto", show_default=True, help="DATAxMODEL for --layout, e.g. 4x1.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@multihost_options
def train(preset, num_layers, batch, seq, steps, dtype, remat, microbatches, vs, interleave, memory_analysis,
          memory_only, layout, mesh, as_json, coordinator, num_processes, process_id, heartbeat_timeout):
    """Training-step tokens/s, MFU and peak memory, vs transformers + torch.

    With --layout, the step runs on a mesh of every device of the job; in a
    multi-process job (see `recipe run --help`) the figures are the whole
    job's, printed by process 0.
    """
    import json

    from smallcoder import multihost

    echo = join_job(coordinator, num_processes, process_id, heartbeat_timeout)
    if multihost.process_count() > 1 and (vs or memory_only or memory_analysis):
        raise click.ClickException("--vs, --memory-analysis and --memory-only run in one process; "
                                   "leave them out of a multi-process job.")
    if multihost.process_count() > 1 and layout == "none":
        raise click.BadParameter("a multi-process job needs a device mesh: pass e.g. --layout fsdp",
                                 param_hint="--layout")

    from smallcoder.bench.report import format_memory, format_train
    from smallcoder.bench.train import bench_train, remat_memory
    from smallcoder.training.microbatching import check_microbatches

    config = _config(preset, num_layers)
    try:
        check_microbatches(batch, microbatches)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--microbatches") from e
    if memory_only:
        import keras

        try:
            memory = remat_memory(config, batch, seq, dtype=dtype, microbatches=microbatches)
        except ValueError as e:
            raise click.ClickException(str(e)) from e
        result = {"preset": preset, "config": config, "batch": batch, "seq": seq, "dtype": dtype,
                  "microbatches": microbatches,
                  "backend": keras.config.backend(), "memory_analysis": memory}
        click.echo(json.dumps(result) if as_json else "\n".join(
            [f"memory {preset} ({config['num_layers']} layers) batch {batch}x{seq} microbatches={microbatches} {dtype} "
             f"backend={result['backend']}", *format_memory(memory)]))
        return
    distribution = _distribution(config, layout, mesh)
    result = bench_train(config, batch, seq, steps=steps, dtype=dtype, remat=None if remat == "none" else remat,
                         vs_hf=_vs(vs), interleave=interleave, microbatches=microbatches,
                         distribution=distribution)
    result["preset"] = preset
    if distribution is not None:
        result.update(layout=layout, mesh="x".join(map(str, _mesh_shape(distribution))),
                      processes=multihost.process_count())
    if memory_analysis:
        try:
            result["memory_analysis"] = remat_memory(config, batch, seq, dtype=dtype, microbatches=microbatches)
        except ValueError as e:
            raise click.ClickException(str(e)) from e
    multihost.shutdown()
    echo(json.dumps(result) if as_json else format_train(result))


def _distribution(config, layout, mesh):
    if layout == "none":
        return None
    from smallcoder.distribution import make_distribution

    try:
        return make_distribution(config, layout, mesh)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--layout/--mesh") from e


def _mesh_shape(distribution):
    from smallcoder.distribution import mesh_shape

    return mesh_shape(distribution)


@command.command("checkpoint")
@click.option("--preset", default="smallcoder_303m", show_default=True, help="Built-in preset (random weights).")
@click.option("--saves", default=3, show_default=True, help="Checkpoints to write, one after the other.")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help="Where to write them (default: the system's temporary folder).")
@click.option("--lora-rank", default=None, type=int,
              help="Rank-R LoRA adapters on query and value: the checkpoint holds them (+ AdamW) only.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def checkpoint(preset, saves, directory, lora_rank, as_json):
    """Orbax checkpoint of weights + AdamW state: size, the part training waits for, the whole save."""
    import json

    from smallcoder.bench.checkpoint import bench_checkpoint

    result = bench_checkpoint(_config(preset, None), saves=saves, directory=directory, lora_rank=lora_rank)
    result["preset"] = preset
    if as_json:
        click.echo(json.dumps(result))
        return
    trained = (f"; LoRA rank {lora_rank}: {result['trained_parameters']:,} trained, the base frozen and not saved"
               if lora_rank else "")
    click.echo(f"checkpoint {preset} ({result['parameters']:,} parameters + AdamW state{trained}) in "
               f"{result['directory']}")
    for i, save in enumerate(result["saves"], 1):
        click.echo(f"save {i}: {save['bytes'] / 1e6:,.1f} MB; training blocked {save['blocking_s']:.3f} s, "
                   f"written in {save['total_s']:.2f} s")


@command.command("generate")
@click.option("--preset", default="smallcoder_303m", show_default=True, help="Built-in preset (random weights).")
@click.option("--num-layers", default=None, type=int, help="Override the preset's decoder block count.")
@click.option("--new-tokens", default=128, show_default=True)
@click.option("--prompts", "num_prompts", default=16, show_default=True, help="Prompts in the batched run.")
@click.option("--prompt-length", default=32, show_default=True, help="Longest prompt (others 1/2 to 1 of it).")
@click.option("--eval-case/--no-eval-case", default=True, show_default=True,
              help="Also time the evaluation's shape: 16 prompts of 100..300 tokens, 512 new tokens (where it fits "
              "the context).")
@click.option("--repeats", default=2, show_default=True, help="Timed runs per case (after a warm-up run).")
@click.option("--vs", "vs", default=None, help="Reference to run alongside: 'hf'.")
@click.option("--quantize", default=None, type=click.Choice(QUANTIZE_CHOICES),
              help="Decode with weight-only int8 weights ('int8-blocks': the decoder blocks only, the embedding "
              "and output projection float32); also reports the logit error and greedy agreement vs the "
              "float32 model (the reference stays float32).")
@click.option("--decoding", default="auto", show_default=True, type=click.Choice(["auto", "native", "xla"]),
              help="Kernels of the one-token steps: the native custom calls (JAX on x86-64 CPUs) or XLA's.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def generate(preset, num_layers, new_tokens, num_prompts, prompt_length, eval_case, repeats, vs, quantize, decoding,
             as_json):
    """Greedy prefill, decode and end-to-end tokens/s per case vs transformers `generate` and the roofline."""
    import json

    from smallcoder.bench.generate import bench_generate
    from smallcoder.bench.quantization import format_quantization
    from smallcoder.bench.report import format_generate

    result = bench_generate(_config(preset, num_layers), new_tokens=new_tokens, num_prompts=num_prompts,
                            prompt_length=prompt_length, repeats=repeats, vs_hf=_vs(vs), quantize=quantize,
                            eval_case=eval_case, decoding=decoding)
    result["preset"] = preset
    lines = [format_generate(result), *format_quantization(result)]
    click.echo(json.dumps(result) if as_json else "\n".join(lines))


@command.command("quantization")
@click.option("--model", "model_path", required=True,
              help="Trained model: a Keras preset folder or Hugging Face folder with its tokenizer.json.")
@click.option("--quantize", default="int8", show_default=True, type=click.Choice(QUANTIZE_CHOICES),
              help="The weight-only int8 form to check against the model's float32 self.")
@click.option("--tasks", default="humaneval", show_default=True, type=click.Choice(["humaneval", "mbpp", "demo"]),
              help="Whose prompts (chat format): a benchmark's first --limit tasks.")
@click.option("--limit", default=16, show_default=True, help="Prompts to compare on.")
@click.option("--new-tokens", default=64, show_default=True, help="Greedy tokens per prompt (stops at EOS).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (with both token lists).")
def quantization(model_path, quantize, tasks, limit, new_tokens, as_json):
    """Logit error and greedy agreement of a trained model's --quantize form vs float32, on benchmark prompts."""
    import json

    from smallcoder.commands._model import load_model_option

    causal_lm = load_model_option(model_path, dtype="float32", text_because="the prompts are text")
    from smallcoder.bench.quantization import check_quantization, format_quantization
    from smallcoder.eval.runner import BENCHMARKS

    benchmark = BENCHMARKS[tasks]
    texts = [benchmark.build_prompt(task) for task in benchmark.load_tasks(limit=limit)]
    causal_lm.compile(sampler="greedy")
    figures = check_quantization(causal_lm, causal_lm.tokenizer.encode_batch(texts), quantize, new_tokens)
    result = {"model": model_path, "dtype": quantize, "tasks": tasks, "new_tokens": new_tokens,
              "decoding": causal_lm.decoding, "quantization": {f"{tasks}, {len(texts)} prompts": figures}}
    click.echo(json.dumps(result) if as_json else "\n".join(format_quantization(result)))
