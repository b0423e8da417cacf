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


# how a setting that tells runs apart is named in legends and titles (any other key: 'key=value')
# (Run.config() gives every run's weighting as the weighting: block, older layouts migrated)
SETTING_NAMES = {"weighting.lambda.lr": "λ lr", "weighting.lambda.init": "λ init", "weighting.r": "r",
                 "lr": "policy lr"}
MAX_SETTING_KEYS = 3  # more differing keys than this: the config hash names the setting


def _setting_value(key: str, v) -> str:
    if isinstance(v, float) and SETTING_NAMES.get(key) == "r":
        from repro.analysis.plots import r_name

        return r_name(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _config_settings(runs) -> dict:
    """Run -> a short name of what sets its config apart from the others in ``runs`` (one (task,
    method)): the differing keys, named ('λ lr 10, r 1/3'), else the config hash;
    '' when all share one config."""
    flat = {}
    for r in runs:
        cfg = r.config() if r.config_path.exists() else {}
        flat[r] = {k: v for k, v in runs_mod.dotted(cfg or {}).items() if k.split(".")[0] not in SEED_ONLY_KEYS}
    keys = sorted({k for f in flat.values() for k in f})
    differ = [k for k in keys if len({repr(f.get(k)) for f in flat.values()}) > 1]
    if not differ:
        return {r: "" for r in runs}
    if len(differ) > MAX_SETTING_KEYS:
        return {r: f"config {config_id(r)}" for r in runs}
    return {r: ", ".join(f"{SETTING_NAMES.get(k, k)}{' ' if k in SETTING_NAMES else '='}"
                         f"{_setting_value(k, flat[r].get(k))}" for k in differ) for r in runs}


def run_labels(found, root: str | Path) -> dict:
    """Run -> (run label, task label, base task, setting). The run label is its path relative to
    ``root``; the base task is the config's task. The setting names what tells the run apart from
    others of the same task and method: its folder when runs sit in several folders ('demo'),
    and the config keys in which runs of one (task, method) differ beyond their seed, in any
    folder ('λ lr 10, r 1/3'; the config hash when more than a few keys differ); '' when
    nothing does.
    The task label is the base task prefixed by the folder ('demo:sum') and suffixed by the
    config setting ('sum [λ lr 10, r 1/3]'): runs with different task labels are different
    experiments, never pooled in a seed band, and figures tell them apart by style and name
    the setting in the legend."""
    suites = _suites(found, Path(root))
    groups: dict = {}
    for r in found:
        groups.setdefault((_task_of(r), str(r.meta().get("method"))), []).append(r)
    out = {}
    for (task, _), rs in groups.items():
        for r, cfg_setting in _config_settings(rs).items():
            suite = suites[r][1]
            label = f"{suite}:{task}" if suite else task
            if cfg_setting:
                label += f" [{cfg_setting}]"
            setting = ", ".join(x for x in (suite, cfg_setting) if x)
            out[r] = (suites[r][0], label, task, setting)
    return out


def runs_by_label(found, root: str | Path) -> dict:
    """``{label: Run}`` with the labels ``load_runs`` puts in its ``run`` column."""
    return {lab: r for r, (lab, _) in _suites(found, Path(root)).items()}


def load_runs(runs_dir: str | Path):
    """``(runs, metrics)`` for every run under ``runs_dir`` (through ``repro.runs``). ``run`` is
    the run's path relative to ``runs_dir``; ``task``, ``base_task`` and ``setting`` are
    ``run_labels``': runs of several folders or configs are never pooled."""
    found = runs_mod.find_runs(runs_dir)
    labels = run_labels(found, runs_dir)
    frames = []
    for r in found:
        f = r.metrics_frame()
        if not len(f):
            continue
        f["run"], f["task"], f["base_task"], f["setting"] = labels[r]
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
    """``({benchmark: (accuracy in %, problems or None)}, grader)`` from one evaluation in either
    layout:

    * ``repro.eval`` (the evaluation pipeline): ``{"primary_grader": g, "graders": {g:
      {"benchmarks": {b: {"accuracy": <percent>, ...}}}}}``; the primary grader's scores;
    * the reference trainer's held-out evaluation: ``{"benchmarks": {b: {"accuracy":
      <fraction>, "n": ...}}}``, converted to percent (a value above 1 is refused, not guessed).
    """
    if isinstance(block.get("graders"), dict):
        g = block.get("primary_grader") or next(iter(block["graders"]))
        bench = block["graders"][g].get("benchmarks", {})
        return {b: (float(v["accuracy"]), v.get("n")) for b, v in bench.items()}, g
    bench = block.get("benchmarks")
    if isinstance(bench, dict) and all(isinstance(v, dict) and "accuracy" in v for v in bench.values()):
        acc = {b: float(v["accuracy"]) for b, v in bench.items()}
        if any(not 0.0 <= a <= 1.0 for a in acc.values()):
            raise ValueError(f"{where}: trainer-layout accuracies must be fractions in [0, 1], got {acc}")
        return {b: (100.0 * a, bench[b].get("n")) for b, a in acc.items()}, None
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
        run_label, task, base_task, setting = labels[run]
        base = {"run": run_label, "method": meta.get("method"), "seed": meta.get("seed"),
                "task": task or "task", "base_task": base_task, "setting": setting}
        for rec in run.periodic_evals():
            acc = float(rec["accuracy"])
            if not 0.0 <= acc <= 1.0:
                raise ValueError(f"{run.periodic_evals_path}: accuracy must be a fraction, got {acc}")
            rows.append({**base, "step": int(rec["step"]), "benchmark": rec["benchmark"],
                         "n": rec.get("n"), "accuracy": 100.0 * acc, "grader": None})
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
            for name, (acc, n) in accs.items():
                rows.append({**base, "step": int(step) if step is not None else None,
                             "benchmark": name, "n": n, "accuracy": acc, "grader": grader})
    return pd.DataFrame(rows, columns=["run", "method", "seed", "task", "base_task", "setting", "step",
                                       "benchmark", "n", "accuracy", "grader"])
