"""Finding and loading runs for analysis, through ``repro.runs``: the run folder a notebook
reads, every run's metrics as one DataFrame with labels that keep suites and differently
configured runs apart, and every run's evaluation scores as rows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from repro import runs as runs_mod

DEFAULT_RUNS = "runs/demo"  # what `make demo` writes
RUNS_ENV = "LGRPO_RUNS"


def repo_root(start: str | Path | None = None) -> Path:
    """The package checkout: the nearest folder at or above ``start`` (default: cwd, then this
    file) that holds ``pyproject.toml`` and ``repro/``."""
    for base in ([Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve().parent]):
        for p in [base.resolve(), *base.resolve().parents]:
            if (p / "pyproject.toml").exists() and (p / "repro").is_dir():
                return p
    raise FileNotFoundError("cannot find the lambda-grpo checkout (pyproject.toml + repro/)")


def resolve_runs_dir(runs: str | Path | None = None) -> Path:
    """The run folder a notebook reads: ``runs`` if given, else ``$LGRPO_RUNS``, else
    ``runs/demo``. A relative path is taken relative to the checkout, not to the notebook."""
    p = Path(runs or os.environ.get(RUNS_ENV) or DEFAULT_RUNS).expanduser()
    return p if p.is_absolute() else repo_root() / p


def _suites(found, root: Path) -> dict:
    """Run -> (label, suite): the run's path relative to ``root``, and its parent folder there
    ('' when every run sits in one folder). Runs of different suites (e.g. runs/demo and
    runs/reproduce-cpu) are kept apart in every plot and table."""
    rel = {}
    for r in found:
        try:
            rel[r] = r.path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            rel[r] = Path(r.path.name)
    parents = {p.parent for p in rel.values()}
    return {r: (p.as_posix(), p.parent.as_posix() if len(parents) > 1 else "") for r, p in rel.items()}


SEED_ONLY_KEYS = {"seed", "threads", "init_checkpoint", "out", "output_dir"}


def config_id(run) -> str:
    """A short hash of the run's config without its seed (and thread count / paths), so that
    seeds of one experiment share it."""
    import hashlib
    import json

    cfg = run.config() if run.config_path.exists() else {}
    cfg = {k: v for k, v in (cfg or {}).items() if k not in SEED_ONLY_KEYS}
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _task_of(run) -> str:
    cfg = run.config() if run.config_path.exists() else {}
    t = (cfg or {}).get("task")
    t = t.get("name") if isinstance(t, dict) else t
    return str(t if t is not None else run.meta().get("task", "task"))


def run_labels(found, root: str | Path) -> dict:
    """Run -> (run label, task label). The run label is its path relative to ``root``. The task
    label is the config's task, prefixed by the run's folder when runs sit in several folders
    ('demo:sum'), and suffixed by a config hash when runs of one (task, method) differ in more
    than their seed ('sum#1a2b3c'): such runs are different experiments, not seeds, and are
    never pooled in a seed band."""
    suites = _suites(found, Path(root))
    base = {}
    for r in found:
        lab, suite = suites[r]
        base[r] = (lab, f"{suite}:{_task_of(r)}" if suite else _task_of(r), str(r.meta().get("method")),
                   config_id(r))
    n_cfg: dict = {}
    for lab, task, method, cid in base.values():
        n_cfg.setdefault((task, method), set()).add(cid)
    return {r: (lab, task if len(n_cfg[(task, method)]) <= 1 else f"{task}#{cid}")
            for r, (lab, task, method, cid) in base.items()}


def runs_by_label(found, root: str | Path) -> dict:
    """``{label: Run}`` with the labels ``load_runs`` puts in its ``run`` column."""
    return {lab: r for r, (lab, _) in _suites(found, Path(root)).items()}


def load_runs(runs_dir: str | Path):
    """``(runs, metrics)`` for every run under ``runs_dir`` (through ``repro.runs``). ``run`` is
    the run's path relative to ``runs_dir``; if runs sit in several folders, ``task`` is
    prefixed with the folder ('demo:sum'), so that suites are never pooled."""
    found = runs_mod.find_runs(runs_dir)
    labels = run_labels(found, runs_dir)
    frames = []
    for r in found:
        f = r.metrics_frame()
        if not len(f):
            continue
        f["run"], f["task"] = labels[r]
        f["config_id"] = config_id(r)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True) if frames else runs_mod.load_metrics([])
    if len(df):
        df["method"] = df["method"].astype(str)
        df["seed"] = df["seed"].fillna(-1).astype(int)
    return found, df


def require_runs(runs_dir: str | Path, found: Sequence) -> None:
    if not found:
        raise FileNotFoundError(
            f"no runs under {runs_dir} (a run folder holds meta.json and metrics.jsonl). "
            f"Run `make demo` first, or set {RUNS_ENV} to a folder of runs.")


# ----------------------------------------------------------------------------------------------
# evaluation scores (Run.eval_scores, Run.periodic_evals)
# ----------------------------------------------------------------------------------------------
def _bench_accuracies(block: dict, where: str) -> tuple[dict, str | None]:
    """``({benchmark: accuracy in %}, grader)`` from one evaluation in either layout:

    * ``repro.eval`` (the evaluation pipeline): ``{"primary_grader": g, "graders": {g:
      {"benchmarks": {b: {"accuracy": <percent>, ...}}}}}``; the primary grader's scores;
    * the reference trainer's held-out evaluation: ``{"benchmarks": {b: {"accuracy":
      <fraction>, "n": ...}}}``, converted to percent (a value above 1 is refused, not guessed).
    """
    if isinstance(block.get("graders"), dict):
        g = block.get("primary_grader") or next(iter(block["graders"]))
        bench = block["graders"][g].get("benchmarks", {})
        return {b: float(v["accuracy"]) for b, v in bench.items()}, g
    bench = block.get("benchmarks")
    if isinstance(bench, dict) and all(isinstance(v, dict) and "accuracy" in v for v in bench.values()):
        acc = {b: float(v["accuracy"]) for b, v in bench.items()}
        if any(not 0.0 <= a <= 1.0 for a in acc.values()):
            raise ValueError(f"{where}: trainer-layout accuracies must be fractions in [0, 1], got {acc}")
        return {b: 100.0 * a for b, a in acc.items()}, None
    raise ValueError(f"{where}: unrecognised scores layout (expected 'graders' from repro.eval or "
                     f"'benchmarks' from the reference trainer), keys {sorted(block)}")


def eval_frame(found, root: str | Path | None = None) -> pd.DataFrame:
    """Every run's evaluation scores as rows: run, method, seed, task, step, benchmark,
    accuracy (%), grader. Sources: ``Run.eval_scores`` (one evaluation without a step is the
    run's final checkpoint, at its last logged step; several may sit under ``"by_step": {step:
    <evaluation>}``; layouts: see ``_bench_accuracies``; anything else raises) and the
    in-training evaluations ``Run.periodic_evals`` (their own benchmark name, e.g.
    'sum_heldout200': a fixed subset evaluated at step 0 and every few steps)."""
    rows = []
    if root is None and found:
        root = os.path.commonpath([str(r.path.resolve().parent) for r in found])
    labels = run_labels(found, root or ".")
    for run in found:
        meta = run.meta()
        run_label, task = labels[run]
        base = {"run": run_label, "method": meta.get("method"), "seed": meta.get("seed"),
                "task": task or "task"}
        for rec in run.periodic_evals():
            acc = float(rec["accuracy"])
            if not 0.0 <= acc <= 1.0:
                raise ValueError(f"{run.periodic_evals_path}: accuracy must be a fraction, got {acc}")
            rows.append({**base, "step": int(rec["step"]), "benchmark": rec["benchmark"],
                         "accuracy": 100.0 * acc, "grader": None})
        sc = run.eval_scores()
        if sc is None:
            continue
        where = str(run.eval_dir / "scores.json")
        if not isinstance(sc, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if isinstance(sc.get("by_step"), dict):
            items = list(sc["by_step"].items())
        else:
            last = sc.get("step")
            if last is None:  # one evaluation without a step: the run's final checkpoint
                m = run.metrics()
                last = m[-1]["step"] if m else None
            items = [(last, sc)]
        for step, block in items:
            accs, grader = _bench_accuracies(block, where)
            for name, acc in accs.items():
                rows.append({**base, "step": int(step) if step is not None else None,
                             "benchmark": name, "accuracy": acc, "grader": grader})
    return pd.DataFrame(rows, columns=["run", "method", "seed", "task", "step", "benchmark", "accuracy",
                                       "grader"])
