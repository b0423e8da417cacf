"""``make reproduce-1gpu [METHOD=grpo|dapo|lambda|dr_grpo|all] [DRY_RUN=1]``: the one-GPU path.

For each method: check the machine, prepare the training prompts (SimpleRL-Zoo MATH level 3-5
with the qwen-boxed template, cut to whole optimizer steps), train with TRL through
``repro.trainers.trl`` (recipe ``repro/configs/trl/qwen2.5-1.5b-1gpu.yaml``), evaluate the final
model on the 8 benchmarks with ``python -m repro.eval``, and write the comparison with the paper's
Table 1 (its 1.5B rows). ``--dry-run`` needs no GPU: the machine check (without failing), the
resolved config of each method and the commands.

The prompt preparation and the Table 1 comparison are the paper-scale path's
(``repro.trainers.openrlhf.reproduce``: pure Python, no OpenRLHF import), so both paths train on
the same prompts and are compared the same way.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


from repro.paper import TABLE1_METHODS
from repro.trainers.openrlhf.reproduce import comparison_table, run_cmd
from repro.trainers.trl.run import REPO, load_config, machine_problems

RECIPE = REPO / "repro" / "configs" / "trl" / "qwen2.5-1.5b-1gpu.yaml"
PROMPTS_FILE = "data/trl/simplelr_qwen_level3to5.{template}.b{step}.seed{seed}.jsonl"


def prompts_per_step(cfg: dict) -> int:
    """Prompts in one optimizer step: whole steps keep every step's window full (options.check_window)."""
    t = cfg["trl"]
    samples = int(t["per_device_train_batch_size"]) * int(t["gradient_accumulation_steps"])
    return samples // int(t["num_generations"])


def resolve(cfg: dict, runs: Path, data_src: Path) -> dict:
    cfg = json.loads(json.dumps(cfg))
    run_dir = (runs / "trl" / f"{cfg['name']}-seed{cfg['seed']}").resolve()
    prompts = REPO / PROMPTS_FILE.format(template=cfg["data"]["template"], step=prompts_per_step(cfg),
                                         seed=cfg["seed"])
    cfg["data"]["train_parquet"] = str((data_src / cfg["data"]["train"]).resolve())
    cfg["data"]["prompts_jsonl"] = str(prompts.resolve())
    cfg["paths"] = {"run_dir": str(run_dir), "final_model": str(run_dir / "final"), "eval_dir": str(run_dir / "eval")}
    return cfg


def commands(cfg: dict, data_src: Path, python: str = "python") -> dict[str, list[str]]:
    d, p = cfg["data"], cfg["paths"]
    return {
        "prepare_prompts": [python, "-m", "repro.trainers.openrlhf.reproduce", "prepare-prompts",
                            "--parquet", d["train_parquet"], "--out", d["prompts_jsonl"], "--template", d["template"],
                            "--question-key", d["question_key"], "--answer-key", d["answer_key"],
                            "--multiple-of", str(prompts_per_step(cfg)), "--seed", str(cfg["seed"])],
        "train": [python, "-m", "repro.trainers.trl", "--config", str(RECIPE), "--method", cfg["method"],
                  "--out", p["run_dir"], "--set", f"data.prompts_jsonl={d['prompts_jsonl']}"],
        "eval": [python, "-m", "repro.eval", "--model", p["final_model"], "--benchmarks", str(cfg["eval"]["benchmarks"]),
                 "--out", p["eval_dir"], "--backend", "vllm", "--data-src", str(data_src),
                 "--paper-size", cfg["size"].upper()],
    }


def methods_of(arg: str) -> list[str]:
    return list(TABLE1_METHODS) if arg == "all" else [m.strip() for m in arg.split(",") if m.strip()]


def dry_run(methods: list[str], runs: Path, data_src: Path) -> int:
    from repro.trainers.trl.run import dry_run as one

    print(f"# DRY RUN: make reproduce-1gpu METHOD={','.join(methods)} (nothing is started)")
    rc = 0
    for m in methods:
        cfg = resolve(load_config(RECIPE, m), runs, data_src)
        print(f"\n## {cfg['name']}  ({RECIPE.relative_to(REPO)} + methods/{m}.yaml)")
        rc = max(rc, one(cfg, gpu=True))
        print("### commands")
        for step, cmd in commands(cfg, data_src).items():
            print(f"[{step}] {shlex.join(cmd)}")
    return rc


def run(methods: list[str], runs: Path, data_src: Path, skip_eval: bool) -> int:
    from repro.runs import Run, write_text_atomic

    cfgs = [resolve(load_config(RECIPE, m), runs, data_src) for m in methods]
    problems = sorted({p for c in cfgs for p in machine_problems(c, gpu=True) if not p.startswith("note:")})
    if problems:
        print("make reproduce-1gpu cannot run on this machine:")
        for p in problems:
            print(f"  - {p}")
        print("Nothing was started. (DRY_RUN=1 prints the config and commands without failing.)")
        return 2
    run_dirs = {}
    for cfg in cfgs:
        cmds = commands(cfg, data_src, python=sys.executable)
        if not Path(cfg["data"]["prompts_jsonl"]).exists():
            run_cmd(cmds["prepare_prompts"])
        rd = Path(cfg["paths"]["run_dir"])
        run_dirs[cfg["method"]] = rd
        if not Run(rd).is_done():
            resume = ["--resume"] if (rd / "checkpoints").is_dir() and any((rd / "checkpoints").glob("checkpoint-*")) else []
            run_cmd(cmds["train"] + resume)
        if not skip_eval and Run(rd).eval_scores() is None:
            run_cmd(cmds["eval"])
    table = comparison_table(cfgs[0]["size"], run_dirs)
    out = runs / "trl" / "comparison-1gpu.csv"
    write_text_atomic(out, table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"written: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.trl.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="all")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--data-src", default="../shared/data")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    a = ap.parse_args(argv)
    methods = methods_of(a.method)
    if a.dry_run:
        return dry_run(methods, Path(a.runs), Path(a.data_src))
    return run(methods, Path(a.runs), Path(a.data_src), a.skip_eval)


if __name__ == "__main__":
    sys.exit(main())
