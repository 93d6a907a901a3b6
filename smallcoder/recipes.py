"""Training recipes: one YAML file per stage, a schema, `--set` overrides, stage chaining.

A recipe file names the file it `extends` (here `recipes/_defaults.yaml`, what
the four stages share; looked up beside the file, else among the package's
recipes, so a copied stage file still works) and overrides keys. Loading merges, in order: the
extended file, the stage file, the `demo:` blocks of both (with `--demo`), then
`--set key=value` overrides. Every key is checked against `SCHEMA` before
anything starts; errors name the file that set the key and the key.

Derived numbers are computed here, never typed in a recipe:
`steps = tokens // (global_batch * sequence_length)`, warmup and decay steps
from their fractions.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field

import yaml

STAGES = ("base", "code", "math", "sft")
RESERVED = "_defaults"

# === Schema ===
# A leaf is a tuple of accepted Python types (None allowed where listed) or a
# tuple of allowed string values (`Choice`). `data:` is checked by
# `smallcoder.data.validate_data_config`, which owns it.


class Choice(tuple):
    """Allowed string values of a key."""


_NUM = (int, float)
SCHEMA = {
    "description": (str,),
    "extends": (str,),
    "init_from": (str, type(None)),
    "output": (str,),
    "model": {"preset": (str,), "tokenizer": (str, type(None)), "eos_token": (str, type(None)),
              "dtype": (str,), "remat": Choice((None, "none", "full")),
              "lora": {"rank": (int, type(None)), "alpha": (int, float, type(None)), "targets": (list,)}},
    "training": {
        "tokens": (int, float, str),
        "sequence_length": (int,),
        "global_batch": (int,),
        "gradient_accumulation_steps": (int,),
        "microbatches": (int,),
        "data_streams": (int, str),
        "seed": (int,),
    },
    "optimizer": {
        "learning_rate": _NUM,
        "beta_1": _NUM,
        "beta_2": _NUM,
        "epsilon": _NUM,
        "weight_decay": _NUM,
        "exclude_from_weight_decay": (list,),
        "clipnorm": (int, float, type(None)),
    },
    "schedule": {
        "type": Choice(("cosine", "wsd", "constant")),
        "warmup": _NUM,
        "decay": _NUM,
        "min_learning_rate_ratio": _NUM,
    },
    "distribution": {
        "layout": Choice(("data", "fsdp", "tensor", "fsdp_tensor", "none")),
        "mesh": (str,),
    },
    "checkpoint": {"every_steps": (int,), "keep": (int,), "dir": (str, type(None))},
    "logging": {"every_steps": (int,), "tensorboard": (bool,)},
    "eval": {"every_steps": (int, type(None)), "validation_batches": (int, type(None)),
             "early_stop_patience": (int, type(None)), "tasks": (list,), "limit": (int, type(None)),
             "temperature": _NUM, "max_new_tokens": (int,)},
    "export": {"hf": (bool,), "dtype": (str,)},
    "sample": {"prompt": (str,), "max_new_tokens": (int,)},
    "data": dict,
    "demo": "demo",  # a partial recipe (any key above but `demo`, `extends`)
}
REQUIRED = ("model.preset", "training.tokens", "training.sequence_length", "training.global_batch", "data")


class RecipeError(ValueError):
    """A recipe problem, reported as `file: key: what is wrong and what to do`."""

    def __init__(self, where, key, message):
        super().__init__(f"{where}: {key}: {message}")
        self.where, self.key = where, key


def parse_tokens(value, where="recipe", key="training.tokens"):
    """`6.3B`, `500M`, `200K`, `1e9` or an int -> int tokens."""
    if isinstance(value, bool):
        raise RecipeError(where, key, f"must be a token count such as 6.3B, got {value!r}.")
    if isinstance(value, (int, float)):
        tokens = value
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([KMBT]?)\s*", str(value), re.I)
        if not match:
            raise RecipeError(where, key, f"must be a token count such as 6.3B, 500M or 200K, got {value!r}.")
        tokens = float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(2).upper()]
    if not math.isfinite(tokens) or tokens <= 0:
        raise RecipeError(where, key, f"must be positive, got {value!r}.")
    return int(round(tokens))


def format_tokens(tokens):
    """6_300_000_000 -> '6.3B'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= size:
            return f"{tokens / size:.1f}{unit}"
    return str(tokens)


# === Loading ===
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def recipes_dir():
    """The package's own recipes: `smallcoder/stage_recipes/` in an installed wheel (package data
    built from the repository's `recipes/`), else `recipes/` beside the package (a source checkout)."""
    for path in (os.path.join(_PACKAGE, "stage_recipes"), os.path.join(os.path.dirname(_PACKAGE), "recipes")):
        if os.path.isfile(os.path.join(path, f"{RESERVED}.yaml")):
            return path
    raise FileNotFoundError(f"The smallcoder package has lost its recipes (no {RESERVED}.yaml in "
                            f"{_PACKAGE}/stage_recipes); reinstall it.")


def recipe_folders():
    """Where a recipe name is looked up, first match wins: `$SMALLCODER_RECIPES`, `./recipes`,
    then the package's own (`recipes_dir()`)."""
    folders = [os.environ.get("SMALLCODER_RECIPES"), "recipes", recipes_dir()]
    found = []
    for folder in folders:
        if folder and os.path.isdir(folder) and os.path.abspath(folder) not in map(os.path.abspath, found):
            found.append(folder)
    return found


def list_recipes():
    """Names of the recipes in `recipe_folders()`, stages first in curriculum order."""
    names = {f[:-5] for folder in recipe_folders() for f in os.listdir(folder)
             if f.endswith(".yaml") and not f.startswith("_")}
    return sorted(names, key=lambda n: (STAGES.index(n) if n in STAGES else len(STAGES), n))


def _find(name):
    for folder in recipe_folders():
        path = os.path.join(folder, f"{name}.yaml")
        if os.path.isfile(path):
            return path
    return None


def recipe_path(name):
    """The YAML file of recipe `name`: a path as given, or `<name>.yaml` in `recipe_folders()`.

    Every command resolves recipe names through this one function.
    """
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"No recipe file {name!r}.")
        return name
    path = _find(name)
    if path is None:
        raise FileNotFoundError(
            f"No recipe {name!r} (looked in {', '.join(recipe_folders())}); known recipes: "
            f"{', '.join(list_recipes())}, or pass a path to a YAML file.")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_recipe_file(path):
    """One recipe file as a dict; invalid YAML, a key given twice or a non-mapping is a `RecipeError`."""
    with open(path) as f:
        try:
            content = yaml.load(f, Loader=_UniqueKeyLoader)
        except yaml.MarkedYAMLError as e:  # one line: where, what (PyYAML's own text spans lines)
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
            problem = ": ".join(str(p) for p in (e.context, e.problem) if p)
            raise RecipeError(path, where, f"not valid YAML: {problem}.") from None
        except yaml.YAMLError as e:
            raise RecipeError(path, "(file)", f"not valid YAML: {' '.join(str(e).split())}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise RecipeError(path, "(file)", "must be a mapping of keys at the top level.")
    return content


def _merge(base, override, origin, origins, prefix=""):
    """Deep-merge `override` into `base` in place; record who set each leaf in `origins`."""
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key == "data" and not prefix:
            # A stage's data section replaces the whole thing (mixtures do not merge).
            base[key] = copy.deepcopy(value)
            origins[dotted] = origin
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, origins, f"{dotted}.")
        else:
            base[key] = copy.deepcopy(value)
            origins[dotted] = origin
            if isinstance(value, dict):
                for sub in _leaves(value, f"{dotted}."):
                    origins[sub] = origin


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _load_chain(path, seen=()):
    """[(path, content), …] from the most basic `extends` to `path`."""
    content = read_recipe_file(path)
    if path in seen:
        raise RecipeError(path, "extends", "recipes extend each other in a loop.")
    parent = content.get("extends")
    if parent is None:
        return [(path, content)]
    if not isinstance(parent, str):
        raise RecipeError(path, "extends", f"must be a recipe name such as _defaults, got {parent!r}.")
    parent_path = os.path.join(os.path.dirname(path), f"{parent}.yaml")
    if not os.path.isfile(parent_path):
        # A stage file copied out of the package to change it still extends the package's defaults.
        packaged = os.path.join(recipes_dir(), f"{parent}.yaml")
        if not os.path.isfile(packaged):
            raise RecipeError(path, "extends", f"no file {parent_path!r} to extend, nor {parent!r} among "
                              f"the package's recipes ({recipes_dir()}).")
        parent_path = packaged
    return _load_chain(parent_path, seen + (path,)) + [(path, content)]


def parse_set(items):
    """`["a.b=1", …]` -> `[("a.b", 1), …]`, values parsed as YAML (`1e-4`, `true`, `[x]`)."""
    parsed = []
    for item in items or ():
        if "=" not in item:
            raise RecipeError("--set", item, "expected key=value, e.g. --set training.tokens=1M.")
        key, value = item.split("=", 1)
        try:
            value = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as e:
            raise RecipeError("--set", key, f"value {value!r} is not valid YAML: {e}") from e
        parsed.append((key.strip(), value))
    return parsed


def _set_dotted(tree, key, value, origins):
    """Set `a.b.c` in `tree`; sections it creates are recorded as set by `--set` (so an unknown
    section is blamed on `--set`, not on the recipe file)."""
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1], 1):
        node = tree.get(part)
        if node is None:
            node = tree[part] = {}
            origins[".".join(parts[:depth])] = "--set"
        if not isinstance(node, dict):
            raise RecipeError("--set", key, f"{part!r} is not a section.")
        tree = node
    tree[parts[-1]] = value


# === Validation ===
def _type_names(types):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "a list", dict: "a mapping", type(None): "null"}
    if float in types:
        types = tuple(t for t in types if t is not int)
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _check(tree, schema, origins, default_where, prefix=""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        where = origins.get(dotted) or default_where
        if key not in schema:
            raise RecipeError(where, dotted, f"unknown key; expected one of {sorted(schema)}.")
        spec = schema[key]
        if spec == "demo":
            if not isinstance(value, dict):
                raise RecipeError(where, dotted, "must be a mapping of recipe keys to use with --demo.")
            demo_schema = {k: v for k, v in SCHEMA.items() if k not in ("demo", "extends")}
            _check(value, demo_schema, origins, default_where, f"{dotted}.")
        elif spec is dict:
            if not isinstance(value, dict):
                raise RecipeError(where, dotted, "must be a mapping.")
        elif isinstance(spec, dict):
            if not isinstance(value, dict):
                raise RecipeError(where, dotted, f"must be a mapping with keys {sorted(spec)}.")
            _check(value, spec, origins, default_where, f"{dotted}.")
        elif isinstance(spec, Choice):
            if isinstance(value, bool) or value not in spec:
                allowed = ", ".join("null" if v is None else str(v) for v in spec)
                raise RecipeError(where, dotted, f"must be one of {allowed}; got {value!r}.")
        else:
            ok = isinstance(value, spec) and not (isinstance(value, bool) and bool not in spec)
            if not ok:
                raise RecipeError(where, dotted, f"must be {_type_names(spec)}, got {value!r}.")


def _get(tree, dotted):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


# === The resolved recipe ===
@dataclass
class Recipe:
    """A validated recipe with its derived numbers.

    `config` is the merged tree (demo blocks and `--set` applied, `demo:`
    removed); `origins` maps each dotted key to the file (or `--set`) that set it.
    """

    name: str
    path: str
    config: dict
    origins: dict
    demo: bool = False
    overrides: list = field(default_factory=list)
    data_files: list = field(default_factory=list)  # `--data`: they replace the mixture (demo too)

    def __getitem__(self, dotted):
        return _get(self.config, dotted)

    def where(self, dotted):
        return self.origins.get(dotted, self.path)

    # --- derived numbers ---
    @property
    def tokens(self):
        return parse_tokens(self["training.tokens"], self.where("training.tokens"))

    @property
    def tokens_per_step(self):
        return self["training.global_batch"] * self["training.sequence_length"]

    @property
    def steps(self):
        """Optimizer steps: tokens // (global_batch * sequence_length)."""
        return self.tokens // self.tokens_per_step

    @property
    def remat(self):
        """`model.remat` as `SmallCoderBackbone` takes it: None or `"full"` (`"none"` means None)."""
        value = self["model.remat"]
        return None if value in (None, "none") else value

    @property
    def demo_data(self):
        """Whether the data comes from the demo corpora: `--demo` without `--data`."""
        return self.demo and not self.data_files

    @property
    def lora_rank(self):
        """`model.lora.rank`, or None (every weight trains)."""
        return self["model.lora.rank"]

    @property
    def micro_batch(self):
        return self["training.global_batch"] // self["training.gradient_accumulation_steps"]

    @property
    def data_streams(self):
        """Data streams making up each micro-batch (`training.data_streams`; auto: see `streams`)."""
        from smallcoder.data.streams import auto_streams

        value = self["training.data_streams"]
        return auto_streams(self.micro_batch) if value in (None, "auto") else value

    @property
    def warmup_steps(self):
        return int(round(self["schedule.warmup"] * self.steps))

    @property
    def decay_steps(self):
        """Steps in the final decay: the rest after warmup for cosine, `decay` x steps for wsd."""
        kind = self["schedule.type"]
        if kind == "cosine":
            return self.steps - self.warmup_steps
        if kind == "wsd":
            return int(round(self["schedule.decay"] * self.steps))
        return 0

    @property
    def output_dir(self):
        return self["output"].format(name=self.name)

    def init_from_stage(self):
        """The stage `init_from` names (its `<output>/model` folder), or None."""
        init = self["init_from"]
        if init is not None and (init in STAGES or (os.sep not in init and _find(init) is not None)):
            return init
        return None

    def init_from_dir(self):
        """The model source to start from (a folder, or a Hugging Face Hub id), or None
        (from scratch / `model.preset`).

        A stage name means `<that stage's output>/model`, so `recipe run code`
        after `recipe run base` chains by itself.
        """
        init = self["init_from"]
        if init is None:
            return None
        stage = self.init_from_stage()
        return os.path.join(self["output"].format(name=stage), "model") if stage else init

    def model_source(self):
        """Where the run's weights come from: `init_from` (resolved), else `model.preset`."""
        return self.init_from_dir() or self["model.preset"]

    def derived(self):
        return {
            "tokens": self.tokens,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.steps,
            "micro_batch": self.micro_batch,
            "data_streams": self.data_streams,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "stable_steps": self.steps - self.warmup_steps
            - (self.decay_steps if self["schedule.type"] == "wsd" else 0),
        }

    def ordered_config(self):
        """`config` with its top-level keys in schema order (description first, data last)."""
        return {k: self.config[k] for k in SCHEMA if k in self.config}

    def describe(self, output_dir=None):
        """The resolved recipe as YAML, then its derived numbers (`output_dir`: where this run writes,
        when `--output` names another folder than the recipe's `output`)."""
        d = self.derived()
        tokens = f"{format_tokens(d['tokens'])} ({d['tokens']:,})"
        lines = [
            f"# recipe {self.name} ({self.path}){' --demo' if self.demo else ''}",
            yaml.safe_dump(self.ordered_config(), sort_keys=False, default_flow_style=None, width=100).rstrip(),
            "",
            "# derived",
            f"tokens:            {tokens}",
            f"tokens per step:   {d['tokens_per_step']:,} = global_batch {self['training.global_batch']} "
            f"x sequence_length {self['training.sequence_length']}",
            f"steps:             {d['steps']:,} = tokens // tokens per step",
            f"micro-batch:       {d['micro_batch']} x {self['training.gradient_accumulation_steps']} "
            f"accumulation steps; each run as {self['training.microbatches']} in-step microbatch(es)",
            f"data streams:      {d['data_streams']} of {d['micro_batch'] // d['data_streams']} row(s) each "
            f"({'auto' if self['training.data_streams'] in (None, 'auto') else 'set'}; the same batches "
            "for any process count)",
            f"warmup steps:      {d['warmup_steps']:,} ({self['schedule.warmup']:g} of steps)",
        ]
        if self["schedule.type"] == "wsd":
            lines.append(f"stable steps:      {d['stable_steps']:,}")
            lines.append(f"decay steps:       {d['decay_steps']:,} ({self['schedule.decay']:g} of steps)")
        elif self["schedule.type"] == "cosine":
            lines.append(f"cosine decay steps: {d['decay_steps']:,}")
        lines.append(f"init from:         {self.model_source()}")
        if self.lora_rank:
            lines.append(f"lora:              rank {self.lora_rank}, alpha {self['model.lora.alpha'] or self.lora_rank}"
                         f" on {', '.join(self['model.lora.targets'])}: only the adapters train")
        if self.data_files:
            lines.append(f"data files:        {', '.join(self.data_files)} (--data: they replace the mixture)")
        lines.append(f"output:            {output_dir or self.output_dir}")
        return "\n".join(lines)


def load_recipe(name, *, demo=False, overrides=(), check_init=True, data_files=(), validation_files=()):
    """Load, merge and validate recipe `name` (a name in `recipes/` or a YAML path).

    Args:
        name: `base`, `code`, `math`, `sft`, or a path to a recipe file.
        demo: apply the `demo:` blocks (offline demo sources, tiny preset).
        overrides: `["training.tokens=1M", …]` (`--set`), applied last.
        data_files: `--data`: local jsonl/parquet files that replace the
            recipe's mixture (with `demo` too; see `smallcoder.data.files`).
        validation_files: `--validation-data`: the validation split's files
            (default: `data.validation_fraction` of `data_files` held out).
        check_init: fail if `init_from` names a stage whose model folder is
            missing. With `demo=True` a missing demo checkpoint is not an
            error: the run starts from scratch (the runner says so).

    Raises:
        RecipeError: naming the file (or `--set`) and the key; a bad `data:`
            section raises `ValueError` in the same `file: key: message` form.
        FileNotFoundError: no such recipe.
    """
    path = recipe_path(name)
    stage = os.path.splitext(os.path.basename(path))[0]
    if stage == RESERVED:
        raise RecipeError(path, "(file)", "is the shared defaults, not a stage; run base, code, math or sft.")
    config, origins = {}, {}
    chain = _load_chain(path)
    for file_path, content in chain:
        # Check each file alone first, so an error names the file it is in.
        _check(content, SCHEMA, {}, file_path)
        _merge(config, {k: v for k, v in content.items() if k != "demo"}, file_path, origins)
    if demo:
        for file_path, content in chain:
            if "demo" in content:
                _merge(config, content["demo"], f"{file_path} (demo)", origins)
    config.pop("demo", None)
    config.pop("extends", None)
    parsed = parse_set(overrides)
    for key, value in parsed:
        _set_dotted(config, key, value, origins)
        origins[key] = "--set"
    _check(config, SCHEMA, origins, path)
    if validation_files and not data_files:
        raise RecipeError("--validation-data", "data.validation_sources", "needs --data (the training files).")
    if data_files:
        from smallcoder.data.files import apply_data_files

        if not isinstance(config.get("data"), dict):
            raise RecipeError(path, "data", "missing; the recipe needs a data section (format) for --data.")
        config["data"] = apply_data_files(config["data"], list(data_files), list(validation_files))
        origins.update({"data": "--data", "data.sources": "--data"})

    for key in REQUIRED:
        if _get(config, key) is None:
            raise RecipeError(path, key, "missing; set it in the recipe or its defaults.")
    recipe = Recipe(stage, path, config, origins, demo=demo, overrides=list(overrides),
                    data_files=list(data_files))
    _check_values(recipe)
    if check_init:
        check_init_from(recipe)
    return recipe


def _check_values(recipe):
    def fail(key, message):
        raise RecipeError(recipe.where(key), key, message)

    recipe.tokens  # noqa: B018  (parses and checks the token count)
    for key in ("training.sequence_length", "training.global_batch", "training.gradient_accumulation_steps",
                "training.microbatches", "checkpoint.every_steps", "checkpoint.keep", "logging.every_steps"):
        if recipe[key] is not None and recipe[key] < 1:
            fail(key, f"must be at least 1, got {recipe[key]}.")
    accum = recipe["training.gradient_accumulation_steps"]
    if recipe["training.global_batch"] % accum:
        fail("training.gradient_accumulation_steps",
             f"must divide global_batch ({recipe['training.global_batch']}), got {accum}.")
    if recipe.micro_batch % recipe["training.microbatches"]:
        fail("training.microbatches", f"must divide the micro-batch (global_batch / gradient_accumulation_steps "
             f"= {recipe.micro_batch}), got {recipe['training.microbatches']}.")
    if recipe.steps < 1:
        fail("training.tokens", f"{recipe.tokens:,} tokens is less than one step of "
             f"{recipe.tokens_per_step:,} tokens (global_batch x sequence_length).")
    for key in ("optimizer.beta_1", "optimizer.beta_2"):
        if not 0 <= recipe[key] < 1:
            fail(key, f"must be in [0, 1), got {recipe[key]}.")
    for key in ("schedule.warmup", "schedule.decay", "schedule.min_learning_rate_ratio"):
        if recipe[key] is not None and not 0 <= recipe[key] <= 1:
            fail(key, f"is a fraction and must be in [0, 1], got {recipe[key]}.")
    if recipe["schedule.type"] == "wsd" and recipe["schedule.warmup"] + recipe["schedule.decay"] > 1:
        fail("schedule.decay", "warmup + decay fractions exceed 1.")
    if not all(isinstance(s, str) for s in recipe["optimizer.exclude_from_weight_decay"] or []):
        fail("optimizer.exclude_from_weight_decay", "must be a list of variable-name substrings.")
    streams = recipe["training.data_streams"]
    if streams not in (None, "auto") and (isinstance(streams, str) or streams < 1
                                          or recipe.micro_batch % streams):
        fail("training.data_streams", f"must be auto or a positive divisor of the micro-batch "
             f"({recipe.micro_batch}), got {streams!r}.")
    mesh = recipe["distribution.mesh"]
    if mesh not in (None, "auto") and not re.fullmatch(r"\d+x\d+", mesh):
        fail("distribution.mesh", f"must be 'auto' or DATAxMODEL such as 2x4, got {mesh!r}.")
    tasks = recipe["eval.tasks"] or []
    if tasks:
        from smallcoder.eval.runner import BENCHMARKS

        unknown = [t for t in tasks if t not in BENCHMARKS]
        if unknown:
            fail("eval.tasks", f"unknown task(s) {unknown}; expected some of {sorted(BENCHMARKS)}.")
    from smallcoder.data import validate_data_config

    validate_data_config(recipe["data"], recipe.where("data"))
    if recipe.demo_data and not recipe["data"].get("demo"):
        fail("data.demo", "missing; --demo needs a list of demo sources (type: demo).")
    for key in ("eval.every_steps", "eval.early_stop_patience"):
        if recipe[key] is not None and recipe[key] < 1:
            fail(key, f"must be at least 1 or null, got {recipe[key]}.")
    if (recipe["eval.temperature"] or 0) < 0:
        fail("eval.temperature", f"must be 0 (greedy) or more, got {recipe['eval.temperature']}.")
    if recipe["eval.max_new_tokens"] is not None and recipe["eval.max_new_tokens"] < 1:
        fail("eval.max_new_tokens", f"must be at least 1, got {recipe['eval.max_new_tokens']}.")
    if recipe["eval.validation_batches"] is not None and recipe["eval.validation_batches"] < 0:
        fail("eval.validation_batches", f"must be 0 (no validation), a positive count or null (the whole "
             f"split), got {recipe['eval.validation_batches']}.")
    _check_lora(recipe, fail)


def _check_lora(recipe, fail):
    from smallcoder.training.lora import TARGETS

    rank = recipe.lora_rank
    if rank is None:
        return
    if rank < 1:
        fail("model.lora.rank", f"must be a positive integer (or null: every weight trains), got {rank}.")
    alpha = recipe["model.lora.alpha"]
    if alpha is not None and (isinstance(alpha, bool) or alpha <= 0):
        fail("model.lora.alpha", f"must be positive (or null: alpha = rank), got {alpha!r}.")
    targets = recipe["model.lora.targets"] or []
    unknown = [t for t in targets if t not in TARGETS]
    if not targets or unknown:
        fail("model.lora.targets", f"must be a non-empty list of {list(TARGETS)}, got {targets!r}.")


def check_init_from(recipe):
    """Raise unless the run's model source can be loaded: `init_from` (a stage's model folder,
    a Keras preset folder, a Hugging Face folder, or a Hub id the Hub or the local cache can
    give, decided in seconds), else `model.preset`. With `--demo`, a stage's missing model
    folder is not an error (the runner starts from scratch and says so)."""
    from smallcoder.models.presets import check_model_source, is_hub_id

    folder = recipe.init_from_dir()
    key = "init_from" if folder is not None else "model.preset"
    source = recipe.model_source()
    stage = recipe.init_from_stage()
    if stage and not os.path.isdir(source):
        if recipe.demo:
            return
        raise RecipeError(
            recipe.where("init_from"), "init_from",
            f"no checkpoint at {source!r}; run `smallcoder recipe run {stage}` first, or point init_from at a "
            "Keras preset folder, a Hugging Face folder or Hub id, or set init_from: null to start from scratch.",
        )
    try:
        check_model_source(source)
        if not is_hub_id(source):
            from smallcoder.models.presets import preset_config

            preset_config(source)  # a Hugging Face config.json the model cannot take fails here
    except ValueError as e:
        raise RecipeError(recipe.where(key), key, str(e)) from None


def check_tokenizer(recipe):
    """Raise if `model.tokenizer` names no tokenizer.json, or if the run would start from a
    built-in preset that ships none (the 303M one) with `model.tokenizer` unset. Offline users
    are pointed at `--demo`."""
    from smallcoder.demo_tokenizer import DEMO_VOCAB_SIZE
    from smallcoder.models.presets import PRESETS, is_hf_folder, is_keras_preset

    tokenizer = recipe["model.tokenizer"]
    if tokenizer:
        path = os.path.join(tokenizer, "tokenizer.json") if os.path.isdir(tokenizer) else tokenizer
        if not os.path.isfile(path):
            raise RecipeError(recipe.where("model.tokenizer"), "model.tokenizer",
                              f"no tokenizer file at {path!r}; point it at a tokenizer.json or a folder "
                              "holding one.")
        return
    source = recipe.model_source()
    if is_hf_folder(source) or is_keras_preset(source):
        if not os.path.isfile(os.path.join(source, "tokenizer.json")):
            key = "init_from" if recipe.init_from_dir() else "model.preset"
            raise RecipeError(
                recipe.where("model.tokenizer"), "model.tokenizer",
                f"not set, and {key} {source!r} holds no tokenizer.json; set model.tokenizer to the "
                "tokenizer.json the model was trained with (or a folder holding one).")
        return
    preset = recipe["model.preset"]
    if source != preset or preset not in PRESETS:
        return  # a Hub id (its tokenizer comes with it), or a stage not trained yet (--demo)
    if PRESETS[preset]["vocabulary_size"] != DEMO_VOCAB_SIZE:
        raise RecipeError(
            recipe.where("model.tokenizer"), "model.tokenizer",
            f"not set, and {preset} comes without a tokenizer; set model.tokenizer to the StarCoder "
            "tokenizer.json (or a folder holding one), or run with --demo (offline: demo data, demo "
            "tokenizer, the tiny model).",
        )
