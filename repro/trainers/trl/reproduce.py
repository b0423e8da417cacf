"""``make reproduce-1gpu [METHOD=grpo|dapo|lambda|dr_grpo|all] [DRY_RUN=1]``: the one-GPU path.

The TRL command builder of the one reproduce pipeline (``repro.trainers.reproduce``): per method,
the recipe ``repro/configs/trl/qwen2.5-1.5b-1gpu.yaml`` + its method layer, the prompts
(SimpleRL-Zoo MATH level 3-5 with the qwen-boxed template, cut to whole optimizer steps, by the
same ``prepare-prompts`` step as the OpenRLHF path), training through ``repro.trainers.trl``,
``python -m repro.eval`` on the final model and the comparison with Table 1's 1.5B rows.
``--dry-run`` needs no GPU: the machine check (without failing), the resolved config of each
method, the commands and TRL's own config checks.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro.paper import TABLE1_METHODS
from repro.trainers import reproduce as pipeline
from repro.trainers.trl.run import REPO, load_config, machine_problems

RECIPE = REPO / "repro" / "configs" / "trl" / "qwen2.5-1.5b-1gpu.yaml"
PROMPTS_FILE = "data/trl/simplelr_qwen_level3to5.{template}.b{step}.seed{seed}.jsonl"
run_cmd = pipeline.run_cmd


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
    cfg["paths"] = {"run_dir": str(run_dir), "prompts_jsonl": cfg["data"]["prompts_jsonl"],
                    "final_model": str(run_dir / "final"), "eval_dir": str(run_dir / "eval")}
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


class TRLPlan:
    engine = "trl"
    target = "reproduce-1gpu"

    def __init__(self, runs: Path, data_src: Path):
        self.runs, self.data_src = Path(runs), Path(data_src)

    def configs(self, methods):
        return [resolve(load_config(RECIPE, m), self.runs, self.data_src) for m in methods]

    def describe(self, cfg):
        return f"{RECIPE.relative_to(REPO)} + methods/{cfg['method']}.yaml"

    def machine_problems(self, cfg):
        from repro.trainers.models import model_problems

        # the run reads the model offline: the cache check with the command replaces trl.run's note
        return ([p for p in machine_problems(cfg, gpu=True) if not p.startswith(f"model {cfg['model']['name']} ")]
                + model_problems([str(cfg["model"]["name"])], target="reproduce-1gpu"))

    def commands(self, cfg, python="python"):
        return commands(cfg, self.data_src, python)

    def train_env(self, cfg):
        return {"HF_HUB_OFFLINE": "1"}  # the model was fetched before (make models), checked above

    def creates_run(self):
        return False  # repro.trainers.trl creates its run folder and marks it done

    def resume_args(self, cfg):
        rd = Path(cfg["paths"]["run_dir"]) / "checkpoints"
        return ["--resume"] if rd.is_dir() and any(rd.glob("checkpoint-*")) else []

    def comparison_paths(self, runs, size):
        return [self.runs / "trl" / "comparison-1gpu.csv"]

    def dry_checks(self, cfg):
        import contextlib
        import io

        from repro.trainers.trl.run import dry_run as one

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = one(cfg, gpu=True)
        # trl's own dry run repeats the machine check and the config: keep its TRL checks (the rest)
        lines = buf.getvalue().splitlines()
        first = next((i for i, ln in enumerate(lines) if ln.startswith(("### (", "### trl", "### λ-seam"))), len(lines))
        lines = lines[first:]
        return rc, lines


def dry_run(methods: list[str], runs: Path, data_src: Path) -> int:
    return pipeline.dry_run(TRLPlan(runs, data_src), methods)


def run(methods: list[str], runs: Path, data_src: Path, skip_eval: bool) -> int:
    return pipeline.run(TRLPlan(runs, data_src), methods, runs, skip_eval=skip_eval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.trl.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="all")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--data-src", default="../shared/data")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--nodes", type=int, default=None, help="NODES: only 1 (the one-GPU path)")
    ap.add_argument("--gpus-per-node", type=int, default=None, help="GPUS_PER_NODE: only 1 (the one-GPU path)")
    a = ap.parse_args(argv)
    for flag, v in (("NODES", a.nodes), ("GPUS_PER_NODE", a.gpus_per_node)):
        if v not in (None, 1):
            raise SystemExit(f"make reproduce-1gpu: {flag}={v}: this path trains on one GPU of one node (TRL colocate); "
                             "for several GPUs or nodes use make reproduce-1.5b NODES=N (OpenRLHF)")
    methods = methods_of(a.method)
    if a.dry_run:
        return dry_run(methods, Path(a.runs), Path(a.data_src))
    return run(methods, Path(a.runs), Path(a.data_src), a.skip_eval)


if __name__ == "__main__":
    sys.exit(main())
