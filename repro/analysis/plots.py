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
from repro.paper import FIG2_R

# labels and colours come from the method registry (repro.objective.METHODS), the one place they are
# written; this is only the order of tables and legends (registered methods not named go last)
_ORDER = ("grpo", "dapo", "lambda", "dr_grpo", "delta_l")
METHOD_LABELS = {m: METHODS[m].label for m in (*_ORDER, *(k for k in METHODS if k not in _ORDER))}
METHOD_COLORS = {m: METHODS[m].color for m in METHOD_LABELS}
# r as a fraction: Figure 2's values (the paper's r among them) and the ablation's 1/3
R_NAMES = {r: f"1/{round(1 / r)}" for r in (*FIG2_R, 1 / 3)}

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
# runs that differ in a setting (folder, λ lr, r, ...): one line style and marker per setting
# ----------------------------------------------------------------------------------------------
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _col(df: pd.DataFrame, name: str, fallback: str) -> pd.Series:
    return df[name] if name in df else df[fallback]


def base_tasks(df: pd.DataFrame) -> list[str]:
    """The tasks a figure draws one panel (row) for: the config's task, whatever the folder or
    setting (``loading.run_labels``)."""
    return sorted(_col(df, "base_task", "task").astype(str).unique())


def setting_styles(df: pd.DataFrame) -> dict:
    """``{setting: (line style, marker)}``: the setting '' (the only, or plain, one) draws solid
    lines with round markers; every other setting its own pair, so curves of one method that
    differ in a setting are told apart by style (colour stays the method's)."""
    settings = sorted(set(_col(df, "setting", "task").fillna("").astype(str))) if "setting" in df else [""]
    out = {}
    for i, s in enumerate(sorted(settings, key=lambda x: (x != "", x))):
        out[s] = (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
    return out


def curve_label(method: str, n_seeds: int, setting: str = "") -> str:
    """'GRPO (3 seeds)', or 'demo, λ lr 10: λ-GRPO (1 seed)' for a run that differs in a setting."""
    return (f"{setting}: " if setting else "") + seeds_label(label(method), n_seeds)


def _method_order(methods) -> list[str]:
    """The methods present, in the package's order (``METHOD_LABELS``), unknown ones last."""
    present = list(dict.fromkeys(str(m) for m in methods))
    return [m for m in METHOD_LABELS if m in present] + sorted(m for m in present if m not in METHOD_LABELS)


def _curves(d: pd.DataFrame, methods):
    """(task label, method, setting, rows) for every curve of one base task, method order first."""
    setting = d["setting"] if "setting" in d else pd.Series("", index=d.index)
    d = d.assign(setting=setting.fillna("").astype(str))
    for m in methods:
        dm = d[d["method"] == m]
        for (task, st), dc in sorted(dm.groupby(["task", "setting"]), key=lambda kv: (kv[0][1] != "", kv[0])):
            yield task, m, st, dc


def _grid(n: int, cols: int, w: float, h: float):
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, n))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _legend(ax, **kw):
    hs, ls = ax.get_legend_handles_labels()
    keep = dict(zip(ls, hs))  # one legend entry per label
    if keep:
        ax.legend(keep.values(), keep.keys(), **{"fontsize": 7, **kw})


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def periodic_evals(ev: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``eval_frame`` that some run evaluated at several steps (the in-training
    evaluation on a fixed problem set, step 0 included), accuracy in %."""
    if ev is None or not len(ev):
        return pd.DataFrame(columns=getattr(ev, "columns", []))
    ev = ev.dropna(subset=["step"])
    n_steps = ev.groupby(["benchmark", "run"])["step"].transform("nunique")
    multi = ev.assign(_n=n_steps).groupby("benchmark")["_n"].transform("max") > 1
    return ev[multi]


def problem_set(ev: pd.DataFrame) -> str:
    """'sum_heldout200, 200 problems' for the rows of one benchmark (sizes listed if they vary)."""
    names = list(dict.fromkeys(ev["benchmark"].astype(str)))
    ns = sorted({int(n) for n in ev["n"].dropna()}) if "n" in ev else []
    size = f", {'/'.join(str(n) for n in ns)} problems" if ns else ""
    return ", ".join(names) + size


def fig_metric_bands(df: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str] | None = None,
                     title: str = "", smooth: int | None = None, evals: pd.DataFrame | None = None,
                     cols: int = 3):
    """Per task, one panel per metric (wrapped in rows of ``cols``): per method and setting the
    mean over seeds, with a min-max band, as a centred rolling mean over ``smooth`` logged points
    (default: 1/40 of the steps). A sparse metric (logged at under half of a run's steps, e.g.
    the in-training ``eval_accuracy``) is never smoothed: each point is drawn. With ``evals``
    (``eval_frame`` rows), 'eval_accuracy' is drawn from the in-training evaluations instead,
    step 0 included, titled with its problem set. Runs that differ in a setting (folder, config)
    share the method's colour and differ in line style; the legend names the setting."""
    per = periodic_evals(evals) if evals is not None else None
    tasks = base_tasks(df)
    methods = [m for m in (methods or _method_order(df["method"])) if m in set(df["method"])]
    have = lambda m: (m == "eval_accuracy" and per is not None and len(per)) or (m in df and df[m].notna().any())
    metrics = [m for m in metrics if have(m)]
    if not metrics or not methods:
        raise ValueError("nothing to plot: no such metrics or methods in the runs")
    styles = setting_styles(df)
    nc = min(cols, len(metrics))
    per_task = int(math.ceil(len(metrics) / nc))
    fig, axes = _grid(len(tasks) * per_task * nc, nc, 3.8, 3.0)
    for i, task in enumerate(tasks):
        dt = df[_col(df, "base_task", "task").astype(str) == task]
        w = smooth if smooth is not None else max(1, int(round(dt["step"].nunique() / 40)))
        for j, metric in enumerate(metrics):
            ax = axes[i * per_task * nc + j]
            from_evals = metric == "eval_accuracy" and per is not None and len(per)
            src = per[_col(per, "base_task", "task").astype(str) == task] if from_evals else dt
            y = "accuracy" if from_evals else metric
            k = 1.0 if from_evals else scale(metric)
            sparse = from_evals
            drawn_w = 1
            for tlabel, m, st, dc in _curves(src, methods):
                b = seed_band(dc, y).sort_values("step")
                if not len(b):
                    continue
                n_logged = dc.dropna(subset=[y]).groupby("run")["step"].nunique().max()
                is_sparse = sparse or n_logged < 0.5 * dt[dt["task"] == tlabel].groupby("run")["step"].nunique().max()
                ls, mk = styles.get(st, ("-", "o"))
                if is_sparse:
                    plot_band(ax, b, color=METHOD_COLORS.get(m), k=k, lw=1.3, ls=ls, marker=mk, ms=3.5,
                              alpha=0.15, label=curve_label(m, int(b["n_seeds"].max()), st))
                else:
                    drawn_w = w
                    plot_band(ax, smooth_band(b, w), color=METHOD_COLORS.get(m), k=k, lw=1.4, ls=ls,
                              label=curve_label(m, int(b["n_seeds"].max()), st))
            ax.set_xlabel("optimizer step")
            if from_evals:
                ax.set_ylabel("held-out accuracy, greedy (%)", fontsize=8)
                ax.set_title(f"{task}: {problem_set(src)}\n(in-training eval, every point drawn)", fontsize=8)
            else:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
                ax.set_title(f"{task}" + (f" (rolling mean, {drawn_w} points)" if drawn_w > 1 else
                                          " (every logged point)"), fontsize=9)
            if j == 0:
                _legend(ax)
        for j in range(len(metrics), per_task * nc):  # the row's unused panels
            axes[i * per_task * nc + j].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _lambda_task_panels(lam: pd.DataFrame, what: str, height: float = 3.6, cols: int = 3,
                        by_setting: bool = False):
    """One panel per task (wrapped in rows of ``cols``) for the λ-GRPO rows ``lam``, or per task
    label (task and setting: each experiment apart) with ``by_setting``; raises if there are
    none. Returns the tasks, the figure and one axis per task."""
    if not len(lam):
        raise ValueError(f"no λ-GRPO {what} in these runs")
    tasks = sorted(lam["task"].astype(str).unique()) if by_setting else base_tasks(lam)
    fig, axes = _grid(len(tasks), cols, 5.2, height)
    return tasks, fig, axes[:len(tasks)]


def _setting_colors(d: pd.DataFrame) -> dict:
    """One colour per setting of the λ-GRPO runs of a panel: the method's colour when there is
    one setting, else a qualitative colour map."""
    import matplotlib.pyplot as plt

    settings = sorted(set(_col(d, "setting", "task").fillna("").astype(str))) if "setting" in d else [""]
    if len(settings) == 1:
        return {settings[0]: METHOD_COLORS["lambda"]}
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(sorted(settings, key=lambda x: (x != "", x)))}


def fig_lambda_trajectories(df: pd.DataFrame):
    """λ against step per task: one thin line per run, the mean over seeds (black, or the
    setting's colour when runs differ in a setting, named in the legend), and the min-max band
    when there are several seeds."""
    lam = df[df["method"] == "lambda"]
    tasks, fig, axes = _lambda_task_panels(lam, "runs (method 'lambda')")
    for ax, task in zip(axes, tasks):
        d = lam[_col(lam, "base_task", "task").astype(str) == task]
        colors = _setting_colors(d)
        several = len(colors) > 1
        for st, color in colors.items():
            ds = d[d["setting"].fillna("").astype(str) == st] if "setting" in d else d
            for run, rd in ds.groupby("run"):
                ax.plot(rd["step"], rd["lambda"], color=color, lw=0.7, alpha=0.5)
            b = seed_band(ds, "lambda", by=("task",))
            n = int(b["n_seeds"].max())
            name = f"{st}: " if st else ""
            ax.plot(b["step"], b["mean"], color=color if several else "black", lw=1.6,
                    label=f"{name}mean over {n} seeds" if n > 1 else f"{name}1 run")
            if n > 1:
                ax.fill_between(b["step"], b["min"], b["max"], color=color, alpha=0.2, lw=0,
                                label=None if several else "min–max over seeds")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("λ (dimensionless)")
        ax.set_title(f"λ-GRPO, task {task}")
        _legend(ax, fontsize=8)
    fig.tight_layout()
    return fig


def fig_grad_vs_cov(df: pd.DataFrame):
    lam = df[df["method"] == "lambda"].dropna(subset=["lambda_grad", "len_adv_cov"])
    tasks, fig, axes = _lambda_task_panels(lam, "steps with lambda_grad and len_adv_cov", 3.8, by_setting=True)
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
    tasks, fig, axes = _lambda_task_panels(lam, "runs (method 'lambda')", by_setting=True)
    for ax, task in zip(axes, tasks):
        d = lam[lam["task"] == task]
        for metric, color in (("f_max", "tab:red"), ("f_min", "tab:blue")):
            b = seed_band(d, metric, by=("task",))
            n = int(b["n_seeds"].max())
            plot_band(ax, b, color=color, label=metric.replace("_", " ") + (f" (mean of {n} seeds, band min–max)"
                                                                            if n > 1 else ""))
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


def fig_eval_curves(ev: pd.DataFrame, colors: dict | None = None, cols: int = 3):
    """Accuracy per benchmark against step (as the paper's Figures 3 and 5), one panel per
    benchmark titled with its problem set: per (task, method, setting) the mean over seeds, with
    a min-max band across seeds when there are several (none for one seed), every evaluation
    point drawn (no smoothing). Runs that differ in a setting (folder, config) share the
    method's colour, differ in line style and marker, and the legend names the setting.
    Benchmarks that some run evaluated at several steps are drawn as curves; if there are any,
    benchmarks evaluated only once per run (a final score, on another problem set) are left out
    of the figure (they are in ``eval_frame``'s table), otherwise they are drawn as points at
    their step. ``colors`` maps a 'method' value to a colour (for callers that put their own
    curve names in that column)."""
    if not len(ev):
        raise ValueError("no evaluation scores in these runs")
    ev = ev.dropna(subset=["step"])
    per = periodic_evals(ev)
    ev = per if len(per) else ev
    benches = list(dict.fromkeys(ev["benchmark"]))
    fig, axes = _grid(len(benches), cols, 4.4, 3.4)
    colors = {**METHOD_COLORS, **(colors or {})}
    styles = setting_styles(ev)
    for ax, bname in zip(axes, benches):
        d = ev[ev["benchmark"] == bname]
        several_tasks = _col(d, "base_task", "task").nunique() > 1
        methods = _method_order(d["method"])
        for task, m, st, dm in _curves(d, methods):
            b = seed_band(dm, "accuracy").sort_values("step")
            setting = ", ".join(x for x in ((str(dm["base_task"].iloc[0]) if several_tasks and "base_task" in dm
                                              else (task if several_tasks else "")), st) if x)
            ls, mk = styles.get(st, ("-", "o"))
            plot_band(ax, b, color=colors.get(m), label=curve_label(m, int(b["n_seeds"].max()), setting),
                      alpha=0.15, marker=mk, ls=ls, ms=3.5, lw=1.3)
        steps = sorted(d["step"].unique())
        if len(steps) == 1:  # one evaluation step: a sensible axis, not ±10 around it
            ax.set_xlim(0, steps[0] * 1.05 + 1)
        multi = d.groupby(["task", "method"])["seed"].nunique().max() > 1
        ax.set_title(problem_set(d) + ("\n(band: min–max over seeds)" if multi else ""), fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("held-out accuracy (%), greedy")
        _legend(ax)
    fig.tight_layout()
    return fig
