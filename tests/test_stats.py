"""The package's one rule for "beyond seed noise" (``repro.analysis.stats``), checked against
independent computations: closed-form t quantiles, scipy's t-tests and their confidence
intervals, and formulas written out here with numpy."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats as sps

from analysis_fixtures import synthetic_runs
from repro import analysis as an
from repro.analysis import stats


def test_t_quantile_closed_forms():
    # Student's t with 1 df is Cauchy: q = tan(π(p − 1/2)); with 2 df: q = (2p − 1)/sqrt(2p(1 − p))
    p = 0.975
    assert stats.t975(1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert stats.t975(2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert stats.t975(10 ** 7) == pytest.approx(NormalDist().inv_cdf(p), rel=1e-6)
    assert stats.t975(11) < stats.t975(10) < stats.t975(3)  # no table with a 1.96 floor past 10 df


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_mean_ci_is_the_one_sample_t_interval(n):
    xs = np.random.default_rng(n).normal(3.0, 2.0, size=n).tolist()
    m, half = stats.mean_ci(xs)
    ci = sps.ttest_1samp(xs, 0.0).confidence_interval(0.95)
    assert m == pytest.approx((ci.low + ci.high) / 2) and half == pytest.approx((ci.high - ci.low) / 2)
    m1, half1 = stats.mean_ci([4.0])
    assert m1 == 4.0 and math.isnan(half1)


@pytest.mark.parametrize("seed", range(6))
def test_paired_difference_against_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    b = rng.normal(50, 5, size=n)
    a = b + rng.normal(rng.choice([0.0, 4.0]), 2.0, size=n)
    d = stats.paired_difference((a - b).tolist())
    res = sps.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert d.diff == pytest.approx((ci.low + ci.high) / 2)
    assert d.half == pytest.approx((ci.high - ci.low) / 2)
    # the verdict is the test's: the interval excludes 0 exactly when p < 0.05
    assert d.beyond_noise == bool(res.pvalue < 0.05) == (ci.low > 0 or ci.high < 0)


@pytest.mark.parametrize("seed", range(8))
def test_welch_difference_against_scipy_and_hand_formulas(seed):
    rng = np.random.default_rng(100 + seed)
    na, nb = (int(k) for k in rng.integers(2, 7, size=2))
    a = rng.normal(rng.choice([0.0, 3.0]), rng.uniform(0.5, 3), size=na)
    b = rng.normal(0.0, rng.uniform(0.5, 3), size=nb)
    d = stats.welch_difference(a.tolist(), b.tolist())
    # by hand: Welch's standard error, t at the smaller sample's df
    se = math.sqrt(a.var(ddof=1) / na + b.var(ddof=1) / nb)
    df = min(na, nb) - 1
    q = sps.t.ppf(0.975, df)
    assert d.diff == pytest.approx(a.mean() - b.mean())
    assert d.half == pytest.approx(q * se)
    # scipy's Welch test has the same statistic (diff / se); its p-value at this df gives the verdict
    res = sps.ttest_ind(a, b, equal_var=False)
    assert res.statistic == pytest.approx(d.diff / se)
    p = 2 * sps.t.sf(abs(res.statistic), df)
    assert d.beyond_noise == bool(p < 0.05)
    # never narrower than the Welch–Satterthwaite interval scipy reports (a conservative choice)
    ws = res.confidence_interval(0.95)
    assert d.half >= (ws.high - ws.low) / 2 * (1 - 1e-12)


def test_rule_without_an_interval():
    assert stats.beyond_noise(1.0, float("nan")) is None
    assert stats.welch_difference([1.0], [0.0, 2.0]).beyond_noise is None
    assert stats.welch_difference([1.0], [0.0, 2.0]).verdict() == "–"
    assert stats.paired_difference([]).verdict() == "–"
    assert stats.beyond_noise(-2.0, 1.5) is True and stats.beyond_noise(1.0, 1.0) is False


def test_method_differences_apply_the_rule_to_run_summaries(tmp_path):
    synthetic_runs(tmp_path, tasks=("sum",), methods=("grpo", "dapo", "lambda"), seeds=(0, 1, 2), steps=20)
    found, df = an.load_runs(tmp_path)
    t = an.method_differences(df)
    assert set(zip(t["method"], t["minus"])) == {("dapo", "grpo"), ("lambda", "grpo"), ("lambda", "dapo")}
    # one row checked by hand from the runs' metrics: mean over the last 10% of steps (2 of 20)
    row = t[(t["quantity"] == "response_length_mean (last 10%)") & (t["method"] == "lambda")
            & (t["minus"] == "dapo")].iloc[0]
    per_run = {m: [float(np.mean([r["response_length_mean"] for r in run.metrics()][-2:]))
                   for run in found if run.meta()["method"] == m] for m in ("lambda", "dapo")}
    a, b = np.array(per_run["lambda"]), np.array(per_run["dapo"])
    se = math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3)
    assert row["difference"] == pytest.approx(a.mean() - b.mean())
    assert row["ci95"] == pytest.approx(sps.t.ppf(0.975, 2) * se)
    assert row["beyond noise"] == (abs(a.mean() - b.mean()) > sps.t.ppf(0.975, 2) * se)
    assert not any("λ" in q for q in t["quantity"])
