"""repro.analysis against independent computations (numpy, written out here)."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_fixtures import synthetic_runs
from repro import analysis as an
from repro import objective as obj
from repro.runs import Run, find_runs, write_json_atomic


def f_numpy(lengths, lam, r):
    x = np.asarray(lengths, dtype=float)
    z = (x - x.mean()) / x.std(ddof=1)
    g = (1 + r * z) ** lam
    e = np.exp(g - g.max())
    return len(x) * e / e.sum()


def test_lambda_needed_hits_the_threshold():
    q = an.normal_quantile_group(8)
    for t in (0.05, 0.2):
        for sign in (+1, -1):
            lam = float(an.lambda_needed(q, t, r=1 / 9, sign=sign)[0])
            assert np.sign(lam) == sign
            assert np.abs(f_numpy(q[0], lam, 1 / 9) - 1).max() == pytest.approx(t, abs=1e-9)
            assert np.abs(f_numpy(q[0], 0.999 * lam, 1 / 9) - 1).max() < t
    lam_std = float(an.lambda_needed(q, 0.05, r=1 / 9, criterion="std f")[0])
    assert f_numpy(q[0], lam_std, 1 / 9).std() == pytest.approx(0.05, abs=1e-9)
    assert math.isinf(float(an.lambda_needed(q, 50.0, r=1 / 9, lam_max=30)[0]))  # f ≤ G - never 50


def test_first_order_departure():
    q = an.normal_quantile_group(8)
    x = q[0].numpy()
    z = (x - x.mean()) / x.std(ddof=1)
    lnh = np.log(1 + z / 9)
    d = an.departure(q, [1e-4], 1 / 9).iloc[0]
    # to first order in λ: f_i - 1 = λ (ln h_i - mean_j ln h_j); and ln h ≈ r z to first order in r
    assert d["max |f-1|"] / (1e-4 * np.abs(lnh - lnh.mean()).max()) == pytest.approx(1, rel=1e-3)
    assert d["max |f-1|"] / (1e-4 / 9 * np.abs(z).max()) == pytest.approx(1, rel=0.1)


def test_h_spread_respects_samuelson_bound():
    tab, samples = an.h_spread_table(G=8, n_groups=500)
    zmax = 7 / math.sqrt(8)
    for r, h in samples.items():
        assert h.min() >= 1 - r * zmax - 1e-12 and h.max() <= 1 + r * zmax + 1e-12
    assert tab["bound 1+r(G-1)/√G"].tolist() == pytest.approx([1 + r * zmax for r in an.FIG2_R])


def test_seed_band_matches_groupby_by_hand():
    df = pd.DataFrame({"task": ["a"] * 6, "method": ["dapo"] * 6, "seed": [0, 1, 2] * 2,
                       "step": [1, 1, 1, 2, 2, 2], "x": [1.0, 2.0, 6.0, 0.0, 0.0, 3.0]})
    b = an.seed_band(df, "x")
    assert b["mean"].tolist() == [3.0, 1.0]
    assert b["min"].tolist() == [1.0, 0.0] and b["max"].tolist() == [6.0, 3.0]
    assert b["std"].tolist() == pytest.approx([np.std([1, 2, 6], ddof=1), np.std([0, 0, 3], ddof=1)])
    assert b["n_seeds"].tolist() == [3, 3]


def test_runs_tables_on_synthetic_runs(tmp_path):
    synthetic_runs(tmp_path, seeds=(0, 1), steps=12)
    found, df = an.load_runs(tmp_path)
    assert len(found) == 12
    gc = an.grad_cov_table(df)
    for _, row in gc.iterrows():
        d = df[df["run"] == row["run"]]
        assert row["pearson"] == pytest.approx(np.corrcoef(d["len_adv_cov"].astype(float), d["lambda_grad"].astype(float))[0, 1])
    # each run's final λ: the λ of its last metrics line, read here from the file itself
    for _, row in gc.iterrows():
        lines = [json.loads(x) for x in (tmp_path / row["run"] / "metrics.jsonl").read_text().splitlines()
                 if x.strip()]
        assert row["final λ"] == max(lines, key=lambda m: m["step"])["lambda"]
    rec = an.eq20_recorded(found)
    assert len(rec) == 4 * 2 * 4 and rec["pass"].all()  # 4 λ runs × 2 groups × (recorded λ + 3)
    ms = an.method_summary(df)
    assert set(ms["seeds"]) == {2}


def test_eval_frame_formats(tmp_path):
    run = Run.create(tmp_path / "r", {"task": "sum"}, seed=3, method="lambda")
    run.log({k: 0.0 for k in ("lambda", "f_mean", "f_std", "f_min", "f_max", "reward_mean", "accuracy",
                              "response_length_mean", "response_length_max", "truncated_rate", "len_adv_cov",
                              "time_s", "clip_ratio")} | {"step": 7, "rollout": 7, "method": "lambda",
                                                          "lambda_grad": None, "entropy": None, "kl": None,
                                                          "grad_norm": None})
    # the reference trainer's layout: fractions
    write_json_atomic(run.eval_dir / "scores.json", {"benchmarks": {"x": {"accuracy": 0.25, "n": 4}}})
    ev = an.eval_frame([run])
    assert ev.set_index("benchmark")["accuracy"].to_dict() == {"x": 25.0}
    assert set(ev["step"]) == {7}  # no step in the file: the run's last step
    # repro.eval's layout: percent, primary grader
    write_json_atomic(run.eval_dir / "scores.json", {
        "primary_grader": "qwen", "graders": {
            "qwen": {"benchmarks": {"gsm8k": {"accuracy": 40.0}, "aime24": {"accuracy": 3.3}}},
            "math-verify": {"benchmarks": {"gsm8k": {"accuracy": 41.0}, "aime24": {"accuracy": 3.0}}}}})
    ev = an.eval_frame([run])
    assert ev.set_index("benchmark")["accuracy"].to_dict() == {"gsm8k": 40.0, "aime24": 3.3}
    assert set(ev["grader"]) == {"qwen"}
    write_json_atomic(run.eval_dir / "scores.json",
                      {"by_step": {"0": {"benchmarks": {"x": {"accuracy": 0.1}}},
                                   "40": {"benchmarks": {"x": {"accuracy": 0.3}}}}})
    assert an.eval_frame([run])["accuracy"].tolist() == pytest.approx([10.0, 30.0])
    assert an.eval_frame([run])["step"].tolist() == [0, 40]
    # ambiguous or wrong layouts are refused, never guessed
    for bad in ({"benchmarks": [1, 2]}, {"x": 40.0}, {"benchmarks": {"x": {"accuracy": 40.0}}}):
        write_json_atomic(run.eval_dir / "scores.json", bad)
        with pytest.raises(ValueError):
            an.eval_frame([run])


def _periodic_runs(root):
    """Two seeds of two methods with in-training evaluations at steps 0, 10, 20 and a final score."""
    runs = []
    for method in ("dapo", "lambda"):
        for seed in (0, 1):
            run = Run.create(root / f"sum_{method}_s{seed}", {"task": "sum", "method": method},
                             seed=seed, method=method)
            for step in (0, 10, 20):
                run.log_periodic_eval(step=step, benchmark="sum_heldout200", ev={
                    "n": 200, "accuracy": 0.4 + 0.01 * step + 0.02 * seed + (0.05 if method == "lambda" else 0),
                    "response_length_mean": 20.0})
            write_json_atomic(run.eval_dir / "scores.json", {"step": 20, "benchmarks": {"sum_heldout": {
                "accuracy": 0.5, "n": 1000}}})
            runs.append(run)
    return runs


def test_periodic_evals_become_curves_with_one_legend_entry_each(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    runs = _periodic_runs(tmp_path)
    ev = an.eval_frame(runs, tmp_path)
    per = ev[ev["benchmark"] == "sum_heldout200"]
    assert len(per) == 12 and sorted(set(per["step"])) == [0, 10, 20]
    # seed 0 / seed 1 of λ-GRPO at step 10: 0.55 and 0.57 -> 55 %, 57 %
    lam10 = per[(per["method"] == "lambda") & (per["step"] == 10)].sort_values("seed")["accuracy"].tolist()
    assert lam10 == pytest.approx([55.0, 57.0])
    fig = an.fig_eval_curves(ev)
    axes = [a for a in fig.axes if a.get_visible() and a.lines]
    assert len(axes) == 1 and axes[0].get_title().startswith("sum_heldout200")  # final-only score left out
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert sorted(labels) == ["DAPO (2 seeds)", "λ-GRPO (2 seeds)"]
    mean_line = next(l for l in axes[0].lines if l.get_label().startswith("λ"))
    assert list(mean_line.get_xdata()) == [0, 10, 20]
    assert list(mean_line.get_ydata()) == pytest.approx([46.0, 56.0, 66.0])  # (45+47)/2, ...
    assert len(axes[0].collections) == 2  # a band per method (2 seeds)
    # one seed: no band
    one = an.fig_eval_curves(ev[ev["seed"] == 0])
    assert sum(len(a.collections) for a in one.axes) == 0


def test_periodic_eval_schema_is_checked(tmp_path):
    run = Run.create(tmp_path / "r", {"task": "sum"}, seed=0, method="dapo")
    with pytest.raises(ValueError, match="fraction"):
        run.log_periodic_eval(step=0, benchmark="b", ev={"n": 4, "accuracy": 40.0, "response_length_mean": 3.0})
    with pytest.raises(ValueError, match="'n'"):
        run.log_periodic_eval(step=0, benchmark="b", ev={"accuracy": 0.4, "response_length_mean": 3.0})
    assert run.periodic_evals() == []


def test_a_wrong_closed_form_is_reported_failing(monkeypatch):
    good = an.eq20_grid(lams=(0.5,), rs=(1 / 9,), Gs=(8,))
    assert good["pass"].all()
    monkeypatch.setattr(obj, "eq20_lambda_grad", lambda *a, **k: 1.001 * good_fn(*a, **k))
    bad = an.eq20_grid(lams=(0.5,), rs=(1 / 9,), Gs=(8,))
    assert not bad["pass"].any()
    assert "#b00000" in an.eq20_html(bad)


good_fn = obj.eq20_lambda_grad


def test_log_group_validates(tmp_path):
    run = Run.create(tmp_path / "r", {}, seed=0, method="lambda")
    run.log_group(step=1, lam=0.5, r=1 / 9, lengths=[3, 5], L=[1.0, -1.0])
    assert run.groups() == [{"step": 1, "lambda": 0.5, "r": 1 / 9, "lengths": [3.0, 5.0], "L": [1.0, -1.0]}]
    with pytest.raises(ValueError):
        run.log_group(step=1, lam=0.5, r=1 / 9, lengths=[3], L=[1.0])
    with pytest.raises(ValueError):
        run.log_group(step=1, lam=float("nan"), r=1 / 9, lengths=[3, 4], L=[1.0, 2.0])


def test_resolve_runs_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(an.RUNS_ENV, raising=False)
    assert an.resolve_runs_dir() == an.repo_root() / "runs" / "demo"
    monkeypatch.setenv(an.RUNS_ENV, str(tmp_path))
    assert an.resolve_runs_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="make demo"):
        an.require_runs(tmp_path, find_runs(tmp_path))


def test_suites_are_kept_apart(tmp_path):
    synthetic_runs(tmp_path / "demo", tasks=("sum",), methods=("lambda",), seeds=(0,), steps=4)
    synthetic_runs(tmp_path / "reproduce-cpu", tasks=("sum",), methods=("lambda",), seeds=(0,), steps=6)
    found, df = an.load_runs(tmp_path)
    # the folders' configs differ in their step count: the label names the folder and the setting
    assert sorted(df["task"].unique()) == ["demo:sum [steps=4]", "reproduce-cpu:sum [steps=6]"]
    assert sorted(df["setting"].unique()) == ["demo, steps=4", "reproduce-cpu, steps=6"]
    assert set(df["base_task"]) == {"sum"}
    assert sorted(df["run"].unique()) == ["demo/sum_lambda_s0", "reproduce-cpu/sum_lambda_s0"]
    assert df.groupby("run")["step"].max().to_dict() == {"demo/sum_lambda_s0": 4, "reproduce-cpu/sum_lambda_s0": 6}
    assert set(an.runs_by_label(found, tmp_path)) == set(df["run"])
    assert set(an.eval_frame(found, tmp_path)["task"]) == set(df["task"])
    # the same config in two folders: the folder alone tells them apart
    synthetic_runs(tmp_path / "x" / "demo", tasks=("sum",), methods=("lambda",), seeds=(0,), steps=4)
    synthetic_runs(tmp_path / "x" / "again", tasks=("sum",), methods=("lambda",), seeds=(0,), steps=4)
    _, dfx = an.load_runs(tmp_path / "x")
    assert sorted(dfx["task"].unique()) == ["again:sum", "demo:sum"]
    assert sorted(dfx["setting"].unique()) == ["again", "demo"]
    # a single folder: plain task names and run names
    found1, df1 = an.load_runs(tmp_path / "demo")
    assert list(df1["task"].unique()) == ["sum"] and list(df1["run"].unique()) == ["sum_lambda_s0"]


def test_different_configs_are_not_pooled_as_seeds(tmp_path):
    a = synthetic_runs(tmp_path / "a", tasks=("sum",), methods=("lambda",), seeds=(0, 1), steps=4)
    b = synthetic_runs(tmp_path / "b", tasks=("sum",), methods=("lambda",), seeds=(0,), steps=4, r=0.5)
    found, df = an.load_runs(tmp_path / "a")
    assert df["task"].unique().tolist() == ["sum"]  # seeds of one config share a task label
    shutil.copytree(b[0].path, tmp_path / "a" / "r05")  # same folder, another r: another experiment
    found, df = an.load_runs(tmp_path / "a")
    labels = df.groupby("run")["task"].first().to_dict()
    assert labels["sum_lambda_s0"] == labels["sum_lambda_s1"] != labels["r05"]
    assert sorted(an.method_summary(df)["seeds"]) == [1, 2]
