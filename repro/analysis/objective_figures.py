"""The weights' explainers, computed from ``repro.objective`` alone (no runs): Figure 2 (the
spread of h and g = h^λ), f of every method on one group, how far λ must move before f departs
from 1, and Eq. 20 (appendix C) against autograd, on random groups and on groups recorded by runs.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from repro import objective as obj
from repro.analysis.plots import METHOD_COLORS, label, r_name
from repro.paper import FIG2_R

# ----------------------------------------------------------------------------------------------
# groups of response lengths
# ----------------------------------------------------------------------------------------------
def normal_quantile_group(G: int = 8, mean: float = 600.0, sd: float = 150.0) -> torch.Tensor:
    """A 'typical' group: G lengths at the normal quantiles (i - 0.5)/G, shape [1, G], float64."""
    q = (torch.arange(G, dtype=torch.float64) + 0.5) / G
    z = math.sqrt(2.0) * torch.erfinv(2 * q - 1)
    return (mean + sd * z).round().clamp_min(1.0)[None, :]


def random_groups(n: int, G: int, *, seed: int = 0, mean: float = 600.0, cv: float = 0.4,
                  max_len: int = 2048) -> torch.Tensor:
    """``n`` groups of G log-normal integer lengths in [1, max_len], shape [n, G], float64."""
    g = torch.Generator().manual_seed(seed)
    s2 = math.log(1 + cv ** 2)
    x = torch.randn(n, G, generator=g, dtype=torch.float64) * math.sqrt(s2) + math.log(mean) - s2 / 2
    return x.exp().round().clamp(1, max_len)


# ----------------------------------------------------------------------------------------------
# Figure 2 and the size of λ's effect
# ----------------------------------------------------------------------------------------------
def h_spread_table(rs: Iterable[float] = FIG2_R, G: int = 8, n_groups: int = 4000,
                   seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """h = 1 + r·z on random groups (package's σ), against the paper's [1-3r, 1+3r] reading and
    the exact bound |z| ≤ (G-1)/√G for sample σ. Returns the table and the h samples per r."""
    lengths = random_groups(n_groups, G, seed=seed)
    rows, samples = [], {}
    zmax = (G - 1) / math.sqrt(G)
    for r in rs:
        h = obj.eq14_h(lengths, r).flatten().numpy()
        samples[r] = h
        rows.append({"r": r_name(r), "G": G, "h min": h.min(), "h 0.5%": np.quantile(h, 0.005),
                     "h 99.5%": np.quantile(h, 0.995), "h max": h.max(),
                     "paper range 1-3r": 1 - 3 * r, "paper range 1+3r": 1 + 3 * r,
                     "bound 1-r(G-1)/√G": 1 - r * zmax, "bound 1+r(G-1)/√G": 1 + r * zmax})
    return pd.DataFrame(rows), samples


def fig_h_spread(samples: dict, G: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bins = np.linspace(min(s.min() for s in samples.values()) - 0.02,
                       max(s.max() for s in samples.values()) + 0.02, 90)
    for r, h in samples.items():
        ax.hist(h, bins=bins, histtype="step", density=True, lw=1.6, label=f"r = {r_name(r)}")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("h = 1 + r·z (dimensionless)")
    ax.set_ylabel("density (per unit h)")
    ax.set_title(f"(a) spread of h over random groups, G = {G}")
    ax.legend()
    fig.tight_layout()
    return fig


def fig_g_of_h(lams: Sequence[float] = (-4, -2, -1, 0, 1, 2, 4), r: float = obj.PAPER_R, G: int = 8):
    import matplotlib.pyplot as plt

    zmax = (G - 1) / math.sqrt(G)
    h = torch.linspace(1 - r * zmax, 1 + r * zmax, 201, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    cmap = plt.get_cmap("coolwarm")
    lo, hi = min(lams), max(lams)
    for lam in lams:
        g = obj.eq15_g(h, lam).numpy()
        ax.plot(h.numpy(), g, color=cmap((lam - lo) / (hi - lo) if hi > lo else 0.5),
                lw=1.6, label=f"λ = {lam:g}")
    ax.set_xlabel("h (dimensionless)")
    ax.set_ylabel("g = h^λ (dimensionless)")
    ax.set_title(f"(b) g = h^λ over the reachable h (r = {r_name(r)}, G = {G})")
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    return fig


def methods_table(lengths: torch.Tensor, *, lams: Sequence[float] = (-5.0, 5.0), r: float = obj.PAPER_R,
                  alpha: float = 1.0) -> pd.DataFrame:
    """f of every method on one group (rows: responses), from ``objective.token_weights``."""
    lengths = torch.as_tensor(lengths, dtype=torch.float64).reshape(1, -1)
    out = {"length (tokens)": lengths[0].numpy(),
           "z": obj.eq13_standardize(lengths)[0].numpy()}
    for m in ("grpo", "dapo", "dr_grpo", "delta_l"):
        f = obj.token_weights(m, lengths, r=r, alpha=alpha)[0].numpy()
        out[label(m) + (f" (α={alpha:g})" if m == "delta_l" else "")] = f
    for lam in lams:
        out[f"λ-GRPO (λ={lam:g})"] = obj.token_weights("lambda", lengths, lam=lam, r=r)[0].numpy()
    return pd.DataFrame(out)


def fig_f_methods(table: pd.DataFrame):
    """Bars of f per response for each method; Dr.GRPO (f = μ) is on its own axis because its
    scale is the mean length, not 1."""
    import matplotlib.pyplot as plt

    dr = label("dr_grpo")
    cols = [c for c in table.columns if c not in ("length (tokens)", "z", dr)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [4, 1]})
    x = np.arange(len(table))
    w = 0.8 / len(cols)
    for k, c in enumerate(cols):
        ax.bar(x + (k - (len(cols) - 1) / 2) * w, table[c], width=w, label=c)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [f"{int(v)}" for v in table["length (tokens)"]])
    ax.set_xlabel("response length |o_i| (tokens), one group of G responses")
    ax.set_ylabel("weight f(o_i) (dimensionless)")
    ax.set_title("f on one group, by method")
    ax.legend(fontsize=7, ncol=2)
    ax2.bar(x, table[dr], color=METHOD_COLORS["dr_grpo"])
    ax2.set_xticks(x, [f"{int(v)}" for v in table["length (tokens)"]], rotation=90, fontsize=7)
    ax2.set_xlabel("length (tokens)")
    ax2.set_ylabel("f = μ (tokens)")
    ax2.set_title(dr)
    fig.tight_layout()
    return fig


def departure(lengths: torch.Tensor, lams, r: float = obj.PAPER_R) -> pd.DataFrame:
    """For each λ: the largest |f_i - 1| in the group and the std of f over the group."""
    lengths = torch.as_tensor(lengths, dtype=torch.float64).reshape(1, -1)
    lam = torch.as_tensor(np.asarray(lams, dtype=np.float64))[:, None]
    f = obj.eq16_lambda_weights(lengths, lam, r)  # [n_lams, G] (λ broadcast over the group)
    return pd.DataFrame({"lambda": lam[:, 0].numpy(),
                         "max |f-1|": (f - 1).abs().max(dim=-1).values.numpy(),
                         "std f": f.std(dim=-1, correction=0).numpy()})


def _departures(lengths: torch.Tensor, lam: torch.Tensor, r: float, criterion: str) -> torch.Tensor:
    """``criterion`` of f for groups ``lengths [n, G]`` at ``lam [..., n]`` (one λ per group)."""
    f = obj.eq16_lambda_weights(lengths, lam[..., None], r)  # [..., n, G]
    if criterion == "max |f-1|":
        return (f - 1).abs().amax(dim=-1)
    if criterion == "std f":
        return f.std(dim=-1, correction=0)
    raise ValueError(f"criterion must be 'max |f-1|' or 'std f', got {criterion!r}")


def lambda_needed(lengths: torch.Tensor, threshold: float, *, r: float = obj.PAPER_R, sign: int = +1,
                  criterion: str = "max |f-1|", lam_max: float = 500.0) -> torch.Tensor:
    """Per group of ``lengths [n, G]``: the smallest |λ| (in direction ``sign``, returned with that
    sign) at which ``criterion`` of f reaches ``threshold``. A grid scan finds the first crossing,
    bisection refines it to ~1e-12; ``inf`` where it is not reached by ``lam_max``."""
    if sign not in (+1, -1):
        raise ValueError("sign must be +1 or -1")
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    lengths = lengths.reshape(1, -1) if lengths.dim() == 1 else lengths
    n = lengths.shape[0]
    grid = torch.cat([torch.linspace(0, 20, 1001, dtype=torch.float64),
                      torch.linspace(20, lam_max, 241, dtype=torch.float64)[1:]])
    vals = torch.cat([_departures(lengths, sign * chunk[:, None].expand(-1, n), r, criterion)
                      for chunk in grid.split(250)])  # [K, n]
    reached = vals >= threshold
    first = torch.where(reached.any(0), reached.float().argmax(0), torch.full((n,), -1))
    out = torch.full((n,), math.inf, dtype=torch.float64)
    ok = first > 0
    out[first == 0] = 0.0
    if ok.any():
        idx = first[ok]
        lo, hi = grid[idx - 1].clone(), grid[idx].clone()
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = _departures(lengths[ok], sign * mid, r, criterion) >= threshold
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        out[ok] = hi
    return sign * out


def lambda_needed_table(G: int = 8, r: float = obj.PAPER_R, thresholds: Sequence[float] = (0.05, 0.20),
                        n_random: int = 100, seed: int = 0) -> pd.DataFrame:
    """λ at which f departs from 1 by each threshold: on the normal-quantile group, its
    first-order estimate t / (r·|z|), and the spread over random groups."""
    q = normal_quantile_group(G)
    z = obj.eq13_standardize(q)[0]
    rand = random_groups(n_random, G, seed=seed)
    rows = []
    for crit, zref in (("max |f-1|", float(z.abs().max())), ("std f", float(z.std(correction=0)))):
        for t in thresholds:
            for sign in (+1, -1):
                lam_q = float(lambda_needed(q, t, r=r, sign=sign, criterion=crit)[0])
                lam_r = lambda_needed(rand, t, r=r, sign=sign, criterion=crit).abs().numpy()
                rows.append({"criterion": crit, "departure": f"{t:.0%}", "direction": "+" if sign > 0 else "−",
                             "λ (quantile group)": lam_q,
                             "first-order t/(r·|z|)": sign * t / (r * zref),
                             "|λ| median (random groups)": float(np.median(lam_r)),
                             "|λ| 10%": float(np.quantile(lam_r, 0.1)),
                             "|λ| 90%": float(np.quantile(lam_r, 0.9))})
    return pd.DataFrame(rows)


def fig_departure(lengths: torch.Tensor, r: float = obj.PAPER_R, thresholds=(0.05, 0.20), lam_max=8.0):
    import matplotlib.pyplot as plt

    lams = np.linspace(-lam_max, lam_max, 401)
    d = departure(lengths, lams, r)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(d["lambda"], d["max |f-1|"] * 100, label="largest |f_i − 1| in the group")
    ax.plot(d["lambda"], d["std f"] * 100, label="std of f over the group")
    for t in thresholds:
        ax.axhline(t * 100, color="grey", ls=":", lw=0.8)
        ax.text(-lam_max, t * 100, f" {t:.0%}", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("λ (dimensionless)")
    ax.set_ylabel("departure of f from 1 (%)")
    G = lengths.shape[-1]
    ax.set_title(f"How far λ must move (r = {r_name(r)}, G = {G}, normal-quantile group)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Eq. 20: autograd against the closed form
# ----------------------------------------------------------------------------------------------
RTOL_EQ20 = 1e-9


def eq20_compare(lengths, L, lam: float, r: float) -> pd.DataFrame:
    """Per group: autograd ∂J/∂λ of ``objective.eq7_unified_objective('lambda', ...)`` and the
    closed form ``objective.eq20_lambda_grad``, in float64, with their relative error. The error
    is scaled by the larger of the two values, or of the sum of absolute terms of Eq. 20 where
    both are ~0 (cancellation)."""
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    L = torch.as_tensor(L, dtype=torch.float64)
    # one λ leaf per group (all equal to lam): the groups are independent, so one backward of
    # Σ_k J_k gives every group's own ∂J_k/∂λ
    lam_t = torch.full((lengths.shape[0], 1), float(lam), dtype=torch.float64, requires_grad=True)
    J = obj.eq7_unified_objective("lambda", lengths, L, lam=lam_t, r=r)
    (auto,) = torch.autograd.grad(J.sum(), lam_t)
    auto = auto[:, 0].detach()
    closed = obj.eq20_lambda_grad(lengths, L, lam, r).detach()
    # magnitude of the terms Eq. 20 sums: G/Σ|o| Σ_i |L_i| s_i |h_i^λ ln h_i| (an independent scale)
    h = obj.eq14_h(lengths, r)
    g = torch.exp(lam * torch.log(h))
    s = torch.softmax(g, dim=-1)
    scale = lengths.shape[-1] / lengths.sum(-1) * (L.abs() * s * (g * torch.log(h)).abs()).sum(-1)
    denom = torch.maximum(torch.maximum(auto.abs(), closed.abs()), scale * 1e-6)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    err = (auto - closed).abs() / denom
    return pd.DataFrame({"autograd": auto.numpy(), "eq20": closed.numpy(), "rel_err": err.numpy()})


def synthetic_L(lengths: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Per-response surrogate sums like a real step's: L_i = |o_i|·A_i (on-policy) with A from
    random ±rewards via Eq. 3, plus off-policy noise."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.where(torch.rand(lengths.shape, generator=g, dtype=torch.float64) < 0.5, 1.0, -0.5)
    adv = obj.eq3_group_advantages(rewards)
    return lengths * adv * (1 + 0.1 * torch.randn(lengths.shape, generator=g, dtype=torch.float64))


def eq20_grid(lams=(-4.0, -1.0, -0.3, 0.0, 0.5, 2.0, 6.0), rs=FIG2_R, Gs=(2, 4, 8, 16, 64),
              n_groups: int = 16, seed: int = 0, rtol: float = RTOL_EQ20) -> pd.DataFrame:
    """The check on random groups across λ, r and G: one row per (λ, r, G), worst group."""
    rows = []
    k = 0
    for G in Gs:
        for r in rs:
            lengths = random_groups(n_groups, G, seed=seed + k)
            L = synthetic_L(lengths, seed=seed + k)
            k += 1
            for lam in lams:
                d = eq20_compare(lengths, L, lam, r)
                i = int(d["rel_err"].idxmax())
                rows.append({"source": "random", "G": G, "r": r_name(r), "lambda": lam,
                             "groups": n_groups, "max rel err": float(d["rel_err"].max()),
                             "autograd (worst)": float(d["autograd"][i]),
                             "eq20 (worst)": float(d["eq20"][i])})
    out = pd.DataFrame(rows)
    out["pass"] = out["max rel err"] <= rtol
    return out


def eq20_recorded(found, lams=(-2.0, 0.0, 2.0), r: float | None = None,
                  rtol: float = RTOL_EQ20, max_groups: int = 64) -> pd.DataFrame:
    """The same check on groups recorded by runs (``Run.groups()``): their lengths and L_i, at
    the λ each was recorded with and at ``lams``. Empty if no run recorded groups."""
    rows = []
    for run in found:
        recs = run.groups()[:max_groups] if hasattr(run, "groups") else []
        if not recs:
            continue
        cfg_r = r if r is not None else float(recs[0].get("r", obj.PAPER_R))
        for rec in recs:
            lengths = torch.tensor([rec["lengths"]], dtype=torch.float64)
            L = torch.tensor([rec["L"]], dtype=torch.float64)
            for lam in (float(rec.get("lambda", 0.0)), *lams):
                d = eq20_compare(lengths, L, lam, float(rec.get("r", cfg_r)))
                rows.append({"source": run.path.name, "step": rec.get("step"), "G": lengths.shape[1],
                             "r": r_name(float(rec.get("r", cfg_r))), "lambda": lam,
                             "max rel err": float(d["rel_err"].max()),
                             "autograd (worst)": float(d["autograd"][0]),
                             "eq20 (worst)": float(d["eq20"][0])})
    out = pd.DataFrame(rows)
    if len(out):
        out["pass"] = out["max rel err"] <= rtol
    return out


def eq20_html(table: pd.DataFrame) -> str:
    """The check as an HTML table with failing rows in red (for the notebook)."""
    cols = list(table.columns)
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for _, row in table.iterrows():
        style = ' style="background:#f8d0d0;color:#b00000;font-weight:bold"' if not row["pass"] else ""
        cells = "".join(f"<td>{_fmt(row[c])}</td>" for c in cols)
        body.append(f"<tr{style}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "PASS" if v else "FAIL"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def fig_eq20(table: pd.DataFrame, rtol: float = RTOL_EQ20):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    err = table["max rel err"].clip(lower=1e-18)
    ok = table["pass"].to_numpy(bool)
    x = table["lambda"].to_numpy(float)
    jitter = (table["G"].astype(float).map(np.log2) - 3) * 0.04
    ax.scatter(x[ok] + jitter[ok], err[ok], s=14, c="tab:green", label="pass", alpha=0.7)
    if (~ok).any():
        ax.scatter(x[~ok] + jitter[~ok], err[~ok], s=30, c="red", marker="x", label="FAIL")
    ax.axhline(rtol, color="red", ls="--", lw=1, label=f"tolerance {rtol:g}")
    ax.set_yscale("log")
    ax.set_xlabel("λ (dimensionless; points jittered by G)")
    ax.set_ylabel("relative error |autograd − Eq. 20| (float64)")
    ax.set_title(f"Eq. 20 vs autograd: {int(ok.sum())}/{len(ok)} checks pass")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
