"""The package's main job on any laptop: λ-GRPO against GRPO and DAPO on CPU, end to end.

    python -m repro.demo --out runs/demo                   # = make demo (a few minutes, 2 cores)
    python -m repro.demo --full --out runs/reproduce-cpu   # = make reproduce-cpu (about 2 h)

From the committed checkpoint (``repro/assets/tiny-sum``, a 0.5 M-parameter Qwen2 pretrained on
the synthetic sum task by ``repro.trainers.pretrain``) it trains one run per (task, method, seed)
with the reference trainer and the configs in ``repro/configs/cpu``, evaluates every final
policy and the starting checkpoint on the same held-out problems with greedy decoding, and
writes, under ``--out``:

    <task>_<method>_s<seed>/   one run folder each (``repro.runs`` layout)
    base_<task>.json           the starting checkpoint's held-out scores
    results.csv, results.md    the comparison table (mean and 95% interval across seeds)
    figures/*.png              training curves (reward, length, λ, entropy) and final accuracy

Runs go ``--jobs`` at a time, each in its own process with one torch thread. A finished run
(``DONE``) is reused when the command is repeated; an interrupted one resumes from its newest
checkpoint.

demo:  task ``sum``; grpo, dapo, lambda; seed 0; 500 held-out problems.
full:  tasks ``sum`` and ``budget``; grpo, dapo, lambda, dr_grpo, delta_l; seeds 0, 1, 2;
       1,000 held-out problems.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from repro.analysis.plots import METHOD_LABELS as METHOD_NAMES  # the package's one copy of the labels
from repro.runs import Run, find_runs, weighting_of, write_json_atomic, write_text_atomic

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


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
ABLATION_RS = ((1 / 9, "1-9"), (1 / 3, "1-3"))
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


def _cmd(out: Path, job: Job, overrides: dict, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "repro.trainers.reference",
           "--task", job.task, "--method", job.method, "--out", str(out),
           "--no-progress", "--set", f"seed={job.seed}", "--set", "threads=1"]
    for k, v in {**overrides, **dict(job.overrides)}.items():
        cmd += ["--set", f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"]
    return cmd + (["--resume"] if resume else [])


def _config_mismatch(run: Run, job: Job, overrides: dict) -> list[str]:
    """Keys whose value in a finished run's saved config differs from what ``job`` asks for."""
    cfg = _flat_config(run)
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
    import os

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
    import os
    import shutil

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
            proc = subprocess.Popen(_cmd(out, job, overrides, resume), stdout=fh, stderr=subprocess.STDOUT)
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


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
def _mean_ci(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, T975.get(n - 1, 1.96) * sd / math.sqrt(n)


def _aggregate(rs: list[dict], cols) -> dict:
    """``{col: mean, col_ci95: 95% t-interval half-width}`` across the rows ``rs`` (seeds) for
    each column; a row without the column (missing key or None) is left out, and a column no
    row has is nan."""
    out = {}
    for c in cols:
        vals = [float(r[c]) for r in rs if r.get(c) is not None]
        out[c], out[c + "_ci95"] = _mean_ci(vals) if vals else (float("nan"), float("nan"))
    return out


def _csv(agg: list[dict], cols: list[str]) -> str:
    """The aggregated rows as CSV: floats to 6 significant digits, None empty."""
    def cell(v):
        return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else str(v))

    return ",".join(cols) + "\n" + "".join(",".join(cell(a[c]) for c in cols) + "\n" for a in agg)


def _pm(a: dict, col: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    """'mean ± ci' of an aggregated column ('–' when nan; no ± with one seed; the interval
    without a sign)."""
    v, ci = a[col] * scale, a[col + "_ci95"] * scale
    if math.isnan(v):
        return "–"
    return fmt.format(v) + ("" if math.isnan(ci) else " ± " + fmt.format(ci).lstrip("+"))


LAMBDA_STEPS = (25, 50, 100, 150)  # λ's trajectory in the ablation table (plus the final λ)


def _flat_config(run: Run) -> dict:
    """The run's config with its weighting also under the dotted keys the jobs override
    (``weighting.lambda.lr``) and flat (``method``, ``r``, ``lambda_lr``), old and new layouts."""
    cfg = dict(run.config() or {})
    w = weighting_of(cfg)
    cfg.update(w)
    cfg.update({f"weighting.{k}": v for k, v in w.items() if not k.startswith("lambda_")})
    cfg.update({f"weighting.lambda.{k[7:]}": v for k, v in w.items() if k.startswith("lambda_")})
    return cfg


def summarise(root: Path, base: dict, last: int = 20) -> list[dict]:
    """One row per run: final held-out scores and the mean of the last ``last`` training steps."""
    rows = []
    for run in find_runs(root):
        if not run.is_done():
            continue
        cfg, recs, sc = _flat_config(run), run.metrics(), run.eval_scores()
        ev = sc["benchmarks"][f"{cfg['task']}_heldout"]
        tail = recs[-last:]
        lam_at = {r["step"]: r["lambda"] for r in recs}
        rows.append({
            "name": run.path.name,
            "task": cfg["task"], "method": cfg["method"], "seed": cfg["seed"],
            "lambda_lr": cfg.get("lambda_lr"), "r": cfg.get("r"),
            "steps": recs[-1]["step"],
            "eval_accuracy": ev["accuracy"],
            "eval_gain": ev["accuracy"] - base[cfg["task"]]["accuracy"],
            "eval_length": ev["response_length_mean"],
            "eval_truncated": ev["truncated_rate"],
            "eval_verbose_share": ev["style_share"]["verbose"],
            "train_length": sum(r["response_length_mean"] for r in tail) / len(tail),
            "train_entropy": sum(r["entropy"] for r in tail) / len(tail),
            "final_lambda": recs[-1]["lambda"],
            **{f"lambda_at_{k}": lam_at.get(k) for k in LAMBDA_STEPS},
            "f_min_last": min(r["f_min"] for r in tail), "f_max_last": max(r["f_max"] for r in tail),
            "len_adv_cov_mean": sum(r["len_adv_cov"] for r in recs) / len(recs),
            "wall_s": json.loads(run.done_path.read_text()).get("wall_s"),
        })
    return rows


def table(rows: list[dict], base: dict) -> tuple[str, str, list[dict]]:
    """Markdown + CSV: per task and method, mean and 95% t-interval across seeds."""
    cols = ["eval_accuracy", "eval_gain", "eval_length", "eval_verbose_share", "train_length",
            "train_entropy", "final_lambda", "len_adv_cov_mean", "wall_s"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    agg = []
    order = list(METHOD_NAMES)
    for (task, method), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else len(order), kv[0][1])):
        agg.append({"task": task, "method": method, "seeds": len(rs), **_aggregate(rs, cols)})
    csv = _csv(agg, ["task", "method", "seeds"] + [x for c in cols for x in (c, c + "_ci95")])

    md = ["| task | method | seeds | held-out acc (%) | gain over start (pp) | eval length | "
          "verbose share | train length | entropy | final λ | cov(len, A) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in sorted({a["task"] for a in agg}):
        b = base[task]
        md.append(f"| {task} | start checkpoint | – | {100 * b['accuracy']:.1f} | – | "
                  f"{b['response_length_mean']:.1f} | {b['style_share']['verbose']:.2f} | – | – | – | – |")
        for a in [a for a in agg if a["task"] == task]:
            md.append(f"| {task} | {METHOD_NAMES.get(a['method'], a['method'])} | {a['seeds']} | "
                      f"{_pm(a, 'eval_accuracy', 100)} | {_pm(a, 'eval_gain', 100)} | "
                      f"{_pm(a, 'eval_length')} | {_pm(a, 'eval_verbose_share', 1, '{:.2f}')} | "
                      f"{_pm(a, 'train_length')} | {_pm(a, 'train_entropy', 1, '{:.3f}')} | "
                      f"{_pm(a, 'final_lambda', 1, '{:.3f}')} | "
                      f"{_pm(a, 'len_adv_cov_mean', 1, '{:+.2f}')} |")
    return "\n".join(md) + "\n", csv, agg


def comparisons(rows: list[dict], ref: str = "dapo") -> str:
    """Each method against ``ref`` on held-out accuracy and eval length: difference of means and
    a 95% interval (Welch, t with the smaller sample's df); 'exceeds seed noise' when the
    interval excludes 0. Needs >= 2 seeds per method."""
    out = [f"| task | method vs {METHOD_NAMES.get(ref, ref)} | Δ acc (pp) | 95% CI | beyond noise? | "
           "Δ length | 95% CI | beyond noise? |", "|---|---|---|---|---|---|---|---|"]
    tasks = sorted({r["task"] for r in rows})
    any_row = False
    for task in tasks:
        by_m: dict[str, list[dict]] = {}
        for r in rows:
            if r["task"] == task:
                by_m.setdefault(r["method"], []).append(r)
        if ref not in by_m or len(by_m[ref]) < 2:
            continue
        for m, rs in sorted(by_m.items(), key=lambda kv: list(METHOD_NAMES).index(kv[0])
                            if kv[0] in METHOD_NAMES else 99):
            if m == ref or len(rs) < 2:
                continue
            cells = []
            for key, scale in (("eval_accuracy", 100), ("eval_length", 1)):
                a = [r[key] * scale for r in rs]
                b = [r[key] * scale for r in by_m[ref]]
                d = sum(a) / len(a) - sum(b) / len(b)
                va = _mean_ci(a)[1] / T975[len(a) - 1]
                vb = _mean_ci(b)[1] / T975[len(b) - 1]
                ci = T975[min(len(a), len(b)) - 1] * math.sqrt(va ** 2 + vb ** 2)
                cells += [f"{d:+.1f}", f"± {ci:.1f}", "yes" if abs(d) > ci else "no"]
            out.append(f"| {task} | {METHOD_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
            any_row = True
    return "\n".join(out) + "\n" if any_row else ""


# ----------------------------------------------------------------------------------------------
# the ablation (issue 13): λ's learning rate × r, each cell against DAPO paired by seed
# ----------------------------------------------------------------------------------------------
def _cell(r: dict) -> tuple:
    """(task, method, λ lr, r) for λ-GRPO runs; (task, method, None, None) for fixed weights."""
    if r["method"] == "lambda":
        return r["task"], "lambda", float(r["lambda_lr"]), float(r["r"])
    return r["task"], r["method"], None, None


LR_NOTE = "lr: λ's SGD learning rate (not the policy's)"


def _cell_name(c: tuple) -> str:
    task, method, lr, r = c
    if method != "lambda":
        return METHOD_NAMES.get(method, method)
    from repro.analysis import r_name

    return f"λ-GRPO lr {lr:g}, r {r_name(r)}"


def h_floor_note(rs, G: int, sigma: str = "sample") -> str:
    """The smallest h any group of G lengths can give for each r (Samuelson bound on |z|)."""
    from repro.objective import max_abs_z

    zmax = max_abs_z(G, sigma)
    parts = [f"r = {r:.4g}: h ≥ 1 − r·{zmax:.3f} = {1 - r * zmax:.3f}" for r in sorted(set(rs))]
    ok = all(1 - r * zmax > 0 for r in rs)
    return (f"With G = {G} and {sigma} σ, |z| ≤ (G−1)/√G = {zmax:.3f}, so " + "; ".join(parts)
            + (": h > 0 for every possible group, h^λ is always defined." if ok else
               ": **h can reach 0**; such runs stop with repro.objective's ValueError."))


def ablation_table(rows: list[dict], ref: str = "dapo") -> tuple[str, str, list[dict]]:
    """Per cell: seeds, final λ and λ at LAMBDA_STEPS, the realised f range over the last
    steps, held-out accuracy and length (mean ± 95% t-interval across seeds) and the difference
    to ``ref`` paired by seed (mean ± 95% t-interval of the per-seed differences)."""
    cells: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        cells.setdefault(_cell(r), {})[r["seed"]] = r
    order = {"dapo": 0, "grpo": 1, "lambda": 2}
    keys = sorted(cells, key=lambda c: (c[0], order.get(c[1], 9), c[2] or 0, c[3] or 0))
    agg = []
    for c in keys:
        by_seed = cells[c]
        rs = [by_seed[k] for k in sorted(by_seed)]
        a = {"task": c[0], "method": c[1], "lambda_lr": c[2], "r": c[3], "cell": _cell_name(c),
             "seeds": len(rs), "seed_list": " ".join(str(k) for k in sorted(by_seed))}
        a.update(_aggregate(rs, ("final_lambda", *[f"lambda_at_{k}" for k in LAMBDA_STEPS], "f_min_last",
                                 "f_max_last", "eval_accuracy", "eval_length", "eval_verbose_share")))
        refs = cells.get((c[0], ref, None, None), {})
        paired = [k for k in sorted(by_seed) if k in refs]
        a["paired_seeds"] = len(paired)
        for col, scale in (("eval_accuracy", 100.0), ("eval_length", 1.0)):
            d = [scale * (by_seed[k][col] - refs[k][col]) for k in paired]
            a[f"d_{col}"], a[f"d_{col}_ci95"] = _mean_ci(d) if d else (float("nan"), float("nan"))
        agg.append(a)
    csv = _csv(agg, list(agg[0]) if agg else [])

    def beyond(a, col):
        v, ci = a[col], a[col + "_ci95"]
        return "–" if math.isnan(v) or math.isnan(ci) else ("yes" if abs(v) > ci else "no")

    md = ["| task | cell | seeds | final λ | λ at " + " / ".join(str(k) for k in LAMBDA_STEPS)
          + " | f min / max (last 20 steps) | held-out acc (%) | eval length | "
          f"Δ acc vs {METHOD_NAMES[ref]} (pp, paired) | beyond noise? | Δ length (paired) | beyond noise? |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in agg:
        traj = " / ".join("–" if math.isnan(a[f"lambda_at_{k}"]) else f"{a[f'lambda_at_{k}']:+.2f}"
                          for k in LAMBDA_STEPS)
        is_ref = a["method"] == ref
        md.append(
            f"| {a['task']} | {a['cell']} | {a['seeds']} | {_pm(a, 'final_lambda', 1, '{:+.3f}')} | {traj} | "
            f"{a['f_min_last']:.3f} / {a['f_max_last']:.3f} | {_pm(a, 'eval_accuracy', 100)} | "
            f"{_pm(a, 'eval_length')} | "
            + ("(reference) | | | |" if is_ref else
               f"{_pm(a, 'd_eval_accuracy', 1, '{:+.1f}')} | {beyond(a, 'd_eval_accuracy')} | "
               f"{_pm(a, 'd_eval_length', 1, '{:+.1f}')} | {beyond(a, 'd_eval_length')} |"))
    return "\n".join(md) + "\n", csv, agg


def ablation_figures(root: Path, agg: list[dict], names: set[str]) -> list[Path]:
    """λ against step per cell (mean over seeds, min-max band when > 1 seed), the realised f
    range, the paired accuracy difference to DAPO per cell, and accuracy over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repro import analysis as an

    runs = [r for r in find_runs(root) if r.is_done() and r.path.name in names]
    figdir = root / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    recs = []
    for run in runs:
        c = _cell(_flat_config(run))
        for m in run.metrics():
            recs.append({"cell": _cell_name(c), "task": c[0], "lr": c[2], "r": c[3], "seed": run.config()["seed"],
                         "step": m["step"], "lambda": m["lambda"], "f_min": m["f_min"], "f_max": m["f_max"]})
    import pandas as pd

    df = pd.DataFrame(recs)
    if df.empty:  # no finished run yet (e.g. --report-only before training): the report lists them
        return []
    tasks = sorted(df["task"].unique())
    lam = df[df["lr"].notna()]
    cells = sorted(lam["cell"].unique(), key=lambda n: (lam[lam.cell == n].lr.iloc[0], lam[lam.cell == n].r.iloc[0]))
    colors = dict(zip(cells, plt.cm.viridis([i / max(1, len(cells) - 1) for i in range(len(cells))])))
    paths = []
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.2 * len(tasks), 7.4), squeeze=False)
    for j, task in enumerate(tasks):
        for cell in cells:
            d = lam[(lam.task == task) & (lam.cell == cell)]
            if not len(d):
                continue
            ls = "-" if math.isclose(d.r.iloc[0], 1 / 9) else "--"
            b = an.seed_band(d, "lambda", by=("cell",))
            an.plot_band(axes[0][j], b, color=colors[cell], ls=ls, alpha=0.15,
                         label=an.seeds_label(cell, int(b["n_seeds"].max())))
            for col in ("f_min", "f_max"):  # the seed mean, smoothed as every training curve
                b = an.smooth_band(an.seed_band(d, col, by=("cell",)), 10)
                axes[1][j].plot(b["step"], b["mean"], color=colors[cell], ls=ls, lw=1)
        axes[0][j].axhline(0, color="grey", lw=0.8, ls=":")
        axes[0][j].set_title(f"λ, task '{task}' (mean over seeds; band min–max)")
        axes[0][j].set_ylabel("λ")
        axes[1][j].axhline(1, color="grey", lw=0.8, ls=":")
        axes[1][j].set_title(f"per-step min and max of f, task '{task}' (seed mean, 10-step smoothing)")
        axes[1][j].set_ylabel("f (DAPO: 1)")
        for i in range(2):
            axes[i][j].set_xlabel("optimizer step")
    axes[0][0].legend(fontsize=7, title=LR_NOTE, title_fontsize=7)
    fig.suptitle(f"λ-GRPO cells of the ablation\n{LR_NOTE}; solid r = 1/9, dashed r = 1/3", fontsize=9)
    fig.tight_layout()
    p = figdir / "ablation_lambda_f.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    # paired differences to DAPO
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [a for a in agg if a["task"] == task and a["method"] != "dapo"]
        ys = list(range(len(rows)))
        for y, a in zip(ys, rows):
            ci = a["d_eval_accuracy_ci95"]
            ax.errorbar(a["d_eval_accuracy"], y, xerr=None if math.isnan(ci) else ci, fmt="o",
                        color=an.METHOD_COLORS["grpo"] if a["method"] == "grpo" else colors.get(a["cell"], "k"),
                        capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ext = [abs(a["d_eval_accuracy"]) + (0 if math.isnan(a["d_eval_accuracy_ci95"]) else a["d_eval_accuracy_ci95"])
               for a in rows if not math.isnan(a["d_eval_accuracy"])]
        lim = max([5.0] + ext) * 1.1  # symmetric about 0, at least ±5 pp
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-0.8, max(len(rows), 1) - 0.2)
        ax.set_yticks(ys, [f"{a['cell']} (n={a['paired_seeds']})" for a in rows], fontsize=8)
        ax.set_xlabel("held-out accuracy − DAPO, same seed (pp); bar: 95% t-interval")
        ax.set_title(f"task '{task}'")
    fig.suptitle(f"each cell minus DAPO at the same seed\n{LR_NOTE}", fontsize=9)
    fig.tight_layout()
    p = figdir / "ablation_vs_dapo.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    # accuracy over training (the periodic evaluation), per cell
    ev = an.eval_frame(runs, root)
    ev = ev[ev["benchmark"].str.contains("heldout") & ev["step"].notna()]
    per = ev[ev.groupby("run")["step"].transform("nunique") > 1]
    if len(per):
        cell_of = {}
        for run in runs:
            cell_of[run.path.name] = _cell_name(_cell(_flat_config(run)))
        # the cell name tells the runs apart (as the curve's 'method'), so the task label drops its
        # setting ('sum [λ lr 10, r 1/3]') and no setting is named twice
        per = per.assign(method=per["run"].map(lambda n: cell_of.get(Path(n).name, n)),
                         task=per["base_task"], setting="")
        fig = an.fig_eval_curves(per, colors={**{c: colors[c] for c in cells},
                                              **{METHOD_NAMES[m]: an.METHOD_COLORS[m] for m in ABLATION_BASELINES}})
        fig.suptitle(f"held-out accuracy over training per cell\n{LR_NOTE}", fontsize=9)
        fig.tight_layout()
        p = figdir / "ablation_accuracy_curves.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def _bar_values(ax, xs, tops, texts) -> None:
    for x, y, t in zip(xs, tops, texts):
        ax.annotate(t, (x, y), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)


def figure_task(task: str, df, per, rows: list[dict], base_acc: float, n_final: int, smooth: int = 10):
    """The demo's figure for one task, a 2 × 3 grid: train reward, response length and token
    entropy (seed band, a centred rolling mean over ``smooth`` steps); λ of the methods that learn
    it; held-out accuracy over training on the in-training problem set (``per``: every
    evaluation drawn, step 0 = the start checkpoint); final held-out accuracy per method on the
    ``n_final`` problems of the final evaluation, with the start checkpoint on the same problems.
    Every accuracy panel names its problem set."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from repro import analysis as an
    from repro.objective import METHODS

    d = df[df["task"] == task]
    methods = [m for m in METHOD_NAMES if m in set(d["method"])]
    seeds = d.groupby("method")["seed"].nunique()
    # methods that coincide (λ-GRPO at λ ≈ 0 is DAPO) stay visible: each drawn narrower than the last
    lw = {m: max(1.1, 2.6 - 0.7 * i) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.6))
    panels = [("reward_mean", "train reward (+1 / −0.5 / −1)"), ("response_length_mean", "response length (tokens)"),
              ("entropy", "token entropy (nats / token)")]
    for ax, (col, title) in zip(axes[0], panels):
        band = an.seed_band(d, col)
        for method in methods:
            b = an.smooth_band(band[band["method"] == method].sort_values("step"), smooth)
            an.plot_band(ax, b, color=an.METHOD_COLORS.get(method), lw=lw[method],
                         label=an.seeds_label(METHOD_NAMES[method], int(seeds[method])))
        ax.set_title(f"{title}\nrolling mean over {smooth} steps", fontsize=10)
        ax.set_xlabel("optimizer step")
    axes[0][0].legend(fontsize=8)
    ax = axes[1][0]  # λ: only the methods that learn it (the others keep λ = 0 by construction)
    learn = [m for m in methods if m in METHODS and METHODS[m].learnable]
    band = an.seed_band(d[d["method"].isin(learn)], "lambda") if learn else None
    for method in learn:
        b = band[band["method"] == method].sort_values("step")
        an.plot_band(ax, b, color=an.METHOD_COLORS.get(method), lw=1.4,
                     label=an.seeds_label(METHOD_NAMES[method], int(seeds[method])))
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    fixed = [METHOD_NAMES[m] for m in methods if m not in learn]
    ax.set_title("λ (learned); " + (f"{', '.join(fixed)}: no λ" if fixed else "every step drawn"), fontsize=10)
    ax.set_xlabel("optimizer step")
    if learn:
        ax.legend(fontsize=8)
    ax = axes[1][1]  # held-out accuracy over training (the in-training evaluation)
    dp = per[per["task"] == task] if len(per) else per
    if len(dp):
        n_per = int(dp["n"].iloc[0])
        band = an.seed_band(dp, "accuracy")
        for method in [m for m in methods if m in set(dp["method"])]:
            b = band[band["method"] == method].sort_values("step")
            an.plot_band(ax, b, color=an.METHOD_COLORS.get(method), k=100, alpha=0.15, marker="o",
                         ms=2 + 1.5 * lw[method], lw=lw[method],
                         label=an.seeds_label(METHOD_NAMES[method], int(b["n_seeds"].max())))
        same = (f"the first {n_per} of the {n_final} on the right" if n_per < n_final else
                f"the right panel's {n_final} are the first {n_final} of these" if n_per > n_final else
                "the same problems as on the right")
        ax.set_title(f"held-out accuracy over training: {n_per} fixed problems\n({same}; greedy)",
                     fontsize=10)
        ax.set_ylabel(f"accuracy on {n_per} problems (%)")
        ax.set_xlabel("optimizer step (0 = start checkpoint)")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.set_title("no in-training evaluation (eval_every = 0)", fontsize=10)
        ax.axis("off")
    ax = axes[1][2]  # final accuracy: the final evaluation's problem set, start checkpoint on the same
    rs = pd.DataFrame([r for r in rows if r["task"] == task])
    order = [m for m in METHOD_NAMES if m in set(rs["method"])]
    means = [100 * rs[rs.method == m].eval_accuracy.mean() for m in order]
    cis = [100 * _mean_ci(list(rs[rs.method == m].eval_accuracy))[1] for m in order]
    one_seed = all(math.isnan(c) for c in cis)  # one seed: no interval, not a zero one
    xs = list(range(len(order)))
    ax.bar(xs, means, color=[an.METHOD_COLORS.get(m, "tab:gray") for m in order], width=0.6)
    ax.set_xticks(xs, [METHOD_NAMES[m] for m in order])
    if not one_seed:  # an interval only where a method has >= 2 seeds (nan: none drawn)
        ax.errorbar(xs, means, yerr=cis, fmt="none", ecolor="k", capsize=4)
    tops = [m + (0 if math.isnan(c) else c) for m, c in zip(means, cis)]
    _bar_values(ax, xs, tops, [f"{m:.1f}" for m in means])
    ax.axhline(100 * base_acc, color="k", ls="--", lw=1, label=f"start checkpoint {100 * base_acc:.1f} %")
    ax.set_ylim(0, max(tops + [100 * base_acc]) * 1.35)  # headroom: the legend sits above the bars
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(f"accuracy on {n_final} problems (%)")
    ax.set_title(f"final held-out accuracy: {n_final} problems\n(greedy, after the last step"
                 f"{'' if one_seed else '; ± 95% t-interval'})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    n = sorted(set(int(seeds[m]) for m in methods))
    fig.suptitle(f"task '{task}': {'/'.join(map(str, n))} seed{'s' if n != [1] else ''} per method"
                 + (" (mean over seeds; band min–max)" if n != [1] else ""), fontsize=11)
    fig.tight_layout()
    return fig


def task_figures(root: Path, rows: list[dict], base: dict) -> dict:
    """``{task: figure_task's figure}`` for the finished runs under ``root``."""
    import pandas as pd

    from repro.runs import load_metrics

    done = [r for r in find_runs(root) if r.is_done()]
    df = load_metrics(done)
    per = pd.DataFrame([{**p, "task": r.config()["task"], "method": _flat_config(r)["method"],
                         "seed": r.config()["seed"]} for r in done for p in r.periodic_evals()])
    out = {}
    for task in sorted(df["task"].unique()):
        n_final = {int(base[task]["n"])} | {int(r.eval_scores()["benchmarks"][f"{task}_heldout"]["n"])
                                            for r in done if r.config()["task"] == task}
        if len(n_final) != 1:
            raise ValueError(f"task {task}: the runs' final evaluations and the start checkpoint's use different "
                             f"problem counts {sorted(n_final)}; they cannot share one panel")
        out[task] = figure_task(task, df, per, rows, base[task]["accuracy"], n_final.pop())
    return out


def figures(root: Path, rows: list[dict], base: dict) -> list[Path]:
    """Per task, ``figure_task``'s 2 × 3 grid, ``<root>/figures/<task>_curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir = root / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, fig in task_figures(root, rows, base).items():
        p = figdir / f"{task}_curves.png"
        fig.savefig(p, dpi=FIG_DPI)
        plt.close(fig)
        paths.append(p)
    return paths


FIG_DPI = 110


HAND_MARK = "\n## What this shows (written by hand"


def _keep_hand_section(dest: Path, text: str) -> str:
    """Regenerated files keep the hand-written reading at their end (from HAND_MARK on)."""
    if dest.exists():
        old = dest.read_text()
        if HAND_MARK in old:
            return text.rstrip("\n") + "\n" + old[old.index(HAND_MARK):]
    return text


def run_ablation(a, argv) -> None:
    """``--ablation``: the grid of ``ablation_plan``, its table and figures."""
    from repro.trainers.reference import load_cpu_config

    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    lrs = tuple(a.lambda_lrs) if a.lambda_lrs else ABLATION_LAMBDA_LRS
    rs = tuple((r, {1 / 9: "1-9", 1 / 3: "1-3"}.get(r, f"{r:g}")) for r in a.rs) if a.rs else ABLATION_RS
    jobs = ablation_plan(a.seeds, a.tasks, lrs, rs)
    n_eval = a.eval_problems or 1000
    overrides = {"eval_problems": n_eval, "eval_every": a.eval_every,
                 "eval_every_problems": a.eval_every_problems}
    if a.steps:
        overrides["steps"] = a.steps
    cfg0 = load_cpu_config(jobs[0].task, "lambda")
    steps = a.steps or cfg0.steps
    t0 = time.time()
    print(f"ablation: {len(jobs)} runs ({a.jobs} at a time), {steps} steps each, held-out eval on "
          f"{n_eval} problems at the end and on {a.eval_every_problems} every {a.eval_every} steps -> {root}")
    launched = 0 if a.report_only else run_all(root, jobs, overrides, a.jobs, steps)
    tasks = sorted({j.task for j in jobs})
    base = eval_base(root, tasks, n_eval, cfg0)
    names = {j.name for j in jobs}
    rows = [r for r in summarise(root, base) if r["name"] in names]
    missing = [j.name for j in jobs if not Run(root / j.name).is_done()]
    md, csv, agg = ablation_table(rows)
    figs = ablation_figures(root, agg, names)
    wall = time.time() - t0
    train_min = sum(r["wall_s"] or 0 for r in rows) / 60
    cmd = "python -m repro.demo " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        "# CPU ablation: when λ can move, does a learned token preference help?\n\n"
        f"Command: `{cmd}` (= `make ablation-cpu`)  \n"
        f"Wall time of this invocation: {wall / 60:.1f} min ({launched} of {len(jobs)} runs trained in it, "
        f"{a.jobs} at a time; the rest reused). Sum of the runs' own training wall times: {train_min:.1f} min.  \n"
        f"Grid: λ's SGD learning rate {{{', '.join(f'{x:g}' for x in lrs)}}} × r {{{', '.join(n.replace('-', '/') for _, n in rs)}}} "
        f"on tasks {', '.join(tasks)}, against {', '.join(METHOD_NAMES[m] for m in ABLATION_BASELINES)} at the same seeds; "
        f"{steps} optimizer steps per run, every other setting as in `repro/configs/cpu/` (the reproduction).  \n"
        + (f"**Not finished: {len(missing)} of the {len(jobs)} runs** ({', '.join(missing)}); the table "
           f"holds the {len(rows)} finished ones (`--report-only` tabulated what was there; rerunning the "
           f"command trains the rest, reusing these).  \n" if missing else "")
        + f"{h_floor_note([r for r, _ in rs], cfg0.group_size, getattr(cfg0.weighting.params, 'sigma', 'sample'))}  \n"
        f"Held-out accuracy and length: greedy decoding on {n_eval} test-split problems after the last step; "
        "± is the 95% t-interval across seeds (none with one seed). Δ vs DAPO is paired by seed: the same seed "
        "gives every method the same training problems and the same sampling seeds, and at λ = 0 λ-GRPO's "
        "first step is DAPO's exactly, so runs of one seed share their first rollout; the interval is the "
        "t-interval of the per-seed differences. f min / max: the smallest f_min and largest f_max over the "
        "last 20 steps (seed mean); DAPO's f is 1. λ at steps: seed means.\n\n"
        + f"Start checkpoint (held-out, {n_eval} problems): "
        + "; ".join(f"{t} {100 * base[t]['accuracy']:.1f} %, length {base[t]['response_length_mean']:.1f}"
                    for t in tasks) + ".\n\n" + md
        + "\n![λ and f](figures/ablation_lambda_f.png)\n\n![vs DAPO](figures/ablation_vs_dapo.png)\n\n"
        "![accuracy over training](figures/ablation_accuracy_curves.png)\n")
    write_text_atomic(root / "ablation.md", _keep_hand_section(root / "ablation.md", text))
    write_text_atomic(root / "ablation.csv", csv)
    if a.artifacts:
        import shutil

        dest = Path(a.artifacts)
        (dest / "figures").mkdir(parents=True, exist_ok=True)
        for p in figs:
            shutil.copyfile(p, dest / "figures" / p.name)
        write_text_atomic(dest / "ablation_cpu.csv", csv)
        write_text_atomic(dest / "ablation_cpu.md", _keep_hand_section(dest / "ablation_cpu.md", text))
    print(text)
    print("figures:", ", ".join(str(p) for p in figs))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--full", action="store_true", help="both tasks, 5 methods, 3 seeds, 1,000 eval problems")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at a time, one torch thread each (default: 3, so the demo's three runs "
                         "share 2 cores at once instead of leaving one core idle for the last run; "
                         "--ablation: 2)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the configs' step count")
    ap.add_argument("--eval-problems", type=int, default=None)
    ap.add_argument("--artifacts", default=None, metavar="DIR",
                    help="also write DIR/cpu_results.md and DIR/figures/cpu_*.png "
                         "(--ablation: DIR/ablation_cpu.md, .csv and DIR/figures/ablation_*.png)")
    ap.add_argument("--ablation", action="store_true",
                    help="λ lr {0.1, 1, 10} × r {1/9, 1/3} on sum and budget, 3 seeds, vs DAPO and GRPO")
    ap.add_argument("--lambda-lrs", nargs="*", type=float, default=None, help="--ablation: λ lrs")
    ap.add_argument("--rs", nargs="*", type=float, default=None, help="--ablation: r values")
    ap.add_argument("--eval-every", type=int, default=25, help="--ablation: in-training eval period")
    ap.add_argument("--report-only", action="store_true",
                    help="--ablation: train nothing, tabulate the finished runs and list the missing ones")
    ap.add_argument("--eval-every-problems", type=int, default=200,
                    help="--ablation: fixed held-out problems of the in-training eval")
    a = ap.parse_args(argv)
    if a.ablation:
        a.jobs = a.jobs or 2
        return run_ablation(a, argv)
    a.jobs = a.jobs or 3
    from repro.trainers.reference import load_cpu_config

    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(a.full, a.seeds, a.tasks, a.methods)
    n_eval = a.eval_problems or (1000 if a.full else 500)
    overrides = {"eval_problems": n_eval}
    if a.steps:
        overrides["steps"] = a.steps
    cfg0 = load_cpu_config(jobs[0].task, jobs[0].method)
    steps = a.steps or cfg0.steps
    t0 = time.time()
    print(f"{len(jobs)} runs ({a.jobs} at a time), {steps} steps each, "
          f"held-out eval on {n_eval} problems -> {root}")
    launched = run_all(root, jobs, overrides, a.jobs, steps)
    tasks = sorted({j.task for j in jobs})
    base = eval_base(root, tasks, n_eval, cfg0)
    names = {j.name for j in jobs}
    rows = [r for r in summarise(root, base) if r["name"] in names]
    md, csv, _ = table(rows, base)
    cmp = comparisons(rows)
    wall = time.time() - t0
    cmd = "python -m repro.demo " + " ".join(argv if argv is not None else sys.argv[1:])
    train_min = sum(r["wall_s"] or 0 for r in rows) / 60
    text = (f"# CPU reproduction results\n\nCommand: `{cmd}`  \nWall time of this invocation: "
            f"{wall / 60:.1f} min ({launched} of {len(jobs)} runs trained in it, {a.jobs} at a time; "
            f"the rest reused).  \nSum of the runs' own training wall times: {train_min:.1f} min.  \nHeld-out accuracy: greedy decoding on {n_eval} test-split "
            f"problems; ± is the 95% t-interval across seeds (none with one seed).  \n"
            f"Columns: eval length and verbose share are on the held-out set (greedy); train length "
            f"and entropy are means over the last 20 training steps; cov(len, A) is the run's mean "
            f"within-group covariance of response length and advantage, the quantity λ follows.\n\n"
            + md)
    if cmp:
        text += "\n## Differences against DAPO (Welch 95% interval across seeds)\n\n" + cmp
    write_text_atomic(root / "results.md", text)
    write_text_atomic(root / "results.csv", csv)
    write_text_atomic(root / "runs.csv", ",".join(rows[0]) + "\n" + "".join(
        ",".join(str(v) for v in r.values()) + "\n" for r in rows) if rows else "")
    figs = figures(root, rows, base)
    if a.artifacts:
        import shutil

        dest = Path(a.artifacts)
        (dest / "figures").mkdir(parents=True, exist_ok=True)
        names = []
        for p in figs:
            shutil.copyfile(p, dest / "figures" / f"cpu_{p.name}")
            names.append(f"![{p.stem}](figures/cpu_{p.name})")
        write_text_atomic(dest / "cpu_results.md", text + "\n" + "\n\n".join(names) + "\n")
    print(text)
    print("figures:", ", ".join(str(p) for p in figs))


if __name__ == "__main__":
    main()
