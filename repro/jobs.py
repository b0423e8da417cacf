"""The runs of the CPU reproduction (``repro.demo``): which runs (``plan`` for the demo and
``--full``, ``ablation_plan`` for ``--ablation``), training them with the reference trainer, one
process each, ``n_jobs`` at a time (``run_all``), and the start checkpoint's held-out scores on
the same problems (``eval_base``).

A finished run (``DONE``) is reused when its saved config matches the job; an interrupted one
resumes from its newest checkpoint; a run another live invocation is training (its pid in
``<run>/RUNNING``) is not started twice.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from repro.objective import PAPER_R
from repro.runs import Run, flat_config, write_json_atomic



@dataclass(frozen=True)
class Job:
    """One run: its folder name under the output root, its config file (task, method), seed and
    the config overrides that make it differ from that file (saved in its config.yaml)."""
    name: str
    task: str
    method: str
    seed: int
    overrides: tuple = ()  # ((key, value), ...)


def plan(full: bool, seeds: int | None, tasks: list[str] | None, methods: list[str] | None) -> list[Job]:
    tasks = tasks or (["sum", "budget"] if full else ["sum"])
    methods = methods or (["grpo", "dapo", "lambda", "dr_grpo", "delta_l"] if full
                          else ["grpo", "dapo", "lambda"])
    n_seeds = seeds or (3 if full else 1)
    return [Job(f"{t}_{m}_s{s}", t, m, s) for s in range(n_seeds) for t in tasks for m in methods]


# the ablation of issue 13: λ's SGD learning rate × r, against DAPO and GRPO at the same seeds
ABLATION_LAMBDA_LRS = (0.1, 1.0, 10.0)
ABLATION_R_VALUES = (PAPER_R, 1 / 3)


def r_slug(r: float) -> str:
    """The part of a run folder's name that says r: '1-9' for the ablation's r values (1/n),
    else ``f"{r:g}"``."""
    return f"1-{round(1 / r)}" if r in ABLATION_R_VALUES else f"{r:g}"


ABLATION_RS = tuple((r, r_slug(r)) for r in ABLATION_R_VALUES)
ABLATION_BASELINES = ("dapo", "grpo")


def ablation_plan(seeds: int | None = None, tasks: list[str] | None = None,
                  lambda_lrs=ABLATION_LAMBDA_LRS, rs=ABLATION_RS) -> list[Job]:
    """The grid, in the order it is run: seed by seed, first DAPO and the cells where λ can
    move (λ lr ≥ 1; the largest lr and r first, both tasks each), then, again seed by seed,
    the paper's λ lr 0.1 and GRPO (both already compared with DAPO at 3 seeds in
    ``cpu_results.md``). An interrupted or shortened ablation thus leaves the question's
    cells, at whole seeds, done first."""
    tasks = tasks or ["sum", "budget"]
    core, extra = [], []
    cells = [(lr, r, rname) for lr in sorted(lambda_lrs, reverse=True)
             for r, rname in sorted(rs, reverse=True)]
    for s in range(seeds or 3):
        core += [Job(f"{t}_dapo_s{s}", t, "dapo", s) for t in tasks]
        for lr, r, rname in cells:
            for t in tasks:
                job = Job(f"{t}_lambda_lr{lr:g}_r{rname}_s{s}", t, "lambda", s,
                          (("weighting.lambda.lr", float(lr)), ("weighting.r", float(r))))
                (core if lr >= 1 or len(lambda_lrs) == 1 else extra).append(job)
        extra += [Job(f"{t}_{m}_s{s}", t, m, s) for t in tasks for m in ABLATION_BASELINES if m != "dapo"]
    return core + extra


def job_command(out: Path, job: Job, overrides: dict, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "repro.trainers.reference",
           "--task", job.task, "--method", job.method, "--out", str(out),
           "--no-progress", "--set", f"seed={job.seed}", "--set", "threads=1"]
    for k, v in {**overrides, **dict(job.overrides)}.items():
        cmd += ["--set", f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"]
    return cmd + (["--resume"] if resume else [])


def _config_mismatch(run: Run, job: Job, overrides: dict) -> list[str]:
    """Keys whose value in a finished run's saved config differs from what ``job`` asks for."""
    cfg = flat_config(run.config())
    want = {"seed": job.seed, "method": job.method, "task": job.task, **overrides, **dict(job.overrides)}
    bad = []
    for k, v in want.items():
        got = cfg.get(k)
        same = (math.isclose(float(got), float(v), rel_tol=1e-12)
                if isinstance(v, (int, float)) and isinstance(got, (int, float)) else got == v)
        if not same:
            bad.append(f"{k}: run has {got!r}, asked {v!r}")
    return bad


LOCK = "RUNNING"  # <run>/RUNNING: the pid of the process training it (written by run_all)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _busy_pid(out: Path) -> int | None:
    """The live pid training ``out`` (another invocation's), or None."""
    try:
        pid = int((out / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def run_all(root: Path, jobs_list: list[Job], overrides: dict, n_jobs: int, total_steps: int) -> int:
    """Run the jobs ``n_jobs`` at a time; one progress bar for all. A finished run is reused
    (after checking that its saved config matches the job), an interrupted one resumes from its
    newest checkpoint. A run that another live process is training (its pid in
    ``<run>/RUNNING``) is not started twice: it takes a slot until that process ends, and is
    then reused or resumed like any other."""
    def check_done(job: Job) -> bool:
        run = Run(root / job.name)
        if not run.is_done():
            return False
        bad = _config_mismatch(run, job, overrides)
        if bad:
            raise RuntimeError(f"{run.path} is finished but was made with another config ({'; '.join(bad)}): "
                               f"move it away or use another --out")
        return True

    pending = [j for j in jobs_list if not check_done(j)]
    n_launched = 0
    bar = tqdm(total=total_steps * len(jobs_list), desc="all runs", unit="step", dynamic_ncols=True)
    running: list[tuple[Job, subprocess.Popen | None, object, int | None]] = []
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def done_steps() -> int:
        n = 0
        for job in jobs_list:
            p = root / job.name / "metrics.jsonl"
            if p.exists():
                n += sum(1 for _ in open(p))
        return n

    for job in list(pending):  # runs other processes train take their slots from the start
        foreign = _busy_pid(root / job.name)
        if foreign is not None:
            pending.remove(job)
            running.append((job, None, None, foreign))
    failed = []
    while pending or running:
        while pending and len(running) < n_jobs:
            job = pending.pop(0)
            out = root / job.name
            if check_done(job):
                continue
            foreign = _busy_pid(out)
            if foreign is not None:  # another invocation trains it: wait for that process
                running.append((job, None, None, foreign))
                continue
            resume = (out / "checkpoints" / "latest").exists()
            if Run(out).metrics_path.exists() and not resume:
                shutil.rmtree(out)
            fh = open(logs / f"{out.name}.log", "a" if resume else "w")
            proc = subprocess.Popen(job_command(out, job, overrides, resume), stdout=fh, stderr=subprocess.STDOUT)
            out.mkdir(parents=True, exist_ok=True)
            (out / LOCK).write_text(f"{proc.pid}\n")
            running.append((job, proc, fh, None))
            n_launched += 1
        time.sleep(1.0)
        for item in list(running):
            job, proc, fh, foreign = item
            out = root / job.name
            if proc is None:
                if _pid_alive(foreign):
                    continue
                running.remove(item)
                if not check_done(job):  # it was interrupted: resume it here, in plan order
                    pending.append(job)
                    pending.sort(key=jobs_list.index)
                continue
            if proc.poll() is not None:
                fh.close()
                running.remove(item)
                if (out / LOCK).exists():
                    os.remove(out / LOCK)
                if proc.returncode != 0:
                    failed.append(job.name)
                    tail = (logs / f"{job.name}.log").read_text()[-2000:]
                    print(f"\nrun {job.name} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        n = done_steps()
        if n != bar.n:
            bar.n = n
            bar.refresh()
    bar.close()
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {failed}; logs in {logs}")
    return n_launched


def eval_base(root: Path, tasks: list[str], n_problems: int, cfg) -> dict:
    """Held-out scores of the starting checkpoint, same problems and budget as the runs
    (``cfg``: the runs' composed config, for its checkpoint and evaluation seed)."""
    from repro.tasks.arith import get_variant, sample_problems
    from repro.trainers.rollout import evaluate, load_policy

    out = {}
    for task in tasks:
        p = root / f"base_{task}.json"
        if p.exists():
            out[task] = json.loads(p.read_text())
            continue
        model, tok = load_policy(cfg.checkpoint_path)
        probs = sample_problems(n_problems, random.Random(cfg.eval_seed), "test")
        ev = evaluate(model, tok, probs, max_new_tokens=get_variant(task).max_new_tokens)
        write_json_atomic(p, ev)
        out[task] = ev
    return out

