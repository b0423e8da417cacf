"""The ablation driver of ``repro.demo`` (issue 13): the grid and the scheduler (``repro.jobs``),
the overrides every run folder carries, run reuse, and the paired statistics
(``repro.analysis.cpu_tables``, checked against numbers computed here)."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from repro import demo
from repro import jobs as jb
from repro.analysis import cpu_tables
from repro.trainers.reference import load_cpu_config, parse_overrides


def test_grid_is_36_cells_plus_12_baselines_seed_major():
    jobs = jb.ablation_plan()
    assert len(jobs) == 48 and len({j.name for j in jobs}) == 48
    lam = [j for j in jobs if j.method == "lambda"]
    assert len(lam) == 36
    assert {(dict(j.overrides)["weighting.lambda.lr"], round(dict(j.overrides)["weighting.r"], 6)) for j in lam} == {
        (lr, round(r, 6)) for lr in (0.1, 1.0, 10.0) for r in (1 / 9, 1 / 3)}
    assert sorted((j.task, j.method) for j in jobs if j.method != "lambda") == sorted(
        [(t, m) for t in ("sum", "budget") for m in ("dapo", "grpo")] * 3)
    # first DAPO and the λ lr >= 1 cells seed by seed, then λ lr 0.1 and GRPO seed by seed
    core = [j for j in jobs if j.method == "dapo" or dict(j.overrides).get("weighting.lambda.lr", 0) >= 1]
    assert jobs[:len(core)] == core and len(core) == 30
    for part in (core, jobs[len(core):]):
        assert [j.seed for j in part] == sorted(j.seed for j in part)


def test_overrides_reach_the_saved_config_exactly(tmp_path):
    job = next(j for j in jb.ablation_plan() if j.method == "lambda" and dict(j.overrides)["weighting.lambda.lr"] == 10.0
               and math.isclose(dict(j.overrides)["weighting.r"], 1 / 3))
    cmd = jb.job_command(tmp_path / job.name, job, {"eval_every": 25, "eval_problems": 1000}, resume=False)
    sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
    task, method = cmd[cmd.index("--task") + 1], cmd[cmd.index("--method") + 1]
    cfg = load_cpu_config(task, method, parse_overrides(sets))
    assert cfg.weighting.params.r == 1 / 3 and cfg.weighting.lambda_.lr == 10.0 and cfg.seed == job.seed  # repr() round-trips
    assert cfg.eval_every == 25 and cfg.eval_problems == 1000 and cfg.method == "lambda"
    cfg.validate()


def _row(task, method, seed, acc, length, lr=None, r=None, lam=0.0):
    return {"name": f"{task}_{method}_{lr}_{r}_s{seed}", "task": task, "method": method, "seed": seed,
            "lambda_lr": lr, "r": r, "eval_accuracy": acc, "eval_length": length,
            "eval_verbose_share": 0.5, "final_lambda": lam, "f_min_last": 0.9, "f_max_last": 1.1,
            **{f"lambda_at_{k}": lam for k in cpu_tables.LAMBDA_STEPS}}


def test_paired_difference_to_dapo():
    dapo = [0.50, 0.60, 0.55]
    cell = [0.53, 0.61, 0.60]
    rows = [_row("sum", "dapo", s, a, 20.0) for s, a in enumerate(dapo)]
    rows += [_row("sum", "lambda", s, a, 21.0 + s, lr=10.0, r=1 / 3, lam=1.0 + s) for s, a in enumerate(cell)]
    md, csv, agg = cpu_tables.ablation_table(rows)
    a = next(x for x in agg if x["method"] == "lambda")
    # +3, +1, +5 pp; the interval from scipy's paired t-test, an independent computation
    ci = stats.ttest_rel([100 * c for c in cell], [100 * b for b in dapo]).confidence_interval(0.95)
    assert a["d_eval_accuracy"] == pytest.approx(3.0) == pytest.approx((ci.low + ci.high) / 2)
    assert a["d_eval_accuracy_ci95"] == pytest.approx((ci.high - ci.low) / 2)
    assert a["d_eval_length"] == pytest.approx(2.0) and a["paired_seeds"] == 3
    assert a["final_lambda"] == pytest.approx(2.0)
    assert "λ-GRPO lr 10, r 1/3" in md and "(reference)" in md
    import csv as csv_module
    import io

    parsed = list(csv_module.DictReader(io.StringIO(csv)))  # the cell's name has a comma: quoted, one column
    assert [r["cell"] for r in parsed] == [x["cell"] for x in agg] and all(None not in r for r in parsed)


def test_finished_run_with_other_config_is_not_reused(tmp_path):
    from repro.runs import Run

    job = jb.Job("sum_lambda_x_s0", "sum", "lambda", 0, (("weighting.lambda.lr", 10.0),))
    run = Run.create(tmp_path / job.name, {"task": "sum", "method": "lambda", "seed": 0, "lambda_lr": 0.1},
                     seed=0, method="lambda")
    (run.metrics_path).write_text("")
    run.mark_done({})
    with pytest.raises(RuntimeError, match="weighting.lambda.lr"):
        jb.run_all(tmp_path, [job], {}, 1, 1)


def test_h_floor_note_says_h_positive():
    note = demo.h_floor_note([1 / 9, 1 / 3], 8)
    assert "2.475" in note and "0.175" in note and "h > 0" in note


def test_a_run_another_process_trains_is_not_started_twice(tmp_path):
    import subprocess
    import sys
    import textwrap

    from repro.runs import Run

    job = jb.Job("sum_dapo_s0", "sum", "dapo", 0)
    out = tmp_path / job.name
    out.mkdir()
    # a stand-in for another invocation's trainer: finishes the run after a moment
    code = textwrap.dedent(f"""
        import time
        from repro.runs import Run
        time.sleep(2)
        r = Run.create({str(out)!r}, {{"task": "sum", "method": "dapo", "seed": 0}}, seed=0, method="dapo")
        r.metrics_path.write_text("")
        r.mark_done({{}})
    """)
    other = subprocess.Popen([sys.executable, "-c", code])
    (out / jb.LOCK).write_text(f"{other.pid}\n")
    n = jb.run_all(tmp_path, [job], {}, 1, 1)
    assert n == 0 and other.poll() == 0 and Run(out).is_done()


def test_demo_table_shares_the_ablation_aggregation():
    """table() and ablation_table() aggregate, write CSV and format ± the same way: a column a
    row lacks is left out (nan -> '–' when no row has it), floats to 6 digits, the interval
    without a sign."""
    accs, covs = [0.50, 0.60, 0.55], [1.0, 2.0, 4.5]
    rows = [{**_row("sum", "dapo", s, a, 20.0), "eval_gain": a - 0.5, "len_adv_cov_mean": c, "wall_s": None}
            for s, (a, c) in enumerate(zip(accs, covs))]  # no train_length / train_entropy keys
    base = {"sum": {"accuracy": 0.5, "response_length_mean": 20.0, "style_share": {"verbose": 0.3}}}
    md, csv, agg = cpu_tables.table(rows, base)
    (a,) = agg
    lo, hi = stats.ttest_1samp(covs, 0.0).confidence_interval(0.95)  # scipy, independently
    ci = (hi - lo) / 2
    assert a["len_adv_cov_mean"] == pytest.approx(2.5) and a["len_adv_cov_mean_ci95"] == pytest.approx(ci)
    assert math.isnan(a["train_length"]) and math.isnan(a["wall_s"])
    assert f"| +2.50 ± {ci:.2f} |" in md and "| – | – |" in md
    header, line = csv.splitlines()
    cell = dict(zip(header.split(","), line.split(",")))
    assert cell["eval_accuracy"] == "0.55" and cell["len_adv_cov_mean_ci95"] == f"{ci:.6g}"
    assert cell["train_length"] == "nan" and cell["seeds"] == "3"


def test_report_only_writes_the_report_with_no_runs(tmp_path):
    # the report's whole path as the command runs it (config loading, the h > 0 note, the
    # start-checkpoint evaluation, tables and figures), on an empty runs folder
    demo.main(["--ablation", "--report-only", "--out", str(tmp_path), "--tasks", "sum",
               "--seeds", "1", "--eval-problems", "10"])
    text = (tmp_path / "ablation.md").read_text()
    assert "Not finished: 8 of the 8 runs" in text  # 3 λ lrs × 2 r + DAPO + GRPO, one seed, one task
    # r = 1/3 with G = 8 and sample σ: h ≥ 1 − (1/3)·7/√8, computed here independently
    assert f"{1 - (1 / 3) * 7 / 8 ** 0.5:.3f}" in text
