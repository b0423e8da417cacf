"""Tables of runs: per-run and per-method summaries of the last steps, the differences between
methods against seed noise, and λ's gradient against the within-group covariance of length and
advantage."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from repro.analysis.plots import _method_order, scale
from repro.analysis.stats import welch_difference

def grad_cov_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, run): Pearson and Spearman correlation between λ's applied gradient and the
    within-group covariance of length and advantage, and the share of steps where their signs
    are opposite. At λ = 0, ∂J/∂λ ≈ (r/Σ|o|)·Σ_i z_i·L_i with L_i = |o_i|·A_i on-policy, whose
    sign follows cov(length, advantage); the logged ∂loss/∂λ is −∂J/∂λ, so mostly opposite signs."""
    lam = df[(df["method"] == "lambda")].dropna(subset=["lambda_grad", "len_adv_cov"])
    rows = []
    for (task, run), d in lam.groupby(["task", "run"]):
        x, y = d["len_adv_cov"].astype(float), d["lambda_grad"].astype(float)
        nz = (x != 0) & (y != 0)
        rows.append({"task": task, "run": run, "steps": len(d),
                     "pearson": x.corr(y) if len(d) > 2 else np.nan,
                     "spearman": x.rank().corr(y.rank()) if len(d) > 2 else np.nan,
                     "opposite sign (%)": 100 * float((np.sign(x[nz]) != np.sign(y[nz])).mean()) if nz.any() else np.nan,
                     "final λ": float(d.sort_values("step")["lambda"].iloc[-1])})
    return pd.DataFrame(rows)


def run_summary(df: pd.DataFrame, tail: float = 0.1) -> pd.DataFrame:
    """Per run: the mean of each metric over the last ``tail`` share of its steps."""
    rows = []
    for run, d in df.groupby("run"):
        d = d.sort_values("step")
        last = d.iloc[-max(1, int(math.ceil(len(d) * tail))):]
        row = {"run": run, "task": d["task"].iloc[0], "method": d["method"].iloc[0],
               "seed": int(d["seed"].iloc[0]), "steps": int(d["step"].max()),
               "final λ": float(d["lambda"].iloc[-1])}
        for m in ("reward_mean", "accuracy", "response_length_mean", "truncated_rate", "entropy"):
            if m in d and d[m].notna().any():
                row[f"{m} (last {tail:.0%})"] = float(last[m].astype(float).mean()) * scale(m)
        rows.append(row)
    return pd.DataFrame(rows)


def method_summary(df: pd.DataFrame, tail: float = 0.1) -> pd.DataFrame:
    """Per (task, method): mean ± std across seeds of the per-run summaries. The std columns are
    left out when every (task, method) has one seed (a std of one value is undefined, not 0)."""
    s = run_summary(df, tail)
    vals = [c for c in s.columns if c not in ("run", "task", "method", "seed", "steps")]
    g = s.groupby(["task", "method"])[vals]
    n = s.groupby(["task", "method"]).size().rename("seeds")
    out = g.mean().add_suffix(" mean")
    if int(n.max()) > 1:
        out = out.join(g.std().add_suffix(" std"))
    return out.join(n).reset_index()


def across_runs(values: pd.Series, by) -> pd.DataFrame:
    """Mean, std, min and max of ``values`` per group ``by`` and the number of runs; the std
    column only when some group has more than one run."""
    g = values.groupby(by)
    out = g.agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "runs"})
    return out if int(out["runs"].max()) > 1 else out.drop(columns="std")


def method_differences(df: pd.DataFrame, pairs=None, tail: float = 0.1) -> pd.DataFrame:
    """Per task and quantity (each run's mean over its last ``tail`` share of steps,
    ``run_summary``; λ left out): one method's mean across seeds minus another's, the half-width
    of its 95% interval and whether it is beyond seed noise (``repro.analysis.stats``'s rule,
    unpaired: ``welch_difference``; None with fewer than 2 seeds on a side). ``pairs``:
    ``(method, minus)`` tuples; by default every pair present, each method minus every one
    before it in the package's order."""
    s = run_summary(df, tail)
    quantities = [c for c in s.columns if c not in ("run", "task", "method", "seed", "steps") and "λ" not in c]
    rows = []
    for task, d in s.groupby("task", sort=True):
        present = _method_order(d["method"])
        todo = pairs if pairs is not None else [(b, a) for i, a in enumerate(present) for b in present[i + 1:]]
        for q in quantities:
            for m, ref in todo:
                a, b = (d.loc[d["method"] == x, q].dropna().astype(float).tolist() for x in (m, ref))
                if not a or not b:
                    continue
                diff = welch_difference(a, b)
                rows.append({"task": task, "quantity": q, "method": m, "minus": ref, "seeds": len(a),
                             "seeds (minus)": len(b), "difference": diff.diff, "ci95": diff.half,
                             "beyond noise": diff.beyond_noise})
    return pd.DataFrame(rows, columns=["task", "quantity", "method", "minus", "seeds", "seeds (minus)",
                                       "difference", "ci95", "beyond noise"])
