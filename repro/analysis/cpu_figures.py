"""The CPU reproduction's figures (``repro.demo``): per task, the demo's 2 × 3 grid (training
curves, λ, held-out accuracy over training and at the end); for the ablation, λ and f per cell,
each cell minus DAPO at the same seed, and accuracy over training per cell. Drawn with the
seed bands and labels of ``repro.analysis.plots``; intervals from ``repro.analysis.stats``."""
from __future__ import annotations

import math
from pathlib import Path

from repro.analysis.cpu_tables import LR_NOTE, cell_name, cell_of
from repro.analysis.plots import METHOD_LABELS as METHOD_NAMES
from repro.analysis.stats import mean_ci
from repro.objective import PAPER_R
from repro.runs import find_runs, flat_config

FIG_DPI = 110


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
    cis = [100 * mean_ci(list(rs[rs.method == m].eval_accuracy))[1] for m in order]
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
    if not done:  # nothing finished yet (--report-only before training): the report lists the runs
        return {}
    df = load_metrics(done)
    per = pd.DataFrame([{**p, "task": r.config()["task"], "method": flat_config(r.config())["method"],
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




def ablation_figures(root: Path, agg: list[dict], names: set[str], baselines=("dapo", "grpo")) -> list[Path]:
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
        c = cell_of(flat_config(run.config()))
        for m in run.metrics():
            recs.append({"cell": cell_name(c), "task": c[0], "lr": c[2], "r": c[3], "seed": run.config()["seed"],
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
            ls = "-" if math.isclose(d.r.iloc[0], PAPER_R) else "--"
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
    fig.suptitle(f"λ-GRPO cells of the ablation\n{LR_NOTE}; solid r = {an.r_name(PAPER_R)}, dashed r = 1/3",
                 fontsize=9)
    fig.tight_layout()
    p = figdir / "ablation_lambda_f.png"
    fig.savefig(p, dpi=FIG_DPI)
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
    fig.savefig(p, dpi=FIG_DPI)
    plt.close(fig)
    paths.append(p)
    # accuracy over training (the periodic evaluation), per cell
    ev = an.eval_frame(runs, root)
    ev = ev[ev["benchmark"].str.contains("heldout") & ev["step"].notna()]
    per = ev[ev.groupby("run")["step"].transform("nunique") > 1]
    if len(per):
        cell_by_run = {}
        for run in runs:
            cell_by_run[run.path.name] = cell_name(cell_of(flat_config(run.config())))
        # the cell name tells the runs apart (as the curve's 'method'), so the task label drops its
        # setting ('sum [λ lr 10, r 1/3]') and no setting is named twice
        per = per.assign(method=per["run"].map(lambda n: cell_by_run.get(Path(n).name, n)),
                         task=per["base_task"], setting="")
        fig = an.fig_eval_curves(per, colors={**{c: colors[c] for c in cells},
                                              **{METHOD_NAMES[m]: an.METHOD_COLORS[m] for m in baselines}})
        fig.suptitle(f"held-out accuracy over training per cell\n{LR_NOTE}", fontsize=9)
        fig.tight_layout()
        p = figdir / "ablation_accuracy_curves.png"
        fig.savefig(p, dpi=FIG_DPI)
        plt.close(fig)
        paths.append(p)
    return paths


