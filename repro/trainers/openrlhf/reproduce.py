"""``make reproduce-tiny|1.5b|3b|7b [METHOD=...] [NODES=N] [GPUS_PER_NODE=G] [DRY_RUN=1]``.

``--set KEY=VALUE`` (repeatable) overrides one setting of the composed config (``overrides_of``;
a key the layers do not have, or a value of another type, is refused in one line) and is saved
in each run's ``config.yaml``; a run folder made with another config is not resumed.

The OpenRLHF command builder of the one reproduce pipeline (``repro.trainers.reproduce``: machine
check, prompts, train, checkpoint, ``repro.eval``, comparison). Per method it composes the config
(``repro/configs/paper/base.yaml`` + ``sizes/<size>.yaml`` + ``methods/<method>.yaml``), fills in
what follows from it (nodes, GPUs per node, vLLM engines = nodes x GPUs / TP, the model, the
seed, the ``--lgrpo.*`` flags, the paths) and builds the commands: the prompt file, training with
OpenRLHF 0.11.2 through ``repro.trainers.openrlhf.launch`` (the stock ``train_ppo_ray`` with the λ
patches), ``python -m repro.eval`` (vLLM backend) on the final checkpoint.

``--dry-run`` needs no GPU: it prints the machine check (without failing), the resolved config
and the exact commands, checks the training command with the installed OpenRLHF parser
(``cli_check``) and the launcher's batch layout, and runs OpenRLHF's own placement and
colocation code (``placement``) on the declared nodes.

``tiny`` is the whole path on one CPU machine (the engine venv, ``make engines``): the committed
tiny Qwen2, prompts of the package's own task, a local Ray cluster with logical GPUs, vLLM's CPU
build, DeepSpeed on CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from repro import config as layers
from repro.objective import METHODS
from repro.paper import TABLE1_METHODS, TABLE1_SIZES  # the methods Table 1 trains; dr_grpo is an extra
from repro.trainers import reproduce as pipeline
from repro.trainers.openrlhf.environment import machine_problems
from repro.trainers.openrlhf.prompts import (PROMPTS_FILE, TASK_PROMPTS_FILE, prepare_prompts,  # noqa: F401
                                             prepare_task_prompts, prompt_manifest_path)
from repro.trainers.openrlhf.settings import LambdaSettings, to_flags

REPO = Path(__file__).resolve().parents[3]
ALL_SIZES = tuple(layers.paper_sizes())  # repro/configs/paper/sizes/
SIZES = tuple(s for s in ALL_SIZES if s.upper() in TABLE1_SIZES)  # the sizes of Table 1
ALL_METHODS = tuple(m for m in METHODS if m in layers.paper_methods())  # with a paper config
run_cmd = pipeline.run_cmd


# ----------------------------------------------------------------------------------------------
# configs and commands
# ----------------------------------------------------------------------------------------------
def config_files(size: str, method: str) -> list[Path]:
    """``repro/configs/paper/base.yaml``, ``sizes/<size>.yaml``, ``methods/<method>.yaml``."""
    if size not in ALL_SIZES or method not in ALL_METHODS:
        raise FileNotFoundError(f"no paper config for size {size!r}, method {method!r} "
                                f"(sizes {ALL_SIZES}, methods {ALL_METHODS})")
    return layers.paper_layers(size, method)


def _shown(files: list[Path]) -> str:
    """The config files as a reader finds them in the repository."""
    return " + ".join(str(p.relative_to(layers.CONFIG_DIR.parents[1])) for p in files)


# OpenRLHF flags that follow from other settings, filled in here so that each is written once
DERIVED_FLAGS = ("actor.model_name_or_path", "train.seed", "actor.num_nodes", "ref.num_nodes",
                 "actor.num_gpus_per_node", "ref.num_gpus_per_node", "vllm.num_engines")


def model_path(model: str) -> str:
    """A model folder of this repository (``repro/assets/tiny-sum``) as an absolute path (every
    Ray worker reads it); a Hugging Face id as it is."""
    p = REPO / model
    return str(p.resolve()) if not Path(model).is_absolute() and p.is_dir() else str(model)


def overrides_of(sets: list[str]) -> dict:
    """``--set KEY=VALUE`` items -> ``load_config``'s ``overrides``. Keys under ``openrlhf.`` name
    one stock flag each, whose own name has dots (``openrlhf.ckpt.save_steps=2``: the flag
    ``--ckpt.save_steps``); every other key is a dotted path into the config
    (``data.prompts=8``, ``eval.heldout_problems=16``, ``weighting.lambda.lr=1``)."""
    out: dict = {}
    for key, v in layers.parse_overrides(list(sets)).items():
        if key.startswith("openrlhf."):
            out.setdefault("openrlhf", {})[key[len("openrlhf."):]] = v
        else:
            out[key] = v
    return out


def _check_overrides(base: dict, overrides: dict, where: str) -> None:
    """A ``--set`` key must name a setting the layers have (a new setting belongs in a layer);
    under ``openrlhf`` any stock flag (the installed parser checks those); each value of the
    type it replaces (``repro.config.check_types``)."""
    for key, v in overrides.items():
        if key == "openrlhf":
            for flag, fv in v.items():
                if not flag or flag.startswith("-"):
                    raise layers.ConfigError(f"--set openrlhf.{flag}: give the flag without its dashes "
                                             "(--set openrlhf.ckpt.save_steps=2)")
                if flag in base["openrlhf"]:
                    try:
                        layers.check_types({"flag": base["openrlhf"][flag]}, {"flag": fv})
                    except layers.ConfigError:
                        raise layers.ConfigError(f"--set openrlhf.{flag}={fv!r}: expected the type of "
                                                 f"{base['openrlhf'][flag]!r} (the config's value)") from None
            continue
        d = base
        for part in key.split("."):
            if not isinstance(d, dict) or part not in d:
                raise layers.ConfigError(f"--set {key}: {where} has no such setting")
            d = d[part]
    layers.check_types(base, {k: v for k, v in overrides.items() if k != "openrlhf"})


def load_config(size: str, method: str, machine: dict | None = None, overrides: dict | None = None) -> dict:
    """The composed config of (size, method), with ``name``, ``size``, ``method``, the derived
    OpenRLHF flags and ``lgrpo`` (the ``--lgrpo.*`` settings) filled in. ``overrides`` (from
    ``--set``, ``overrides_of``) go on top of the layers; ``machine`` overrides ``machine.nodes`` /
    ``machine.gpus`` (``NODES`` / ``GPUS_PER_NODE``)."""
    files = config_files(size, method)
    where = _shown(files)
    overrides = dict(overrides or {})
    if overrides:
        _check_overrides(layers.compose(files), overrides, where)
    flags = overrides.pop("openrlhf", {})
    cfg = layers.compose(files, {**overrides,
                                 "machine": {k: v for k, v in (machine or {}).items() if v is not None}})
    cfg["openrlhf"].update(flags)
    for key in ("model", "seed", "machine", "weighting", "scope", "openrlhf", "data", "reward", "eval"):
        if key not in cfg:
            raise ValueError(f"{where}: missing key {key!r}")
    if cfg["weighting"].get("method") != method:
        raise ValueError(f"{where}: weighting.method is {cfg['weighting'].get('method')!r}, not {method!r}")
    o = cfg["openrlhf"]
    twice = [k for k in DERIVED_FLAGS if k in o]
    if twice:
        raise ValueError(f"{where}: {twice} are derived from model / seed / machine.nodes / machine.gpus; "
                         "do not set them")
    nodes, gpus, tp = int(cfg["machine"].get("nodes", 1)), int(cfg["machine"]["gpus"]), int(o["vllm.tensor_parallel_size"])
    if nodes < 1 or gpus < 1:
        raise ValueError(f"{where}: machine.nodes {nodes} and machine.gpus {gpus} must be >= 1")
    if (nodes * gpus) % tp:
        raise ValueError(f"{where}: machine.nodes x machine.gpus = {nodes * gpus} GPUs is not a multiple of "
                         f"vllm.tensor_parallel_size {tp}")
    o.update({"actor.model_name_or_path": model_path(cfg["model"]), "train.seed": cfg["seed"],
              "actor.num_nodes": nodes, "ref.num_nodes": nodes,
              "actor.num_gpus_per_node": gpus, "ref.num_gpus_per_node": gpus,
              "vllm.num_engines": nodes * gpus // tp})
    name = f"{size}-{method}" if cfg["machine"].get("cpu") else f"qwen2.5-{size}-{method}"
    out = {"name": name, "size": size, "method": method, **cfg}
    out["lgrpo"] = run_settings(out)
    return out


def methods_of(arg: str) -> list[str]:
    if arg == "all":
        return list(TABLE1_METHODS)
    out = [m.strip() for m in arg.split(",") if m.strip()]
    bad = [m for m in out if m not in ALL_METHODS]
    if bad or not out:
        raise SystemExit(f"unknown METHOD {bad or arg!r}; use one of {ALL_METHODS} or all")
    return out


def flags_from(openrlhf: dict) -> list[str]:
    """YAML ``{flag: value}`` -> argv. ``true`` is a store_true flag, ``false`` leaves it out,
    a list gives several values."""
    argv: list[str] = []
    for k, v in openrlhf.items():
        flag = "--" + k
        if v is True:
            argv.append(flag)
        elif v is False or v is None:
            continue
        elif isinstance(v, (list, tuple)):
            argv += [flag, *map(str, v)]
        else:
            argv += [flag, str(v)]
    return argv


def prompts_path(cfg: dict) -> Path:
    d = cfg["data"]
    if d.get("task"):
        rel = TASK_PROMPTS_FILE.format(task=d["task"], n=d["prompts"], batch=rollout_batch(cfg), seed=cfg["seed"])
    else:
        rel = PROMPTS_FILE.format(template=d["template"], batch=rollout_batch(cfg), seed=cfg["seed"])
    return (REPO / rel).resolve()


def resolve(cfg: dict, runs: Path, data_src: Path) -> dict:
    """The config with every path filled in: what the run folder's config.yaml records."""
    cfg = json.loads(json.dumps(cfg))  # deep copy
    root = (runs / "openrlhf").resolve() if not cfg["machine"].get("cpu") else (runs / f"reproduce-{cfg['size']}").resolve()
    run_dir = root / f"{cfg['name']}-seed{cfg['seed']}"
    cfg["paths"] = {
        "run_dir": str(run_dir),
        "prompts_jsonl": str(prompts_path(cfg)),
        "final_model": str(run_dir / "final"),
        "eval_dir": str(run_dir / "eval"),
        "data_src": str(Path(data_src).resolve()),
    }
    if not cfg["data"].get("task"):
        cfg["paths"]["train_parquet"] = str((Path(data_src) / cfg["data"]["train"]).resolve())
    if cfg["eval"].get("base"):  # the start checkpoint, evaluated once per size: Table 1's Base row
        cfg["paths"]["base_eval_dir"] = str(root / "base" / "eval")
    o = cfg["openrlhf"]
    o["data.prompt_dataset"] = cfg["paths"]["prompts_jsonl"]
    o["data.input_key"] = "prompt"
    o["data.label_key"] = "label"
    o["reward.remote_url"] = str(Path(__file__).resolve().parent / "reward_fn.py")
    o["ckpt.output_dir"] = str(run_dir / "final")
    o["ckpt.path"] = str(run_dir / "checkpoints")
    o["ckpt.load_enable"] = True  # resumes from run_dir/checkpoints when a checkpoint is there
    o["logger.tensorboard_dir"] = str(run_dir / "tensorboard")
    cfg["lgrpo"] = run_settings(cfg)
    return cfg


def rollout_batch(cfg: dict) -> int:
    """Prompts per rollout step: the prompt set is cut to a multiple of it (whole rollout batches)."""
    return int(cfg["openrlhf"]["rollout.batch_size"])


def settings_of(cfg: dict) -> LambdaSettings:
    """The ``--lgrpo.*`` settings of a (resolved) config: its ``weighting`` block and ``scope``."""
    return LambdaSettings.from_config(cfg["weighting"], cfg["scope"],
                                      run_dir=cfg.get("paths", {}).get("run_dir"))


def run_settings(cfg: dict) -> dict:
    """The ``--lgrpo.*`` settings beside the weighting block (scope, run folder and the run's two
    checks), as the run's config.yaml records them; the weighting itself is the config's own
    ``weighting:`` block, recorded once."""
    out = json.loads(settings_of(cfg).to_json())
    del out["weighting"]
    return out


def eval_command(cfg: dict, model: str, out: str, python: str) -> list[str]:
    """``python -m repro.eval`` on ``model`` with the vLLM backend: the 8 benchmarks against Table 1's
    block of this size, or (a size Table 1 does not have) the sets ``eval.benchmarks`` names, e.g.
    the CPU task's ``sum_heldout``; the other ``eval.*`` settings become its flags."""
    e, p = cfg["eval"], cfg["paths"]
    cmd = [python, "-m", "repro.eval", "--model", model, "--benchmarks", str(e["benchmarks"]), "--out", out,
           "--backend", "vllm"]
    if cfg["size"] in SIZES:
        cmd += ["--data-src", p["data_src"], "--paper-size", cfg["size"].upper()]
    for key, flag in (("heldout_problems", "--heldout-problems"), ("limit", "--limit"),
                      ("max_tokens", "--max-tokens"), ("gpu_memory_utilization", "--gpu-memory-utilization")):
        if e.get(key) is not None:
            cmd += [flag, str(e[key])]
    return cmd


def commands(cfg: dict, data_src: Path | None = None, python: str = "python") -> dict[str, list[str]]:
    p, d = cfg["paths"], cfg["data"]
    prep = [python, "-m", "repro.trainers.openrlhf.reproduce", "prepare-prompts", "--out", p["prompts_jsonl"],
            "--multiple-of", str(rollout_batch(cfg)), "--seed", str(cfg["seed"])]
    if d.get("task"):
        prep += ["--task", str(d["task"]), "--n", str(d["prompts"])]
    else:
        prep += ["--parquet", p["train_parquet"], "--template", d["template"],
                 "--question-key", d["question_key"], "--answer-key", d["answer_key"]]
    out = {
        "prepare_prompts": prep,
        "train": [python, "-m", "repro.trainers.openrlhf.launch", *to_flags(settings_of(cfg)),
                  *flags_from(cfg["openrlhf"])],
        "eval": eval_command(cfg, p["final_model"], p["eval_dir"], python),
    }
    if "base_eval_dir" in p:
        out["eval_base"] = eval_command(cfg, cfg["openrlhf"]["actor.model_name_or_path"], p["base_eval_dir"], python)
    return out


def train_env(cfg: dict) -> dict[str, str]:
    """The training step's environment: the grader, and offline Hugging Face access (the models
    were fetched before Ray started: ``make models``, checked by the machine check)."""
    return {"LGRPO_GRADER": str(cfg["reward"]["grader"]), "LGRPO_GRADER_TIMEOUT": str(cfg["reward"]["timeout_s"]),
            "HF_HUB_OFFLINE": "1"}


def settings_and_stock(train_cmd: list[str]) -> list[str]:
    from repro.trainers.openrlhf.settings import split_argv

    i = train_cmd.index("repro.trainers.openrlhf.launch")
    _, stock = split_argv(train_cmd[i + 1:])
    return stock


def comparison_table(size: str, run_dirs: dict[str, Path]):
    """Per method: the paper's Table 1 row for this size, this reproduction's scores and the
    difference (``repro.trainers.reproduce.comparison_table``)."""
    return pipeline.comparison_table(size, run_dirs)


# ----------------------------------------------------------------------------------------------
# the plan the pipeline runs
# ----------------------------------------------------------------------------------------------
class OpenRLHFPlan:
    engine = "openrlhf"

    def __init__(self, size: str, runs: Path, data_src: Path, machine: dict | None = None,
                 overrides: dict | None = None):
        self.size, self.runs, self.data_src, self.machine = size, Path(runs), Path(data_src), machine or {}
        self.overrides = overrides or {}
        self.target = f"reproduce-{size}"

    def configs(self, methods):
        return [resolve(load_config(self.size, m, self.machine, self.overrides), self.runs, self.data_src)
                for m in methods]

    def describe(self, cfg):
        return _shown(config_files(cfg["size"], cfg["method"]))

    def machine_problems(self, cfg):
        return machine_problems(cfg)  # this module's name, so that tests can replace it

    def commands(self, cfg, python="python"):
        return commands(cfg, self.data_src, python)

    def train_env(self, cfg):
        return train_env(cfg)

    def creates_run(self):
        return True

    def resume_args(self, cfg):
        return []  # ckpt.load_enable: OpenRLHF resumes from ckpt.path itself

    def comparison_paths(self, runs, size):
        if self.machine.get("cpu") or size not in SIZES:
            return [self.runs / f"reproduce-{size}" / f"comparison-{size}.csv"]
        return [self.runs / "openrlhf" / f"comparison-{size}.csv", REPO / "paper_artifacts" / f"reproduce-{size}.csv"]

    def dry_checks(self, cfg):
        try:
            from repro.trainers.openrlhf.cli_check import installed_version
            from repro.trainers.openrlhf.launch import check_args
        except ModuleNotFoundError:
            return 0, ["### flags: NOT checked (openrlhf is not installed here)"]
        try:
            installed_version()
        except Exception:  # noqa: BLE001 - the distribution is missing
            return 0, ["### flags: NOT checked (openrlhf is not installed here)"]
        lines = []
        prepared = Path(cfg["paths"]["prompts_jsonl"]).exists()
        try:
            args = check_args(settings_and_stock(commands(cfg, self.data_src)["train"]), settings_of(cfg),
                              count_prompt_file=prepared)
        except SystemExit as e:
            return 2, [f"### flags: REFUSED: {e}"]
        lines.append(f"### flags: accepted by the installed openrlhf {installed_version()} parser "
                     "and the launcher's checks (batch layout: whole groups, equal work per rank"
                     + ("; prompt count)" if prepared else "; the prompt count is checked at launch)"))
        from repro.trainers.openrlhf.placement import LayoutError, layout_lines, plan_layout

        try:
            layout = plan_layout(args, nodes=int(cfg["machine"].get("nodes", 1)), gpus_per_node=int(cfg["machine"]["gpus"]))
        except LayoutError as e:
            return 2, lines + [f"### placement: REFUSED by openrlhf's train(): {e}"]
        return 0, lines + layout_lines(layout)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def dry_run(size: str, methods: list[str], runs: Path, data_src: Path, machine: dict | None = None,
            overrides: dict | None = None) -> int:
    return pipeline.dry_run(OpenRLHFPlan(size, runs, data_src, machine, overrides), methods)


def run(size: str, methods: list[str], runs: Path, data_src: Path, skip_eval: bool, machine: dict | None = None,
        overrides: dict | None = None) -> int:
    return pipeline.run(OpenRLHFPlan(size, runs, data_src, machine, overrides), methods, runs, skip_eval=skip_eval)


def prepare_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="reproduce prepare-prompts")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parquet", type=Path, help="SimpleRL-Zoo's training parquet (the paper sizes)")
    ap.add_argument("--task", help="or the package's own task (repro/tasks/arith.py: sum, budget)")
    ap.add_argument("--n", type=int, help="--task: problems drawn")
    ap.add_argument("--template", default="qwen-boxed")
    ap.add_argument("--question-key", default="question")
    ap.add_argument("--answer-key", default="gt_answer")
    ap.add_argument("--multiple-of", type=int, default=1, help="cut the set to a multiple of this (rollout.batch_size)")
    ap.add_argument("--seed", type=int, default=0, help="draws the rows dropped by the cut (and --task's problems)")
    a = ap.parse_args(argv)
    if (a.parquet is None) == (a.task is None):
        ap.error("give exactly one of --parquet and --task")
    try:
        if a.task:
            if a.n is None:
                ap.error("--task needs --n")
            n = prepare_task_prompts(a.task, a.n, a.out, a.multiple_of, a.seed)
        else:
            n = prepare_prompts(a.parquet, a.out, a.template, a.question_key, a.answer_key, a.multiple_of, a.seed)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"prepare-prompts: {e}") from None
    m = json.loads(prompt_manifest_path(a.out).read_text())
    print(f"wrote {n} prompts to {a.out} ({m['dropped']} of {m['source_rows']} dropped for whole rollout "
          f"batches of {a.multiple_of}; rows in {prompt_manifest_path(a.out)})")
    return 0


def models_main(argv: list[str]) -> int:
    from repro.trainers.models import fetch_models

    ap = argparse.ArgumentParser(prog="reproduce models", description="fill the Hugging Face cache with the "
                                 "models of make reproduce-SIZE before any run (runs read them offline)")
    ap.add_argument("--size", required=True, choices=(*ALL_SIZES, "1gpu"))
    a = ap.parse_args(argv)
    if a.size == "1gpu":
        from repro.trainers.trl.reproduce import RECIPE
        from repro.trainers.trl.run import load_config as trl_config

        return fetch_models([str(trl_config(RECIPE, m)["model"]["name"]) for m in TABLE1_METHODS])
    return fetch_models([model_path(load_config(a.size, m)["model"]) for m in ALL_METHODS])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prepare-prompts":
        return prepare_main(argv[1:])
    if argv and argv[0] == "models":
        return models_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.openrlhf.reproduce")
    ap.add_argument("--size", required=True, choices=ALL_SIZES)
    ap.add_argument("--method", default="all", help="grpo | dapo | lambda | dr_grpo | all (= the Table 1 three), or a comma list")
    ap.add_argument("--runs", type=Path, default=Path(os.environ.get("RUNS", "runs")))
    ap.add_argument("--data-src", type=Path, default=Path(os.environ.get("DATA_SRC", REPO.parent / "shared" / "data")))
    ap.add_argument("--nodes", type=int, default=None, help="machine.nodes (NODES=N): nodes of machine.gpus GPUs each")
    ap.add_argument("--gpus-per-node", type=int, default=None, help="machine.gpus (GPUS_PER_NODE=G)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the composed config, e.g. --set data.prompts=8 "
                         "--set eval.heldout_problems=16 --set openrlhf.ckpt.save_steps=2 (a stock flag); "
                         "saved in each run's config.yaml")
    a = ap.parse_args(argv)
    for name in ("nodes", "gpus_per_node"):
        v = getattr(a, name)
        if v is not None and v < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    machine = {"nodes": a.nodes, "gpus": a.gpus_per_node}
    methods = methods_of(a.method)
    try:
        overrides = overrides_of(a.set)
        if a.dry_run:
            return dry_run(a.size, methods, a.runs, a.data_src, machine, overrides)
        return run(a.size, methods, a.runs, a.data_src, a.skip_eval, machine, overrides)
    except ValueError as e:  # a bad config or override: one line
        raise SystemExit(f"reproduce-{a.size}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
