"""The one reproduce pipeline, for every engine and size:

    machine check -> models -> prompts -> train -> checkpoint -> ``repro.eval`` -> the comparison

Each engine hands it a ``Plan`` (its command builder): ``repro.trainers.openrlhf.reproduce``
(``make reproduce-tiny|1.5b|3b|7b``, OpenRLHF 0.11.2 through ``repro.trainers.openrlhf.launch``)
and ``repro.trainers.trl.reproduce`` (``make reproduce-1gpu``, TRL 1.16.0). The steps, their order,
the run folders (``repro.runs``), resuming, the dry run and the comparison table are written
here once.

A resolved config (``Plan.configs``) carries ``name``, ``method``, ``size`` and ``paths``:
``run_dir``, ``prompts_jsonl``, ``final_model``, ``eval_dir`` (and ``base_eval_dir`` where the
start checkpoint is evaluated too, as Table 1's "Base" row). ``Plan.commands(cfg, python)`` gives
the argv of each step: ``prepare_prompts``, ``train``, ``eval`` (and ``eval_base``).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import yaml

REPO = Path(__file__).resolve().parents[2]


class Plan(Protocol):
    engine: str  # the runs/<engine>/ folder
    target: str  # the make target, for messages

    def configs(self, methods: list[str]) -> list[dict]: ...

    def describe(self, cfg: dict) -> str: ...  # the config files it came from

    def machine_problems(self, cfg: dict) -> list[str]: ...  # "note: ..." sentences do not block

    def commands(self, cfg: dict, python: str = "python") -> dict[str, list[str]]: ...

    def train_env(self, cfg: dict) -> dict[str, str]: ...

    def dry_checks(self, cfg: dict) -> tuple[int, list[str]]: ...  # engine checks: rc, lines

    def creates_run(self) -> bool: ...  # True: the pipeline creates the run folder (else the trainer)

    def resume_args(self, cfg: dict) -> list[str]: ...

    def comparison_paths(self, runs: Path, size: str) -> list[Path]: ...


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------
def run_cmd(cmd: list[str], env: dict | None = None) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    res = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=REPO)
    if res.returncode:
        raise SystemExit(f"step failed (exit {res.returncode}): {shlex.join(cmd)}")


def blocking(problems: list[str]) -> list[str]:
    return [p for p in problems if not p.startswith("note:")]


def comparison_table(size: str, run_dirs: dict[str, Path], base_eval: Path | None = None):
    """Table 1's layout (a row per method, a column per benchmark, avg).

    Paper sizes: per method the paper's row, this reproduction's scores (primary grader of
    ``eval/scores.json``) and the difference (``repro.paper.comparison_frame``). A size that
    Table 1 does not have (``tiny``) gets this run's rows only, over the benchmarks its
    evaluation scored, with the start checkpoint as the "Base" row when ``base_eval`` holds its
    scores; a method without scores gets a row saying so."""
    import pandas as pd

    from repro import paper
    from repro.runs import Run

    scores = {m: Run(rd).eval_scores() for m, rd in run_dirs.items()}
    if size.upper() in paper.TABLE1_SIZES:
        return paper.comparison_frame([({"method": m}, s) for m, s in scores.items()], size, paper.load_table1())
    rows = []
    base = _read_scores(base_eval) if base_eval else None
    for method, s in ([("base", base)] if base_eval else []) + list(scores.items()):
        if s is None:
            rows.append({"method": method, "row": "this run", "note": "no eval/scores.json"})
            continue
        g = s["primary_grader"]
        res = s["graders"][g]
        accs = {b: float(v["accuracy"]) for b, v in res["benchmarks"].items()}
        n = {b: int(v["n_items"]) for b, v in res["benchmarks"].items() if "n_items" in v}
        rows.append({"method": method, "row": f"this run ({g})", **accs,
                     **({"avg": float(res["average"])} if len(accs) > 1 else {}),
                     "note": "items: " + ", ".join(f"{b} {k}" for b, k in n.items())})
    return pd.DataFrame(rows)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _read_scores(eval_dir: Path) -> dict | None:
    p = Path(eval_dir) / "scores.json"
    return json.loads(p.read_text()) if p.exists() else None


# ----------------------------------------------------------------------------------------------
# dry run and run
# ----------------------------------------------------------------------------------------------
def dry_run(plan: Plan, methods: list[str]) -> int:
    print(f"# DRY RUN: make {plan.target} METHOD={','.join(methods)} (nothing is started)")
    rc = 0
    for cfg in plan.configs(methods):
        print(f"\n## {cfg['name']}  ({plan.describe(cfg)})")
        problems = plan.machine_problems(cfg)
        print("### machine check: " + ("ok" if not blocking(problems) else f"{len(blocking(problems))} problem(s)"))
        for p in problems:
            print(f"- {p}")
        print("### resolved config")
        print(yaml.safe_dump(cfg, sort_keys=False).rstrip())
        print("### commands")
        env = plan.train_env(cfg)
        for step, cmd in plan.commands(cfg).items():
            prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " if step == "train" and env else ""
            print(f"[{step}] {prefix}{shlex.join(cmd)}")
        code, lines = plan.dry_checks(cfg)
        for line in lines:
            print(line)
        rc = max(rc, code)
    return rc


def run(plan: Plan, methods: list[str], runs: Path, *, skip_eval: bool = False) -> int:
    """Every step of every method, in order; a step already done (prompts written, run DONE,
    scores there) is not run again, so a second call resumes."""
    from repro.runs import Run, write_text_atomic
    from repro.trainers.openrlhf.prompts import prompt_manifest_path

    cfgs = plan.configs(methods)
    problems = sorted({p for c in cfgs for p in blocking(plan.machine_problems(c))})
    if problems:
        print(f"make {plan.target} cannot run on this machine:")
        for p in problems:
            print(f"  - {p}")
        print("Nothing was started. (DRY_RUN=1 prints the commands without these checks failing.)")
        return 2
    run_dirs: dict[str, Path] = {}
    base_eval = None
    for cfg in cfgs:
        cmds = plan.commands(cfg, python=sys.executable)
        p = cfg["paths"]
        if not Path(p["prompts_jsonl"]).exists():
            run_cmd(cmds["prepare_prompts"])
        manifest = json.loads(prompt_manifest_path(p["prompts_jsonl"]).read_text())
        cfg["data"]["prompt_set"] = {k: manifest[k] for k in ("source_rows", "multiple_of", "seed", "kept",
                                                              "dropped", "dropped_rows")}
        print(f"{cfg['name']}: training on {manifest['kept']} of {manifest['source_rows']} prompts "
              f"({manifest['dropped']} dropped, seed {manifest['seed']}: whole rollout batches of "
              f"{manifest['multiple_of']})", flush=True)
        rd = Path(p["run_dir"])
        run_dirs[cfg["method"]] = rd
        if plan.creates_run() and not Run(rd).meta_path.exists():
            Run.create(rd, cfg, seed=int(cfg["seed"]), method=cfg["method"],
                       extra_meta={"trainer": plan.engine, "commands": {k: shlex.join(v) for k, v in cmds.items()}})
        elif plan.creates_run() and Run(rd).config() != cfg:  # e.g. other --set overrides: not this run
            changed = config_differences(Run(rd).config(), cfg)
            print(f"make {plan.target}: {rd} was started with another config ({', '.join(changed[:6])}); "
                  "it is resumed only with the config it started with: use another --runs, or remove it")
            return 2
        if not Run(rd).is_done():
            run_cmd(cmds["train"] + plan.resume_args(cfg), env=plan.train_env(cfg))
            if plan.creates_run():
                Run(rd).mark_done({"trainer": plan.engine})
        if not skip_eval and Run(rd).eval_scores() is None:
            run_cmd(cmds["eval"])
        if not skip_eval and "eval_base" in cmds and _read_scores(Path(p["base_eval_dir"])) is None:
            run_cmd(cmds["eval_base"])
        if "base_eval_dir" in p:
            base_eval = Path(p["base_eval_dir"])
    size = cfgs[0]["size"]
    table = comparison_table(size, run_dirs, base_eval)
    outs = plan.comparison_paths(runs, size)
    for out in outs:
        write_text_atomic(out, table.to_csv(index=False))
    print(table.to_string(index=False))
    print("written: " + " and ".join(str(o) for o in outs))
    return 0
