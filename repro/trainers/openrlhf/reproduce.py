"""``make reproduce-1.5b|3b|7b [METHOD=grpo|dapo|lambda|dr_grpo|all] [DRY_RUN=1]``.

For each method: check the machine, prepare the training prompts, train with OpenRLHF 0.11.2
through ``repro.trainers.openrlhf.launch``, evaluate the final checkpoint on the 8 benchmarks with
``python -m repro.eval``, and write the comparison with the paper's Table 1 into the run folders'
parent and ``paper_artifacts/``.

``--dry-run`` needs no GPU: it prints the machine check (without failing), the resolved config
and the exact commands, and checks the training command with the installed OpenRLHF parser
(``cli_check``) when openrlhf is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from repro.trainers.openrlhf.settings import LambdaSettings, to_flags

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "repro" / "configs"
SIZES = ("1.5b", "3b", "7b")
TABLE1_METHODS = ("grpo", "dapo", "lambda")  # the paper's Table 1; dr_grpo is an extra
ALL_METHODS = ("grpo", "dapo", "lambda", "dr_grpo")
# the prompt file depends on the cut: a multiple of rollout.batch_size, the dropped rows drawn with the seed
PROMPTS_FILE = "data/openrlhf/simplelr_qwen_level3to5.{template}.b{batch}.seed{seed}.jsonl"


# ----------------------------------------------------------------------------------------------
# configs and commands
# ----------------------------------------------------------------------------------------------
def config_path(size: str, method: str) -> Path:
    return CONFIGS / f"qwen2.5-{size}-{method}.yaml"


def load_config(size: str, method: str) -> dict:
    p = config_path(size, method)
    if not p.exists():
        raise FileNotFoundError(f"no config {p} (sizes {SIZES}, methods {ALL_METHODS})")
    cfg = yaml.safe_load(p.read_text())
    for key in ("name", "size", "method", "model", "seed", "machine", "lgrpo", "openrlhf", "data", "reward"):
        if key not in cfg:
            raise ValueError(f"{p}: missing key {key!r}")
    if cfg["size"] != size or cfg["method"] != method or cfg["lgrpo"]["method"] != method:
        raise ValueError(f"{p}: size/method inside the file disagree with its name")
    return cfg


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
    cfg["lgrpo"]["run_dir"] = str(run_dir)
    return cfg


def rollout_batch(cfg: dict) -> int:
    """Prompts per rollout step: the prompt set is cut to a multiple of it (whole rollout batches)."""
    return int(cfg["openrlhf"]["rollout.batch_size"])


def settings_of(cfg: dict) -> LambdaSettings:
    return LambdaSettings(**cfg["lgrpo"])


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
# the machine check
# ----------------------------------------------------------------------------------------------
LOCK = REPO / "environment.lock.txt"
ENV_FILE = REPO / "environment.yml"
MAX_LISTED = 12  # package problems listed one by one; the rest are counted


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of the lock (names normalised)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not spec or line[:1].isspace() or spec.startswith("-") or "==" not in spec:
            continue
        name, ver = spec.split("==", 1)
        pins[re.sub(r"[-_.]+", "-", name.split("[")[0].strip().lower())] = ver.strip()
    if not pins:
        raise ValueError(f"{path}: no name==version lines")
    return pins


def environment_python(path: Path = ENV_FILE) -> str:
    """The ``python=X.Y`` of environment.yml (what the lock was resolved for)."""
    for dep in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(dep, str) and dep.replace(" ", "").startswith("python="):
            return dep.split("=", 1)[1].strip()
    raise ValueError(f"{path}: no python=X.Y dependency")


def package_problems(pins: dict[str, str], version_of=None) -> list[str]:
    """Installed versions against the lock: one sentence per difference (local ``+...`` tags ignored)."""
    from importlib import metadata

    version_of = version_of or metadata.version
    missing, wrong = [], []
    for name, want in sorted(pins.items()):
        try:
            have = version_of(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}=={want}")
            continue
        if have.split("+")[0] != want.split("+")[0]:
            wrong.append(f"{name} is {have}, environment.lock.txt pins {want}")
    out = []
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else "")
        out.append(f"{len(missing)} of the {len(pins)} locked packages are not installed: {shown} "
                   "(environment.yml's header: conda env create, then make gpu-install)")
    out += wrong[:MAX_LISTED]
    if len(wrong) > MAX_LISTED:
        out.append(f"... and {len(wrong) - MAX_LISTED} more packages differ from environment.lock.txt")
    return out


def machine_problems(cfg: dict) -> list[str]:
    """Plain sentences, one per missing piece; empty when the machine can run ``cfg``."""
    problems = []
    need = int(cfg["machine"]["gpus"])
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mem = [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(n)]
    except Exception as e:  # noqa: BLE001
        n, mem = 0, []
        problems.append(f"cannot query GPUs through torch ({e})")
    if n < need:
        problems.append(f"{cfg['name']} needs {need} GPUs; this machine has {n}"
                        + ("" if n else " (no CUDA GPU visible)"))
    small = [f"GPU {i}: {m:.0f} GiB" for i, m in enumerate(mem) if m < cfg["machine"]["min_gpu_memory_gib"]]
    if small:
        problems.append(f"GPUs with less than {cfg['machine']['min_gpu_memory_gib']} GiB: {', '.join(small)}")
    py = environment_python()
    if f"{sys.version_info.major}.{sys.version_info.minor}" != py:
        problems.append(f"this is Python {sys.version_info.major}.{sys.version_info.minor}; "
                        f"environment.lock.txt is resolved for Python {py}")
    problems += package_problems(lock_pins())
    p = cfg["paths"]
    if not Path(p["train_parquet"]).exists():
        problems.append(f"training data {p['train_parquet']} not found (set DATA_SRC)")
    if shutil.which("nvidia-smi") is None:
        problems.append("nvidia-smi not found (no NVIDIA driver)")
    return problems


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------
def prepare_prompts(parquet: Path, out: Path, template: str, question_key: str, answer_key: str,
                    multiple_of: int = 1, seed: int = 0) -> int:
    """One JSONL row ``{"prompt": <templated question>, "label": <gold answer>}`` per problem kept.

    The set is cut to a multiple of ``multiple_of`` (``rollout.batch_size``): OpenRLHF 0.11.2
    trains on a last partial rollout batch, which its split hands the ranks unequally (a hang;
    see ``launch.layout_problems``). The ``len % multiple_of`` dropped rows are drawn with
    ``seed``; ``prompt_manifest_path(out)`` records the counts and the dropped row numbers, and
    the run's config.yaml carries them (``data.prompt_set``). Returns the number of rows kept."""
    import random

    import pandas as pd

    from repro.eval.prompts import build_prompt
    from repro.runs import write_json_atomic, write_text_atomic

    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    df = pd.read_parquet(parquet, columns=[question_key, answer_key])
    if df[question_key].isna().any() or df[answer_key].isna().any():
        raise ValueError(f"{parquet}: empty question or answer")
    n = len(df)
    if n < multiple_of:
        raise ValueError(f"{parquet}: {n} prompts, fewer than one rollout batch of {multiple_of}")
    dropped = sorted(random.Random(seed).sample(range(n), n % multiple_of))
    keep = sorted(set(range(n)) - set(dropped))
    lines = [json.dumps({"prompt": build_prompt(df[question_key].iloc[i], template),
                         "label": str(df[answer_key].iloc[i])}, ensure_ascii=False) for i in keep]
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(prompt_manifest_path(out), {
        "source": str(parquet), "source_rows": n, "multiple_of": int(multiple_of), "seed": int(seed),
        "kept": len(keep), "dropped": len(dropped), "dropped_rows": dropped})
    return len(keep)


def prompt_manifest_path(prompts_jsonl: Path) -> Path:
    return Path(prompts_jsonl).with_suffix(".manifest.json")


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
        print(f"\n## {cfg['name']}  ({config_path(size, m).relative_to(REPO)})")
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
