"""Analysis and plotting shared by the notebooks (``notebooks/``) and ``python -m repro.artifacts``.

Every weight, objective and gradient comes from ``repro.objective``; every run is read through
``repro.runs``. Nothing here hard-codes a result: each function computes what it returns from
its arguments (the paper's numbers live as data in ``paper_artifacts/table1_paper.csv``).

Units used on every axis: optimizer steps; response length in tokens; token entropy in nats per
token; λ, f, g and h are dimensionless; reward on the paper's +1 / -0.5 / -1 scale; accuracy in %.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from repro import objective as obj
from repro import runs as runs_mod

METHOD_LABELS = {"grpo": "GRPO", "dapo": "DAPO", "dr_grpo": "Dr.GRPO", "lambda": "λ-GRPO",
                 "delta_l": "ΔL (α=1)"}
METHOD_COLORS = {"grpo": "tab:blue", "dapo": "tab:orange", "dr_grpo": "tab:purple",
                 "lambda": "tab:green", "delta_l": "tab:brown"}
PAPER_R = (1 / 30, 1 / 15, 1 / 9)
R_NAMES = {1 / 30: "1/30", 1 / 15: "1/15", 1 / 9: "1/9"}
DEFAULT_RUNS = "runs/demo"  # what `make demo` writes
RUNS_ENV = "LGRPO_RUNS"

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
# locating runs
# ----------------------------------------------------------------------------------------------
def repo_root(start: str | Path | None = None) -> Path:
    """The package checkout: the nearest folder at or above ``start`` (default: cwd, then this
    file) that holds ``pyproject.toml`` and ``repro/``."""
    for base in ([Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve().parent]):
        for p in [base.resolve(), *base.resolve().parents]:
            if (p / "pyproject.toml").exists() and (p / "repro").is_dir():
                return p
    raise FileNotFoundError("cannot find the lambda-grpo checkout (pyproject.toml + repro/)")


def resolve_runs_dir(runs: str | Path | None = None) -> Path:
    """The run folder a notebook reads: ``runs`` if given, else ``$LGRPO_RUNS``, else
    ``runs/demo``. A relative path is taken relative to the checkout, not to the notebook."""
    p = Path(runs or os.environ.get(RUNS_ENV) or DEFAULT_RUNS).expanduser()
    return p if p.is_absolute() else repo_root() / p


def _suites(found, root: Path) -> dict:
    """Run -> (label, suite): the run's path relative to ``root``, and its parent folder there
    ('' when every run sits in one folder). Runs of different suites (e.g. runs/demo and
    runs/reproduce-cpu) are kept apart in every plot and table."""
    rel = {}
    for r in found:
        try:
            rel[r] = r.path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            rel[r] = Path(r.path.name)
    parents = {p.parent for p in rel.values()}
    return {r: (p.as_posix(), p.parent.as_posix() if len(parents) > 1 else "") for r, p in rel.items()}


SEED_ONLY_KEYS = {"seed", "threads", "init_checkpoint", "out", "output_dir"}


def config_id(run) -> str:
    """A short hash of the run's config without its seed (and thread count / paths), so that
    seeds of one experiment share it."""
    import hashlib
    import json

    cfg = run.config() if run.config_path.exists() else {}
    cfg = {k: v for k, v in (cfg or {}).items() if k not in SEED_ONLY_KEYS}
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _task_of(run) -> str:
    cfg = run.config() if run.config_path.exists() else {}
    t = (cfg or {}).get("task")
    t = t.get("name") if isinstance(t, dict) else t
    return str(t if t is not None else run.meta().get("task", "task"))


def run_labels(found, root: str | Path) -> dict:
    """Run -> (run label, task label). The run label is its path relative to ``root``. The task
    label is the config's task, prefixed by the run's folder when runs sit in several folders
    ('demo:sum'), and suffixed by a config hash when runs of one (task, method) differ in more
    than their seed ('sum#1a2b3c'): such runs are different experiments, not seeds, and are
    never pooled in a seed band."""
    suites = _suites(found, Path(root))
    base = {}
    for r in found:
        lab, suite = suites[r]
        base[r] = (lab, f"{suite}:{_task_of(r)}" if suite else _task_of(r), str(r.meta().get("method")),
                   config_id(r))
    n_cfg: dict = {}
    for lab, task, method, cid in base.values():
        n_cfg.setdefault((task, method), set()).add(cid)
    return {r: (lab, task if len(n_cfg[(task, method)]) <= 1 else f"{task}#{cid}")
            for r, (lab, task, method, cid) in base.items()}


def runs_by_label(found, root: str | Path) -> dict:
    """``{label: Run}`` with the labels ``load_runs`` puts in its ``run`` column."""
    return {lab: r for r, (lab, _) in _suites(found, Path(root)).items()}


def load_runs(runs_dir: str | Path):
    """``(runs, metrics)`` for every run under ``runs_dir`` (through ``repro.runs``). ``run`` is
    the run's path relative to ``runs_dir``; if runs sit in several folders, ``task`` is
    prefixed with the folder ('demo:sum'), so that suites are never pooled."""
    found = runs_mod.find_runs(runs_dir)
    labels = run_labels(found, runs_dir)
    frames = []
    for r in found:
        f = r.metrics_frame()
        if not len(f):
            continue
        f["run"], f["task"] = labels[r]
        f["config_id"] = config_id(r)
        frames.append(f)
    df = pd.concat(frames, ignore_index=True) if frames else runs_mod.load_metrics([])
    if len(df):
        df["method"] = df["method"].astype(str)
        df["seed"] = df["seed"].fillna(-1).astype(int)
    return found, df


def require_runs(runs_dir: str | Path, found: Sequence) -> None:
    if not found:
        raise FileNotFoundError(
            f"no runs under {runs_dir} (a run folder holds meta.json and metrics.jsonl). "
            f"Run `make demo` first, or set {RUNS_ENV} to a folder of runs.")


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
def h_spread_table(rs: Iterable[float] = PAPER_R, G: int = 8, n_groups: int = 4000,
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


def fig_g_of_h(lams: Sequence[float] = (-4, -2, -1, 0, 1, 2, 4), r: float = 1 / 9, G: int = 8):
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


def methods_table(lengths: torch.Tensor, *, lams: Sequence[float] = (-5.0, 5.0), r: float = 1 / 9,
                  alpha: float = 1.0) -> pd.DataFrame:
    """f of every method on one group (rows: responses), from ``objective.token_weights``."""
    lengths = torch.as_tensor(lengths, dtype=torch.float64).reshape(1, -1)
    out = {"length (tokens)": lengths[0].numpy(),
           "z": obj.eq13_standardize(lengths)[0].numpy()}
    for m in ("grpo", "dapo", "dr_grpo", "delta_l"):
        f = obj.token_weights(m, lengths, r=r, alpha=alpha)[0].numpy()
        out[label(m)] = f
    for lam in lams:
        out[f"λ-GRPO (λ={lam:g})"] = obj.token_weights("lambda", lengths, lam=lam, r=r)[0].numpy()
    return pd.DataFrame(out)


def fig_f_methods(table: pd.DataFrame):
    """Bars of f per response for each method; Dr.GRPO (f = μ) is on its own axis because its
    scale is the mean length, not 1."""
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if c not in ("length (tokens)", "z", "Dr.GRPO")]
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
    ax2.bar(x, table["Dr.GRPO"], color="tab:purple")
    ax2.set_xticks(x, [f"{int(v)}" for v in table["length (tokens)"]], rotation=90, fontsize=7)
    ax2.set_xlabel("length (tokens)")
    ax2.set_ylabel("f = μ (tokens)")
    ax2.set_title("Dr.GRPO")
    fig.tight_layout()
    return fig


def departure(lengths: torch.Tensor, lams, r: float = 1 / 9) -> pd.DataFrame:
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


def lambda_needed(lengths: torch.Tensor, threshold: float, *, r: float = 1 / 9, sign: int = +1,
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


def lambda_needed_table(G: int = 8, r: float = 1 / 9, thresholds: Sequence[float] = (0.05, 0.20),
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


def fig_departure(lengths: torch.Tensor, r: float = 1 / 9, thresholds=(0.05, 0.20), lam_max=8.0):
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


def eq20_grid(lams=(-4.0, -1.0, -0.3, 0.0, 0.5, 2.0, 6.0), rs=PAPER_R, Gs=(2, 4, 8, 16, 64),
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
        cfg_r = r if r is not None else float(recs[0].get("r", 1 / 9))
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


# ----------------------------------------------------------------------------------------------
# runs over training: seed bands and λ's dynamics
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


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT_METRICS else 1.0


def _smooth(b: pd.DataFrame, w: int) -> pd.DataFrame:
    if w <= 1:
        return b
    b = b.copy()
    for c in ("mean", "min", "max"):
        b[c] = b[c].rolling(w, center=True, min_periods=1).mean()
    return b


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
            k = _scale(metric)
            for m in methods:
                b = _smooth(band[band["method"] == m].sort_values("step"), w)
                if not len(b):
                    continue
                n = int(b["n_seeds"].max())
                ax.plot(b["step"], b["mean"] * k, color=METHOD_COLORS.get(m), lw=1.4,
                        label=f"{label(m)} ({n} seed{'s' if n != 1 else ''})")
                if n > 1:
                    ax.fill_between(b["step"], b["min"] * k, b["max"] * k, color=METHOD_COLORS.get(m),
                                    alpha=0.2, lw=0)
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
            ax.plot(rd["step"], rd["lambda"], color="tab:green", lw=0.7, alpha=0.5)
        b = seed_band(d, "lambda", by=("task",))
        ax.plot(b["step"], b["mean"], color="black", lw=1.6,
                label=f"mean over {int(b['n_seeds'].max())} seed(s)")
        ax.fill_between(b["step"], b["min"], b["max"], color="tab:green", alpha=0.2, lw=0,
                        label="min–max over seeds")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("λ (dimensionless)")
        ax.set_title(f"λ-GRPO, task {task}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
                row[f"{m} (last {tail:.0%})"] = float(last[m].astype(float).mean()) * _scale(m)
        rows.append(row)
    return pd.DataFrame(rows)


def method_summary(df: pd.DataFrame, tail: float = 0.1) -> pd.DataFrame:
    """Per (task, method): mean ± std across seeds of the per-run summaries."""
    s = run_summary(df, tail)
    vals = [c for c in s.columns if c not in ("run", "task", "method", "seed", "steps")]
    g = s.groupby(["task", "method"])[vals]
    out = g.mean().add_suffix(" mean").join(g.std().add_suffix(" std")).join(
        s.groupby(["task", "method"]).size().rename("seeds"))
    return out.reset_index()


# ----------------------------------------------------------------------------------------------
# evaluation scores (Run.eval_scores) and the paper's Table 1
# ----------------------------------------------------------------------------------------------
def _bench_accuracies(block: dict, where: str) -> tuple[dict, str | None]:
    """``({benchmark: accuracy in %}, grader)`` from one evaluation in either layout:

    * ``repro.eval`` (the evaluation pipeline): ``{"primary_grader": g, "graders": {g:
      {"benchmarks": {b: {"accuracy": <percent>, ...}}}}}``; the primary grader's scores;
    * the reference trainer's held-out evaluation: ``{"benchmarks": {b: {"accuracy":
      <fraction>, "n": ...}}}``, converted to percent (a value above 1 is refused, not guessed).
    """
    if isinstance(block.get("graders"), dict):
        g = block.get("primary_grader") or next(iter(block["graders"]))
        bench = block["graders"][g].get("benchmarks", {})
        return {b: float(v["accuracy"]) for b, v in bench.items()}, g
    bench = block.get("benchmarks")
    if isinstance(bench, dict) and all(isinstance(v, dict) and "accuracy" in v for v in bench.values()):
        acc = {b: float(v["accuracy"]) for b, v in bench.items()}
        if any(not 0.0 <= a <= 1.0 for a in acc.values()):
            raise ValueError(f"{where}: trainer-layout accuracies must be fractions in [0, 1], got {acc}")
        return {b: 100.0 * a for b, a in acc.items()}, None
    raise ValueError(f"{where}: unrecognised scores layout (expected 'graders' from repro.eval or "
                     f"'benchmarks' from the reference trainer), keys {sorted(block)}")


def eval_frame(found, root: str | Path | None = None) -> pd.DataFrame:
    """Every run's evaluation scores as rows: run, method, seed, task, step, benchmark,
    accuracy (%), grader. Sources: ``Run.eval_scores`` (one evaluation without a step is the
    run's final checkpoint, at its last logged step; several may sit under ``"by_step": {step:
    <evaluation>}``; layouts: see ``_bench_accuracies``; anything else raises) and the
    in-training evaluations ``Run.periodic_evals`` (their own benchmark name, e.g.
    'sum_heldout200': a fixed subset evaluated at step 0 and every few steps)."""
    rows = []
    if root is None and found:
        root = os.path.commonpath([str(r.path.resolve().parent) for r in found])
    labels = run_labels(found, root or ".")
    for run in found:
        meta = run.meta()
        run_label, task = labels[run]
        base = {"run": run_label, "method": meta.get("method"), "seed": meta.get("seed"),
                "task": task or "task"}
        for rec in run.periodic_evals():
            acc = float(rec["accuracy"])
            if not 0.0 <= acc <= 1.0:
                raise ValueError(f"{run.periodic_evals_path}: accuracy must be a fraction, got {acc}")
            rows.append({**base, "step": int(rec["step"]), "benchmark": rec["benchmark"],
                         "accuracy": 100.0 * acc, "grader": None})
        sc = run.eval_scores()
        if sc is None:
            continue
        where = str(run.eval_dir / "scores.json")
        if not isinstance(sc, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if isinstance(sc.get("by_step"), dict):
            items = list(sc["by_step"].items())
        else:
            last = sc.get("step")
            if last is None:  # one evaluation without a step: the run's final checkpoint
                m = run.metrics()
                last = m[-1]["step"] if m else None
            items = [(last, sc)]
        for step, block in items:
            accs, grader = _bench_accuracies(block, where)
            for name, acc in accs.items():
                rows.append({**base, "step": int(step) if step is not None else None,
                             "benchmark": name, "accuracy": acc, "grader": grader})
    return pd.DataFrame(rows, columns=["run", "method", "seed", "task", "step", "benchmark", "accuracy",
                                       "grader"])


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
            name = (f"{task}: " if several_tasks else "") + f"{label(m)} ({ns} seed{'s' if ns != 1 else ''})"
            ax.plot(b["step"], b["mean"], marker="o", ms=3, lw=1.3, color=colors.get(m), label=name)
            if ns > 1:
                ax.fill_between(b["step"], b["min"], b["max"], color=colors.get(m), alpha=0.15, lw=0)
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


# the paper's Table 1 columns, under the evaluation pipeline's benchmark names
TABLE1_BENCHMARKS = ("gsm8k", "math500", "minerva_math", "gaokao2023en", "olympiadbench",
                     "college_math", "aime24", "amc23")
TABLE1_METHODS = {"grpo": "GRPO", "dapo": "DAPO", "lambda": "λ-GRPO", "base": "Base"}


def load_table1(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's Table 1 as entered in ``paper_artifacts/table1_paper.csv`` (columns: size,
    method, the eight benchmarks, avg)."""
    p = Path(path) if path else repo_root() / "paper_artifacts" / "table1_paper.csv"
    if not p.exists():
        raise FileNotFoundError(f"{p} not found (the paper's Table 1, entered by the evaluation issue)")
    t = pd.read_csv(p)
    missing = [c for c in ("size", "method", *TABLE1_BENCHMARKS, "avg") if c not in t.columns]
    if missing:
        raise ValueError(f"{p}: columns {missing} missing (have {list(t.columns)})")
    return t


def table1_average_check(t1: pd.DataFrame, benchmarks: Sequence[str] = TABLE1_BENCHMARKS,
                         avg_col: str = "avg") -> pd.DataFrame:
    """Each row's average recomputed from its benchmark cells (unweighted mean), against the
    paper's printed average. ``rounds_to_printed``: the recomputed mean rounds to the printed
    value at 0.1. ``matches``: within 0.1, the most that rounding the cells (±0.05 on their
    mean) and the average (±0.05) can explain; a row outside it is a real inconsistency."""
    if len(benchmarks) != 8:
        raise ValueError(f"Table 1 has 8 benchmarks, got {list(benchmarks)}")
    cells = t1[list(benchmarks)].astype(float)
    out = t1[[c for c in t1.columns if c not in benchmarks and c != avg_col]].copy()
    out["paper avg"] = t1[avg_col].astype(float)
    out["recomputed avg"] = cells.mean(axis=1)
    out["difference"] = out["paper avg"] - out["recomputed avg"]
    out["rounds_to_printed"] = (out["difference"].abs() <= 0.05 + 1e-9)
    out["matches"] = out["difference"].abs() <= 0.1 + 1e-9
    return out
