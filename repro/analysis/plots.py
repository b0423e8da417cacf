"""Plots of runs, shared by the notebooks, ``python -m repro.artifacts`` and ``repro.demo``: the
method labels and colours (one place), the seed band (mean, min-max across seeds) and its
smoothing, and the figures of training dynamics, λ, f and evaluation accuracy.

Units on every axis: optimizer steps; response length in tokens; token entropy in nats per
token; λ and f dimensionless; reward on the paper's +1 / -0.5 / -1 scale; accuracy in %.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from repro.objective import METHODS

# labels and colours come from the method registry (repro.objective.METHODS), the one place they are
# written; this is only the order of tables and legends (registered methods not named go last)
_ORDER = ("grpo", "dapo", "lambda", "dr_grpo", "delta_l")
METHOD_LABELS = {m: METHODS[m].label for m in (*_ORDER, *(k for k in METHODS if k not in _ORDER))}
METHOD_COLORS = {m: METHODS[m].color for m in METHOD_LABELS}
R_NAMES = {1 / 30: "1/30", 1 / 15: "1/15", 1 / 9: "1/9", 1 / 3: "1/3"}

# metrics of the run schema that the notebooks plot, with their axis labels (units included)
METRIC_LABELS = {
    "lambda": "λ (dimensionless)",
    "lambda_grad": "∂loss/∂λ per step",
    "reward_mean": "mean reward (+1 / −0.5 / −1 scale)",
    "accuracy": "rollout accuracy (%)",
    "eval_accuracy": "held-out accuracy, greedy (%)",
    "response_length_mean": "mean response length (tokens)",
    "response_length_max": "longest response (tokens)",
    "truncated_rate": "truncated responses (%)",
    "entropy": "token entropy (nats / token)",
    "kl": "KL to reference (nats / token)",
    "clip_ratio": "clipped tokens (%)",
    "f_std": "std of f over the step (dimensionless)",
    "len_adv_cov": "cov(length, advantage) within group (tokens)",
}
PERCENT_METRICS = {"accuracy", "eval_accuracy", "truncated_rate", "clip_ratio"}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def r_name(r: float) -> str:
    for k, v in R_NAMES.items():
        if math.isclose(k, r):
            return v
    return f"{r:.4g}"


# ----------------------------------------------------------------------------------------------
# seed bands
# ----------------------------------------------------------------------------------------------
def seed_band(df: pd.DataFrame, y: str, x: str = "step", by: Sequence[str] = ("task", "method")
              ) -> pd.DataFrame:
    """Mean, std, min, max and number of seeds of ``y`` at each ``x`` per ``by`` group (the band
    across seeds). Rows where ``y`` is null are dropped (a nullable metric)."""
    if y not in df:
        raise KeyError(f"metric {y!r} not in the runs' metrics")
    d = df[[*by, "seed", x, y]].dropna(subset=[y])
    d = d.assign(**{y: d[y].astype(float)})
    g = d.groupby([*by, x])[y]
    out = g.agg(["mean", "std", "min", "max", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out.rename(columns={"count": "n_seeds"})


def scale(metric: str) -> float:
    return 100.0 if metric in PERCENT_METRICS else 1.0


def smooth_band(b: pd.DataFrame, w: int) -> pd.DataFrame:
    if w <= 1:
        return b
    b = b.copy()
    for c in ("mean", "min", "max"):
        b[c] = b[c].rolling(w, center=True, min_periods=1).mean()
    return b


def plot_band(ax, b: pd.DataFrame, *, color=None, label: str | None = None, k: float = 1.0,
              alpha: float = 0.2, **line):
    """Draw one seed band (``seed_band`` rows of one curve, sorted by step) on ``ax``: the mean
    times ``k`` as a line, and the min-max band when it holds more than one seed."""
    ax.plot(b["step"], b["mean"] * k, color=color, label=label, **line)
    if int(b["n_seeds"].max()) > 1:
        ax.fill_between(b["step"], b["min"] * k, b["max"] * k, color=color, alpha=alpha, lw=0)


def seeds_label(name: str, n: int) -> str:
    """'GRPO (3 seeds)'."""
    return f"{name} ({n} seed{'s' if n != 1 else ''})"


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def fig_metric_bands(df: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str] | None = None,
                     title: str = "", smooth: int | None = None):
    """One panel per (task, metric): the mean over seeds per method, with a min-max band,
    both as a centred rolling mean over ``smooth`` logged points (default: 1/40 of the steps)."""
    import matplotlib.pyplot as plt

    tasks = sorted(df["task"].unique())
    methods = [m for m in (methods or sorted(df["method"].unique())) if m in set(df["method"])]
    metrics = [m for m in metrics if m in df and df[m].notna().any()]
    if not metrics or not methods:
        raise ValueError("nothing to plot: no such metrics or methods in the runs")
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(3.6 * len(metrics), 2.9 * len(tasks)),
                             squeeze=False)
    for i, task in enumerate(tasks):
        dt = df[df["task"] == task]
        w = smooth if smooth is not None else max(1, int(round(dt["step"].nunique() / 40)))
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            band = seed_band(dt, metric)
            k = scale(metric)
            for m in methods:
                b = smooth_band(band[band["method"] == m].sort_values("step"), w)
                if not len(b):
                    continue
                plot_band(ax, b, color=METHOD_COLORS.get(m), k=k, lw=1.4,
                          label=seeds_label(label(m), int(b["n_seeds"].max())))
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
            ax.set_title(f"{task}" + (f" (rolling mean, {w} points)" if w > 1 else ""), fontsize=9)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _lambda_task_panels(lam: pd.DataFrame, what: str, height: float = 3.6):
    """One panel per task for the λ-GRPO rows ``lam``; raises if there are none."""
    import matplotlib.pyplot as plt

    if not len(lam):
        raise ValueError(f"no λ-GRPO {what} in these runs")
    tasks = sorted(lam["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), height), squeeze=False)
    return tasks, fig, axes[0]


def fig_lambda_trajectories(df: pd.DataFrame):
    """λ against step: one thin line per run, the mean over seeds, and the min-max band."""
    lam = df[df["method"] == "lambda"]
    tasks, fig, axes = _lambda_task_panels(lam, "runs (method 'lambda')")
    for ax, task in zip(axes, tasks):
        d = lam[lam["task"] == task]
        for run, rd in d.groupby("run"):
            ax.plot(rd["step"], rd["lambda"], color=METHOD_COLORS["lambda"], lw=0.7, alpha=0.5)
        b = seed_band(d, "lambda", by=("task",))
        ax.plot(b["step"], b["mean"], color="black", lw=1.6,
                label=f"mean over {int(b['n_seeds'].max())} seed(s)")
        ax.fill_between(b["step"], b["min"], b["max"], color=METHOD_COLORS["lambda"], alpha=0.2, lw=0,
                        label="min–max over seeds")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("λ (dimensionless)")
        ax.set_title(f"λ-GRPO, task {task}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_grad_vs_cov(df: pd.DataFrame):
    lam = df[df["method"] == "lambda"].dropna(subset=["lambda_grad", "len_adv_cov"])
    tasks, fig, axes = _lambda_task_panels(lam, "steps with lambda_grad and len_adv_cov", 3.8)
    for ax, task in zip(axes, tasks):
        d = lam[lam["task"] == task]
        sc = ax.scatter(d["len_adv_cov"], d["lambda_grad"], c=d["step"], s=10, cmap="viridis")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("within-group cov(length, advantage) (tokens)")
        ax.set_ylabel("∂loss/∂λ applied at the step")
        ax.set_title(f"task {task}")
        fig.colorbar(sc, ax=ax, label="optimizer step")
    fig.tight_layout()
    return fig


def fig_f_spread(df: pd.DataFrame):
    """The spread of f over training for λ-GRPO: min, max and std of f per step (seed mean)."""
    lam = df[df["method"] == "lambda"]
    tasks, fig, axes = _lambda_task_panels(lam, "runs (method 'lambda')")
    for ax, task in zip(axes, tasks):
        d = lam[lam["task"] == task]
        for metric, color in (("f_max", "tab:red"), ("f_min", "tab:blue")):
            b = seed_band(d, metric, by=("task",))
            ax.plot(b["step"], b["mean"], color=color, label=metric.replace("_", " "))
            ax.fill_between(b["step"], b["min"], b["max"], color=color, alpha=0.2, lw=0)
        b = seed_band(d, "f_std", by=("task",))
        ax.plot(b["step"], 1 + b["mean"], color="black", ls="--", lw=1, label="1 ± std f")
        ax.plot(b["step"], 1 - b["mean"], color="black", ls="--", lw=1)
        ax.axhline(1, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("token-preference weight f (dimensionless)")
        ax.set_title(f"spread of f, λ-GRPO, task {task}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_eval_curves(ev: pd.DataFrame, colors: dict | None = None):
    """Accuracy per benchmark against step (as the paper's Figures 3 and 5): per (task, method)
    the mean over seeds, with a min-max band across seeds when there are several (none for one
    seed). Benchmarks that some run evaluated at several steps are drawn as curves; if there
    are any, benchmarks evaluated only once per run (a final score) are left out of the figure
    (they are in ``eval_frame``'s table), otherwise they are drawn as points at their step."""
    import matplotlib.pyplot as plt

    if not len(ev):
        raise ValueError("no evaluation scores in these runs")
    ev = ev.dropna(subset=["step"])
    n_steps = ev.groupby(["benchmark", "run"])["step"].nunique().groupby("benchmark").max()
    curves = [b for b in dict.fromkeys(ev["benchmark"]) if n_steps.get(b, 0) > 1]
    benches = curves or list(dict.fromkeys(ev["benchmark"]))
    n = len(benches)
    cols = min(4, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = {**METHOD_COLORS, **(colors or {})}
    for ax, bname in zip(axes.flat, benches):
        d = ev[ev["benchmark"] == bname]
        several_tasks = d["task"].nunique() > 1
        for (task, m), dm in d.groupby(["task", "method"], sort=False):
            b = seed_band(dm, "accuracy").sort_values("step")
            ns = int(b["n_seeds"].max())
            name = (f"{task}: " if several_tasks else "") + seeds_label(label(m), ns)
            plot_band(ax, b, color=colors.get(m), label=name, alpha=0.15, marker="o", ms=3, lw=1.3)
        steps = sorted(d["step"].unique())
        if len(steps) == 1:  # one evaluation step: a sensible axis, not ±10 around it
            ax.set_xlim(0, steps[0] * 1.05 + 1)
        multi = d.groupby(["task", "method"])["seed"].nunique().max() > 1
        ax.set_title(bname + (" (band: min–max over seeds)" if multi else ""), fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("held-out accuracy (%), greedy")
        hs, ls = ax.get_legend_handles_labels()
        keep = dict(zip(ls, hs))  # one legend entry per label
        ax.legend(keep.values(), keep.keys(), fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
