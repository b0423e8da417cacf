"""``make reproduce-1.5b|3b|7b [METHOD=grpo|dapo|lambda|dr_grpo|all] [DRY_RUN=1]``.

For each method: check the machine, prepare the training prompts, train with OpenRLHF 0.11.2
through ``repro.trainers.openrlhf.launch``, evaluate the final checkpoint on the 8 benchmarks with
``python -m repro.eval``, and write the comparison with the paper's Table 1 into the run folders'
parent and ``paper_artifacts/``.

``--dry-run`` needs no GPU: it prints the machine check (without failing), the resolved config
and the exact commands, and checks the training command with the installed OpenRLHF parser
(``cli_check``) when openrlhf is installed.

This module is the orchestration (configs -> commands -> steps in order); the machine check is
``environment``, the prompt preparation ``prompts``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from repro import config as layers
from repro.objective import METHODS
from repro.paper import TABLE1_METHODS  # the methods Table 1 trains; dr_grpo is an extra
from repro.trainers.openrlhf.environment import machine_problems  # noqa: F401  (reproduce.machine_problems)
from repro.trainers.openrlhf.prompts import PROMPTS_FILE, prepare_prompts, prompt_manifest_path
from repro.trainers.openrlhf.settings import LambdaSettings, to_flags

REPO = Path(__file__).resolve().parents[3]
SIZES = tuple(layers.paper_sizes())  # repro/configs/paper/sizes/
ALL_METHODS = tuple(m for m in METHODS if m in layers.paper_methods())  # with a paper config


# ----------------------------------------------------------------------------------------------
# configs and commands
# ----------------------------------------------------------------------------------------------
def config_files(size: str, method: str) -> list[Path]:
    """``repro/configs/paper/base.yaml``, ``sizes/<size>.yaml``, ``methods/<method>.yaml``."""
    if size not in SIZES or method not in ALL_METHODS:
        raise FileNotFoundError(f"no paper config for size {size!r}, method {method!r} "
                                f"(sizes {SIZES}, methods {ALL_METHODS})")
    return layers.paper_layers(size, method)


def _shown(files: list[Path]) -> str:
    """The config files as a reader finds them in the repository."""
    return " + ".join(str(p.relative_to(layers.CONFIG_DIR.parents[1])) for p in files)


# OpenRLHF flags that follow from other settings, filled in here so that each is written once
DERIVED_FLAGS = ("actor.model_name_or_path", "train.seed", "actor.num_gpus_per_node",
                 "ref.num_gpus_per_node", "vllm.num_engines")


def load_config(size: str, method: str) -> dict:
    """The composed config of (size, method), with ``name``, ``size``, ``method``, the derived
    OpenRLHF flags and ``lgrpo`` (the ``--lgrpo.*`` settings) filled in."""
    files = config_files(size, method)
    cfg = layers.compose(files)
    where = _shown(files)
    for key in ("model", "seed", "machine", "weighting", "scope", "openrlhf", "data", "reward", "eval"):
        if key not in cfg:
            raise ValueError(f"{where}: missing key {key!r}")
    if cfg["weighting"].get("method") != method:
        raise ValueError(f"{where}: weighting.method is {cfg['weighting'].get('method')!r}, not {method!r}")
    o = cfg["openrlhf"]
    twice = [k for k in DERIVED_FLAGS if k in o]
    if twice:
        raise ValueError(f"{where}: {twice} are derived from model / seed / machine.gpus; do not set them")
    gpus, tp = int(cfg["machine"]["gpus"]), int(o["vllm.tensor_parallel_size"])
    if gpus % tp:
        raise ValueError(f"{where}: machine.gpus {gpus} is not a multiple of vllm.tensor_parallel_size {tp}")
    o.update({"actor.model_name_or_path": cfg["model"], "train.seed": cfg["seed"],
              "actor.num_gpus_per_node": gpus, "ref.num_gpus_per_node": gpus, "vllm.num_engines": gpus // tp})
    out = {"name": f"qwen2.5-{size}-{method}", "size": size, "method": method, **cfg}
    out["lgrpo"] = json.loads(settings_of(out).to_json())  # the --lgrpo.* flags, as the run records them
    return out


def methods_of(arg: str) -> list[str]:
    if arg == "all":
        return list(TABLE1_METHODS)
    out = [m.strip() for m in arg.split(",") if m.strip()]
    bad = [m for m in out if m not in ALL_METHODS]
    if bad:
        raise SystemExit(f"unknown METHOD {bad}; use one of {ALL_METHODS} or all")
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


def resolve(cfg: dict, runs: Path, data_src: Path) -> dict:
    """The config with every path filled in: what the run folder's config.yaml records."""
    cfg = json.loads(json.dumps(cfg))  # deep copy
    run_dir = (runs / "openrlhf" / f"{cfg['name']}-seed{cfg['seed']}").resolve()
    prompts = (REPO / PROMPTS_FILE.format(template=cfg["data"]["template"], batch=rollout_batch(cfg),
                                          seed=cfg["seed"])).resolve()
    cfg["paths"] = {
        "run_dir": str(run_dir),
        "train_parquet": str((data_src / cfg["data"]["train"]).resolve()),
        "prompts_jsonl": str(prompts),
        "final_model": str(run_dir / "final"),
        "eval_dir": str(run_dir / "eval"),
    }
    o = cfg["openrlhf"]
    o["data.prompt_dataset"] = str(prompts)
    o["data.input_key"] = "prompt"
    o["data.label_key"] = "label"
    o["reward.remote_url"] = str(Path(__file__).resolve().parent / "reward_fn.py")
    o["ckpt.output_dir"] = str(run_dir / "final")
    o["ckpt.path"] = str(run_dir / "checkpoints")
    o["ckpt.load_enable"] = True  # resumes from run_dir/checkpoints when a checkpoint is there
    o["logger.tensorboard_dir"] = str(run_dir / "tensorboard")
    cfg["lgrpo"] = json.loads(settings_of(cfg).to_json())
    return cfg


def rollout_batch(cfg: dict) -> int:
    """Prompts per rollout step: the prompt set is cut to a multiple of it (whole rollout batches)."""
    return int(cfg["openrlhf"]["rollout.batch_size"])


def settings_of(cfg: dict) -> LambdaSettings:
    """The ``--lgrpo.*`` settings of a (resolved) config: its ``weighting`` block and ``scope``."""
    return LambdaSettings.from_config(cfg["weighting"], cfg["scope"],
                                      run_dir=cfg.get("paths", {}).get("run_dir"))


def commands(cfg: dict, data_src: Path, python: str = "python") -> dict[str, list[str]]:
    p = cfg["paths"]
    return {
        "prepare_prompts": [python, "-m", "repro.trainers.openrlhf.reproduce", "prepare-prompts",
                            "--parquet", p["train_parquet"], "--out", p["prompts_jsonl"],
                            "--template", cfg["data"]["template"],
                            "--question-key", cfg["data"]["question_key"],
                            "--answer-key", cfg["data"]["answer_key"],
                            "--multiple-of", str(rollout_batch(cfg)), "--seed", str(cfg["seed"])],
        "train": [python, "-m", "repro.trainers.openrlhf.launch", *to_flags(settings_of(cfg)),
                  *flags_from(cfg["openrlhf"])],
        "eval": [python, "-m", "repro.eval", "--model", p["final_model"], "--benchmarks",
                 str(cfg["eval"]["benchmarks"]), "--out", p["eval_dir"], "--backend", "vllm",
                 "--data-src", str(data_src), "--paper-size", cfg["size"].upper()],
    }


def train_env(cfg: dict) -> dict[str, str]:
    return {"LGRPO_GRADER": str(cfg["reward"]["grader"]), "LGRPO_GRADER_TIMEOUT": str(cfg["reward"]["timeout_s"])}


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------
def run_cmd(cmd: list[str], env: dict | None = None) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    res = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=REPO)
    if res.returncode:
        raise SystemExit(f"step failed (exit {res.returncode}): {shlex.join(cmd)}")


def comparison_table(size: str, run_dirs: dict[str, Path]):
    """Per method: the paper's Table 1 row for this size, this reproduction's scores (primary
    grader of ``eval/scores.json``, accuracy in %) and the difference; a method without scores
    gets a row saying so (``repro.paper.comparison_frame``)."""
    from repro import paper
    from repro.runs import Run

    table = paper.load_table1(REPO / "paper_artifacts" / "table1_paper.csv")
    return paper.comparison_frame([({"method": m}, Run(rd).eval_scores()) for m, rd in run_dirs.items()],
                                  size, table)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def dry_run(size: str, methods: list[str], runs: Path, data_src: Path) -> int:
    print(f"# DRY RUN: make reproduce-{size} METHOD={','.join(methods)} (nothing is started)")
    for m in methods:
        cfg = resolve(load_config(size, m), runs, data_src)
        print(f"\n## {cfg['name']}  ({_shown(config_files(size, m))})")
        problems = machine_problems(cfg)
        print("### machine check: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print(f"- {p}")
        print("### resolved config")
        print(yaml.safe_dump(cfg, sort_keys=False).rstrip())
        print("### commands")
        env = train_env(cfg)
        for step, cmd in commands(cfg, data_src).items():
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " if step == "train" else ""
            print(f"[{step}] {prefix}{shlex.join(cmd)}")
        try:
            from repro.trainers.openrlhf.cli_check import installed_version
            from repro.trainers.openrlhf.launch import check_args

            prepared = Path(cfg["paths"]["prompts_jsonl"]).exists()
            check_args(settings_and_stock(commands(cfg, data_src)["train"]), settings_of(cfg),
                       count_prompt_file=prepared)
            print(f"### flags: accepted by the installed openrlhf {installed_version()} parser "
                  "and the launcher's checks (batch layout: whole groups, equal work per rank"
                  + ("; prompt count)" if prepared else "; the prompt count is checked at launch)"))
        except ModuleNotFoundError:
            print("### flags: NOT checked (openrlhf is not installed here)")
    return 0


def settings_and_stock(train_cmd: list[str]) -> list[str]:
    from repro.trainers.openrlhf.settings import split_argv

    i = train_cmd.index("repro.trainers.openrlhf.launch")
    _, stock = split_argv(train_cmd[i + 1:])
    return stock


def run(size: str, methods: list[str], runs: Path, data_src: Path, skip_eval: bool) -> int:
    from repro.runs import Run, write_text_atomic

    cfgs = [resolve(load_config(size, m), runs, data_src) for m in methods]
    problems = sorted({p for c in cfgs for p in machine_problems(c)})
    if problems:
        print(f"make reproduce-{size} cannot run on this machine:")
        for p in problems:
            print(f"  - {p}")
        print("Nothing was started. (DRY_RUN=1 prints the commands without these checks failing.)")
        return 2
    run_dirs = {}
    for cfg in cfgs:
        cmds = commands(cfg, data_src, python=sys.executable)
        if not Path(cfg["paths"]["prompts_jsonl"]).exists():
            run_cmd(cmds["prepare_prompts"])
        manifest = json.loads(prompt_manifest_path(cfg["paths"]["prompts_jsonl"]).read_text())
        cfg["data"]["prompt_set"] = {k: manifest[k] for k in ("source_rows", "multiple_of", "seed", "kept",
                                                              "dropped", "dropped_rows")}
        print(f"{cfg['name']}: training on {manifest['kept']} of {manifest['source_rows']} prompts "
              f"({manifest['dropped']} dropped, seed {manifest['seed']}: whole rollout batches of "
              f"{manifest['multiple_of']})", flush=True)
        rd = Path(cfg["paths"]["run_dir"])
        run_dirs[cfg["method"]] = rd
        if not Run(rd).meta_path.exists():
            Run.create(rd, cfg, seed=int(cfg["seed"]), method=cfg["method"],
                       extra_meta={"trainer": "openrlhf", "commands": {k: shlex.join(v) for k, v in cmds.items()}})
        if not Run(rd).is_done():
            run_cmd(cmds["train"], env=train_env(cfg))
            Run(rd).mark_done({"trainer": "openrlhf"})
        if not skip_eval and Run(rd).eval_scores() is None:
            run_cmd(cmds["eval"])
    table = comparison_table(size, run_dirs)
    out = runs / "openrlhf" / f"comparison-{size}.csv"
    write_text_atomic(out, table.to_csv(index=False))
    write_text_atomic(REPO / "paper_artifacts" / f"reproduce-{size}.csv", table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written: {out} and paper_artifacts/reproduce-{size}.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prepare-prompts":
        ap = argparse.ArgumentParser(prog="reproduce prepare-prompts")
        ap.add_argument("--parquet", type=Path, required=True)
        ap.add_argument("--out", type=Path, required=True)
        ap.add_argument("--template", default="qwen-boxed")
        ap.add_argument("--question-key", default="question")
        ap.add_argument("--answer-key", default="gt_answer")
        ap.add_argument("--multiple-of", type=int, default=1, help="cut the set to a multiple of this (rollout.batch_size)")
        ap.add_argument("--seed", type=int, default=0, help="draws the rows dropped by the cut")
        a = ap.parse_args(argv[1:])
        n = prepare_prompts(a.parquet, a.out, a.template, a.question_key, a.answer_key, a.multiple_of, a.seed)
        m = json.loads(prompt_manifest_path(a.out).read_text())
        print(f"wrote {n} prompts to {a.out} ({m['dropped']} of {m['source_rows']} dropped for whole rollout "
              f"batches of {a.multiple_of}; rows in {prompt_manifest_path(a.out)})")
        return 0
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.openrlhf.reproduce")
    ap.add_argument("--size", required=True, choices=SIZES)
    ap.add_argument("--method", default="all", help="grpo | dapo | lambda | dr_grpo | all (= the Table 1 three), or a comma list")
    ap.add_argument("--runs", type=Path, default=Path(os.environ.get("RUNS", "runs")))
    ap.add_argument("--data-src", type=Path, default=Path(os.environ.get("DATA_SRC", REPO.parent / "shared" / "data")))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    a = ap.parse_args(argv)
    methods = methods_of(a.method)
    if a.dry_run:
        return dry_run(a.size, methods, a.runs, a.data_src)
    return run(a.size, methods, a.runs, a.data_src, a.skip_eval)


if __name__ == "__main__":
    sys.exit(main())
