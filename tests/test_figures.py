"""Figures that agree with themselves, checked on the data behind them: the demo's figure and
Fig. 4 draw step 0 and every in-training evaluation as the runs recorded them, each accuracy
panel names its problem set, runs that differ in a setting are drawn apart and named, one-seed
folders draw no empty band or NaN std; and ``make lab``'s working copies."""
import json
import math
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

matplotlib.use("Agg")

from analysis_fixtures import shared_tiny_runs, synthetic_runs  # noqa: E402
from repro import analysis as an  # noqa: E402
from repro.analysis import cpu_figures, cpu_tables  # noqa: E402
from repro.analysis import lab  # noqa: E402
from repro.runs import find_runs  # noqa: E402


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """The tiny runs (grpo, dapo, lambda × 2 seeds, in-training evals at steps 0, 2, 4 on 8
    problems, final eval on 16), copied so that drawing writes nothing into the shared folder."""
    src, kind = shared_tiny_runs()
    root = tmp_path_factory.mktemp("demo") / "runs"
    shutil.copytree(src, root)
    return root, kind


def _periodic_by_hand(root):
    """{(method, step): mean accuracy over seeds in %} and the problem count, read from the runs'
    eval/periodic.jsonl files directly."""
    acc, ns = {}, set()
    for p in root.glob("*/eval/periodic.jsonl"):
        method = p.parent.parent.name.split("_")[1]
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            acc.setdefault((method, rec["step"]), []).append(100 * rec["accuracy"])
            ns.add(rec["n"])
    return {k: float(np.mean(v)) for k, v in acc.items()}, ns


def _ax_with_title(fig, text):
    axes = [a for a in fig.axes if text in a.get_title()]
    assert len(axes) == 1, [a.get_title() for a in fig.axes]
    return axes[0]


def test_demo_figure_agrees_with_its_runs(demo_like):
    root, kind = demo_like
    if kind != "reference":
        pytest.skip("needs the reference trainer's runs (final and in-training evaluations)")
    base = {"sum": {"accuracy": 0.3125, "n": 16}}  # the start checkpoint's score, made up here
    rows = cpu_tables.summarise(root, base)
    figs = cpu_figures.task_figures(root, rows, base)
    assert list(figs) == ["sum"]
    fig = figs["sum"]
    # a grid readable at 100 %: 2 rows × 3 panels, at most 1,600 px wide as saved
    assert len([a for a in fig.axes if a.get_visible()]) == 6
    w, h = fig.get_size_inches() * cpu_figures.FIG_DPI
    assert w <= 1600 and h <= 900 and w / h < 2.2
    periodic, ns = _periodic_by_hand(root)
    assert ns == {8}
    # accuracy over training: its problem set named, step 0 drawn, every point as recorded
    ax = _ax_with_title(fig, "over training")
    assert "8 fixed problems" in ax.get_title() and "first 8 of the 16" in ax.get_title()
    lines = {l.get_label(): l for l in ax.lines}
    for method, name in (("grpo", "GRPO"), ("dapo", "DAPO"), ("lambda", "λ-GRPO")):
        line = lines[f"{name} (2 seeds)"]
        steps = sorted(s for m, s in periodic if m == method)
        assert list(line.get_xdata()) == steps and steps[0] == 0
        assert list(line.get_ydata()) == pytest.approx([periodic[(method, s)] for s in steps])
    # final accuracy: the final evaluation's problem set, bars = the runs' scores, start on the same set
    ax = _ax_with_title(fig, "final held-out accuracy")
    assert "16 problems" in ax.get_title() and "16 problems" in ax.get_ylabel()
    finals = {}
    for run in find_runs(root):
        sc = run.eval_scores()["benchmarks"]["sum_heldout"]
        assert sc["n"] == 16
        finals.setdefault(run.meta()["method"], []).append(100 * sc["accuracy"])
    bars = list(ax.containers[0])
    assert [b.get_height() for b in bars] == pytest.approx([np.mean(finals[m]) for m in ("grpo", "dapo", "lambda")])
    start = [l for l in ax.lines if l.get_label().startswith("start checkpoint")]
    assert len(start) == 1 and list(start[0].get_ydata()) == pytest.approx([31.25, 31.25])
    # λ: only the method that learns it; GRPO and DAPO are not drawn as flat zero lines
    ax = _ax_with_title(fig, "λ (learned)")
    labels = [l.get_label() for l in ax.lines if not l.get_label().startswith("_")]
    assert labels == ["λ-GRPO (2 seeds)"]
    assert "GRPO, DAPO: no λ" in ax.get_title()


def test_demo_figure_legend_covers_no_bar():
    """Tall bars with intervals and a start line far below them: the legend still sits clear."""
    rows_, per_, recs = [], [], []
    for method in ("grpo", "dapo", "lambda"):
        for seed, acc in enumerate((0.93, 0.97, 0.99)):
            rows_.append({"task": "sum", "method": method, "seed": seed, "eval_accuracy": acc})
            for step in range(1, 31):
                recs.append({"task": "sum", "method": method, "seed": seed, "step": step, "reward_mean": 0.1,
                             "response_length_mean": 20.0, "entropy": 0.2,
                             "lambda": 0.01 * step if method == "lambda" else 0.0})
            per_ += [{"task": "sum", "method": method, "seed": seed, "step": st, "accuracy": 0.5, "n": 200}
                     for st in (0, 10, 20, 30)]
    fig = cpu_figures.figure_task("sum", pd.DataFrame(recs), pd.DataFrame(per_), rows_, 0.2, 500)
    ax = _ax_with_title(fig, "final held-out accuracy")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg = ax.get_legend().get_window_extent(r)
    from matplotlib.transforms import Bbox

    boxes = [a.get_window_extent(r) for a in (*ax.containers[0], *ax.texts)]
    for c in ax.collections:  # the interval whiskers, in display coordinates
        boxes += [Bbox(ax.transData.transform(np.asarray(seg))) for seg in c.get_segments()]
    assert len(ax.containers[0]) == 3 and len(boxes) == 9  # 3 bars, 3 values, 3 intervals
    for box in boxes:
        assert not leg.overlaps(box), box
    assert [t.get_text() for t in ax.texts] == ["96.3"] * 3  # each bar's value, mean of the seeds
    assert "± 95% t-interval" in ax.get_title()


def test_ablation_figures_from_finished_runs(demo_like, monkeypatch):
    """The ablation's three figures drawn from real runs (the tiny λ-GRPO runs are one cell):
    the vs-DAPO panel puts each cell at its paired accuracy difference, read from the runs here."""
    import matplotlib.pyplot as plt

    root, kind = demo_like
    if kind != "reference":
        pytest.skip("needs the reference trainer's runs (final and in-training evaluations)")
    base = {"sum": {"accuracy": 0.3125, "n": 16}}
    rows = cpu_tables.summarise(root, base)
    _, _, agg = cpu_tables.ablation_table(rows)
    figs = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figs.append(self))  # draw, write nothing
    paths = cpu_figures.ablation_figures(root, agg, {r["name"] for r in rows})
    assert [p.name for p in paths] == ["ablation_lambda_f.png", "ablation_vs_dapo.png", "ablation_accuracy_curves.png"]
    acc = {}
    for run in find_runs(root):
        acc.setdefault(run.meta()["method"], {})[run.meta()["seed"]] = run.eval_scores()["benchmarks"]["sum_heldout"]["accuracy"]
    (ax,) = [a for a in figs[1].axes if a.get_title() == "task 'sum'"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    xs = [c.lines[0].get_xdata()[0] for c in ax.containers]
    for method, label in (("grpo", "GRPO (n=2)"), ("lambda", "λ-GRPO lr 0.1, r 0.3 (n=2)")):
        d = np.mean([100 * (acc[method][s] - acc["dapo"][s]) for s in (0, 1)])
        assert xs[labels.index(label)] == pytest.approx(d)


def test_fig4_draws_every_evaluation_with_step_0(demo_like):
    root, kind = demo_like
    if kind != "reference":
        pytest.skip("needs the reference trainer's runs (in-training evaluations)")
    found, df = an.load_runs(root)
    ev = an.eval_frame(found, root)
    fig = an.fig_metric_bands(df, ["entropy", "eval_accuracy"], evals=ev, smooth=5)
    periodic, _ = _periodic_by_hand(root)
    ax = _ax_with_title(fig, "sum_heldout8, 8 problems")
    assert "every point drawn" in ax.get_title()
    for line in ax.lines:
        method = {"GRPO": "grpo", "DAPO": "dapo", "λ-GRPO": "lambda"}[line.get_label().split(" (")[0]]
        steps = sorted(s for m, s in periodic if m == method)
        assert list(line.get_xdata()) == steps and steps[0] == 0  # step 0 kept, no point dropped
        assert list(line.get_ydata()) == pytest.approx([periodic[(method, s)] for s in steps])  # not smoothed
    # the training curves next to it are smoothed, and say so
    assert "rolling mean, 5 points" in _ax_with_title(fig, "rolling mean").get_title()


def _two_settings(root):
    """λ-GRPO and DAPO runs in two folders, the λ runs differing in λ's learning rate."""
    for sub, lam_lr in (("paper", 0.1), ("fast", 10.0)):
        for run in synthetic_runs(root / sub, tasks=("sum",), methods=("dapo", "lambda"), seeds=(0,), steps=12):
            if run.meta()["method"] == "lambda":
                cfg = {**run.config(), "weighting": {"method": "lambda", "lambda": {"lr": lam_lr}}}
                run.config_path.write_text(yaml.safe_dump(cfg))
            for st in (0, 6, 12):
                run.log_periodic_eval(step=st, benchmark="sum_heldout200", ev={
                    "n": 200, "accuracy": 0.4 + 0.01 * st, "response_length_mean": 20.0})


def test_runs_that_differ_in_a_setting_are_drawn_apart_and_named(tmp_path):
    _two_settings(tmp_path)
    found, df = an.load_runs(tmp_path)
    lam = df[df["method"] == "lambda"].groupby("run")["setting"].first().to_dict()
    assert lam == {"fast/sum_lambda_s0": "fast, λ lr 10", "paper/sum_lambda_s0": "paper, λ lr 0.1"}
    ev = an.eval_frame(found, tmp_path)
    for fig in (an.fig_eval_curves(ev), an.fig_metric_bands(df, ["entropy"])):
        ax = next(a for a in fig.axes if a.get_legend() is not None)
        lines = {l.get_label(): l for l in ax.lines if not l.get_label().startswith("_")}
        assert set(lines) == {"fast, λ lr 10: λ-GRPO (1 seed)", "paper, λ lr 0.1: λ-GRPO (1 seed)",
                              "fast: DAPO (1 seed)", "paper: DAPO (1 seed)"}
        assert set(t.get_text() for t in ax.get_legend().get_texts()) == set(lines)
        for method in ("λ-GRPO", "DAPO"):  # one method: its colour, one line style per setting
            pair = [l for k, l in lines.items() if k.endswith(f": {method} (1 seed)")]
            assert len({matplotlib.colors.to_hex(l.get_color()) for l in pair}) == 1
            assert len({(l.get_linestyle(), l.get_marker()) for l in pair}) == 2
    fig = an.fig_lambda_trajectories(df)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["fast, λ lr 10: 1 run", "paper, λ lr 0.1: 1 run"]


def test_one_seed_draws_no_empty_band_and_no_nan_std(tmp_path):
    synthetic_runs(tmp_path, tasks=("sum",), seeds=(0,), steps=10)
    found, df = an.load_runs(tmp_path)
    fig = an.fig_lambda_trajectories(df)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["1 run"] and not fig.axes[0].collections  # no "min–max over seeds", no band
    fig = an.fig_f_spread(df)
    assert not fig.axes[0].collections
    summ = an.method_summary(df)
    assert not [c for c in summ.columns if c.endswith(" std")] and not summ.isna().any().any()
    final = df[df["method"] == "lambda"].groupby(["task", "run"])["lambda"].last()
    t = an.across_runs(final, "task")
    assert "std" not in t and not t.isna().any().any()
    # with two seeds the std is there, and equals numpy's
    synthetic_runs(tmp_path / "two", tasks=("sum",), methods=("lambda",), seeds=(0, 1), steps=10)
    _, df2 = an.load_runs(tmp_path / "two")
    final2 = df2.sort_values("step").groupby(["task", "run"])["lambda"].last()
    assert an.across_runs(final2, "task")["std"].iloc[0] == pytest.approx(np.std(final2.to_numpy(), ddof=1))


def test_lab_copies_keep_the_tracked_notebooks_untouched(tmp_path):
    src, dest = tmp_path / "notebooks", tmp_path / "lab"
    src.mkdir()
    (src / "a.ipynb").write_text("A1")
    (src / "b.ipynb").write_text("B1")
    assert sorted(lab.sync(src, dest)) == [f"copied: {src / n} -> {dest / n}" for n in ("a.ipynb", "b.ipynb")]
    assert lab.sync(src, dest) == []  # nothing changed: nothing done
    (dest / "a.ipynb").write_text("A1 with outputs")  # the lab saved the copy
    (src / "a.ipynb").write_text("A2")  # and a git pull changed both tracked notebooks
    (src / "b.ipynb").write_text("B2")
    msgs = lab.sync(src, dest)
    assert (dest / "a.ipynb").read_text() == "A1 with outputs"  # an edited copy is never overwritten
    assert (dest / "b.ipynb").read_text() == "B2"  # an untouched one follows the source
    assert any("your copy is kept" in m and "a.ipynb" in m for m in msgs)
    assert any(m.startswith("updated") and "b.ipynb" in m for m in msgs)
    assert (src / "a.ipynb").read_text() == "A2" and (src / "b.ipynb").read_text() == "B2"
    (dest / "a.ipynb").unlink()  # delete the copy to get the new version
    lab.sync(src, dest)
    assert (dest / "a.ipynb").read_text() == "A2"
    with pytest.raises(ValueError, match="must not be"):
        lab.sync(src, src)
    assert lab.main([str(tmp_path / "x"), "--src", str(tmp_path / "empty")]) == 2
