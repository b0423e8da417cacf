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
from pathlib import Path

from tqdm import tqdm

from repro.runs import Run, find_runs, write_json_atomic, write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "cpu"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}
METHOD_NAMES = {"grpo": "GRPO", "dapo": "DAPO", "lambda": "λ-GRPO", "dr_grpo": "Dr.GRPO",
                "delta_l": "ΔL"}


def plan(full: bool, seeds: int | None, tasks: list[str] | None, methods: list[str] | None):
    tasks = tasks or (["sum", "budget"] if full else ["sum"])
    methods = methods or (["grpo", "dapo", "lambda", "dr_grpo", "delta_l"] if full
                          else ["grpo", "dapo", "lambda"])
    n_seeds = seeds or (3 if full else 1)
    return [(t, m, s) for s in range(n_seeds) for t in tasks for m in methods]


def _cmd(out: Path, task: str, method: str, seed: int, overrides: dict, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "repro.trainers.reference",
           "--config", str(CONFIG_DIR / f"{task}_{method}.yaml"), "--out", str(out),
           "--no-progress", "--set", f"seed={seed}", "--set", "threads=1"]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd + (["--resume"] if resume else [])


def run_all(root: Path, jobs_list, overrides: dict, n_jobs: int, total_steps: int) -> int:
    """Run the (task, method, seed) jobs ``n_jobs`` at a time; one progress bar for all."""
    pending = []
    for task, method, seed in jobs_list:
        out = root / f"{task}_{method}_s{seed}"
        run = Run(out)
        if run.is_done():
            continue
        resume = (out / "checkpoints" / "latest").exists()
        if run.metrics_path.exists() and not resume:
            import shutil

            shutil.rmtree(out)
        pending.append((out, _cmd(out, task, method, seed, overrides, resume)))
    n_launched = len(pending)
    bar = tqdm(total=total_steps * len(jobs_list), desc="all runs", unit="step", dynamic_ncols=True)
    running: list[tuple[Path, subprocess.Popen, object]] = []
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def done_steps() -> int:
        n = 0
        for task, method, seed in jobs_list:
            p = root / f"{task}_{method}_s{seed}" / "metrics.jsonl"
            if p.exists():
                n += sum(1 for _ in open(p))
        return n

    failed = []
    while pending or running:
        while pending and len(running) < n_jobs:
            out, cmd = pending.pop(0)
            fh = open(logs / f"{out.name}.log", "w")
            running.append((out, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), fh))
        time.sleep(1.0)
        for item in list(running):
            out, proc, fh = item
            if proc.poll() is not None:
                fh.close()
                running.remove(item)
                if proc.returncode != 0:
                    failed.append(out.name)
                    tail = (logs / f"{out.name}.log").read_text()[-2000:]
                    print(f"\nrun {out.name} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        n = done_steps()
        if n != bar.n:
            bar.n = n
            bar.refresh()
    bar.close()
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {failed}; logs in {logs}")
    return n_launched


def eval_base(root: Path, tasks: list[str], n_problems: int, eval_seed: int) -> dict:
    """Held-out scores of the starting checkpoint, same problems and budget as the runs."""
    from repro.tasks.arith import get_variant, sample_problems
    from repro.trainers.reference import TrainConfig
    from repro.trainers.rollout import evaluate, load_policy

    out = {}
    for task in tasks:
        p = root / f"base_{task}.json"
        if p.exists():
            out[task] = json.loads(p.read_text())
            continue
        model, tok = load_policy(TrainConfig().checkpoint_path)
        probs = sample_problems(n_problems, random.Random(eval_seed), "test")
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


def summarise(root: Path, base: dict, last: int = 20) -> list[dict]:
    """One row per run: final held-out scores and the mean of the last ``last`` training steps."""
    rows = []
    for run in find_runs(root):
        if not run.is_done():
            continue
        cfg, recs, sc = run.config(), run.metrics(), run.eval_scores()
        ev = sc["benchmarks"][f"{cfg['task']}_heldout"]
        tail = recs[-last:]
        rows.append({
            "task": cfg["task"], "method": cfg["method"], "seed": cfg["seed"],
            "steps": recs[-1]["step"],
            "eval_accuracy": ev["accuracy"],
            "eval_gain": ev["accuracy"] - base[cfg["task"]]["accuracy"],
            "eval_length": ev["response_length_mean"],
            "eval_truncated": ev["truncated_rate"],
            "eval_verbose_share": ev["style_share"]["verbose"],
            "train_length": sum(r["response_length_mean"] for r in tail) / len(tail),
            "train_entropy": sum(r["entropy"] for r in tail) / len(tail),
            "final_lambda": recs[-1]["lambda"],
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
        a = {"task": task, "method": method, "seeds": len(rs)}
        for c in cols:
            vals = [float(r[c]) for r in rs if r[c] is not None]
            m, ci = _mean_ci(vals) if vals else (float("nan"), float("nan"))
            a[c], a[c + "_ci95"] = m, ci
        agg.append(a)
    csv_cols = ["task", "method", "seeds"] + [x for c in cols for x in (c, c + "_ci95")]
    csv = ",".join(csv_cols) + "\n" + "".join(
        ",".join(f"{a[c]:.5g}" if isinstance(a[c], float) else str(a[c]) for c in csv_cols) + "\n"
        for a in agg)

    def pm(a, c, scale=1.0, fmt="{:.1f}"):
        v, ci = a[c] * scale, a[c + "_ci95"] * scale
        return fmt.format(v) + ("" if math.isnan(ci) else " ± " + fmt.format(ci))

    md = ["| task | method | seeds | held-out acc (%) | gain over start (pp) | eval length | "
          "verbose share | train length | entropy | final λ | cov(len, A) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in sorted({a["task"] for a in agg}):
        b = base[task]
        md.append(f"| {task} | start checkpoint | – | {100 * b['accuracy']:.1f} | – | "
                  f"{b['response_length_mean']:.1f} | {b['style_share']['verbose']:.2f} | – | – | – | – |")
        for a in [a for a in agg if a["task"] == task]:
            md.append(f"| {task} | {METHOD_NAMES.get(a['method'], a['method'])} | {a['seeds']} | "
                      f"{pm(a, 'eval_accuracy', 100)} | {pm(a, 'eval_gain', 100)} | "
                      f"{pm(a, 'eval_length')} | {pm(a, 'eval_verbose_share', 1, '{:.2f}')} | "
                      f"{pm(a, 'train_length')} | {pm(a, 'train_entropy', 1, '{:.3f}')} | "
                      f"{pm(a, 'final_lambda', 1, '{:.3f}')} | "
                      f"{pm(a, 'len_adv_cov_mean', 1, '{:+.2f}')} |")
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
# figures
# ----------------------------------------------------------------------------------------------
def figures(root: Path, rows: list[dict], base: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from repro.runs import load_metrics

    df = load_metrics([r for r in find_runs(root) if r.is_done()])
    figdir = root / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    paths = []
    panels = [("reward_mean", "train reward"), ("response_length_mean", "response length (tokens)"),
              ("lambda", "λ"), ("entropy", "token entropy")]
    for task in sorted(df["task"].unique()):
        d = df[df["task"] == task]
        fig, axes = plt.subplots(1, 5, figsize=(22, 3.8))
        for ax, (col, title) in zip(axes, panels):
            for method in [m for m in METHOD_NAMES if m in set(d["method"])]:
                dm = d[d["method"] == method]
                curve = dm.groupby("step")[col].mean().rolling(10, min_periods=1).mean()
                ax.plot(curve.index, curve.values, label=METHOD_NAMES[method])
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
        axes[0].legend(fontsize=8)
        ax = axes[-1]
        rs = pd.DataFrame([r for r in rows if r["task"] == task])
        order = [m for m in METHOD_NAMES if m in set(rs["method"])]
        means = [100 * rs[rs.method == m].eval_accuracy.mean() for m in order]
        cis = [100 * _mean_ci(list(rs[rs.method == m].eval_accuracy))[1] for m in order]
        cis = [0 if math.isnan(c) else c for c in cis]
        ax.bar([METHOD_NAMES[m] for m in order], means, yerr=cis, capsize=4, color="tab:gray")
        ax.axhline(100 * base[task]["accuracy"], color="k", ls="--", lw=1, label="start")
        ax.set_title("held-out accuracy (%), greedy")
        ax.legend(fontsize=8)
        fig.suptitle(f"task '{task}' (mean over seeds; curves smoothed over 10 steps)")
        fig.tight_layout()
        p = figdir / f"{task}_curves.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--full", action="store_true", help="both tasks, 5 methods, 3 seeds, 1,000 eval problems")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the configs' step count")
    ap.add_argument("--eval-problems", type=int, default=None)
    ap.add_argument("--artifacts", default=None, metavar="DIR",
                    help="also write DIR/cpu_results.md and DIR/figures/cpu_*.png")
    a = ap.parse_args(argv)
    from repro.trainers.reference import TrainConfig

    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(a.full, a.seeds, a.tasks, a.methods)
    n_eval = a.eval_problems or (1000 if a.full else 500)
    overrides = {"eval_problems": n_eval}
    if a.steps:
        overrides["steps"] = a.steps
    steps = a.steps or TrainConfig.from_yaml(CONFIG_DIR / f"{jobs[0][0]}_{jobs[0][1]}.yaml").steps
    t0 = time.time()
    print(f"{len(jobs)} runs ({a.jobs} at a time), {steps} steps each, "
          f"held-out eval on {n_eval} problems -> {root}")
    launched = run_all(root, jobs, overrides, a.jobs, steps)
    tasks = sorted({t for t, _, _ in jobs})
    base = eval_base(root, tasks, n_eval, TrainConfig().eval_seed)
    rows = [r for r in summarise(root, base) if (r["task"], r["method"], r["seed"]) in set(jobs)]
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
