"""Everything this package takes from the shared layer, in one file.

The TRL seams (``trainer.py``) call only these names. Today they sit on ``repro.objective``
(the paper's math) and ``repro.runs`` (the metrics schema); when the trainer contract
(``repro.trainers.contract``, issue 11) lands, this file is the one place that switches to it.

* ``Weighting``: the weighting config (one spelling with the paper configs' ``lgrpo:``
  section: method, r, lr, init, sigma, alpha, scope).
* ``sample_weights``: f_i(λ) of each sample from the lengths of its whole group (Eq. 8-16).
* ``group_advantages``: Eq. 3 (sample std, ε = 1e-6), the package's advantage.
* ``new_lambda``: λ with its own SGD (``LearnableLambda``), or ``None`` for fixed-weight methods.
* ``FStats`` and ``metrics_record``: the f statistics and the one metrics line per optimizer
  step, with the keys the reference trainer writes (``repro.runs.REQUIRED``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from repro.objective import (METHODS, SIGMA_CONVENTIONS, LearnableLambda, eq3_group_advantages,
                             sample_weights as _sample_weights, within_group_cov)
from repro.reward import CORRECT
from repro.runs import validate_record

__all__ = ["Weighting", "sample_weights", "group_advantages", "new_lambda", "FStats",
           "metrics_record", "within_group_cov", "CORRECT"]


@dataclass(frozen=True)
class Weighting:
    method: str = "lambda"  # grpo | dapo | dr_grpo | lambda | delta_l
    r: float = 1 / 9  # Eq. 14's reducer
    lr: float = 0.1  # λ's own SGD
    init: float = 0.0
    sigma: str = "sample"  # σ of Eq. 12
    alpha: float = 1.0  # delta_l only
    scope: str = "group"  # Eq. 7: each group divided by its own Σ|o_i|

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"lgrpo.method {self.method!r} is not one of {sorted(METHODS)}")
        if self.sigma not in SIGMA_CONVENTIONS:
            raise ValueError(f"lgrpo.sigma {self.sigma!r} is not one of {SIGMA_CONVENTIONS}")
        if self.scope != "group":
            raise ValueError(f"lgrpo.scope {self.scope!r}: the TRL trainer implements Eq. 7's group "
                             "scope only (1/Σ|o_i| per group, groups averaged over the step)")
        for name in ("r", "lr", "init", "alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"lgrpo.{name} must be a finite number, got {v!r}")
        if self.r <= 0 or self.lr < 0:
            raise ValueError(f"lgrpo.r must be > 0 and lgrpo.lr >= 0, got {self.r}, {self.lr}")

    @property
    def learnable(self) -> bool:
        return self.method == "lambda"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Weighting":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown lgrpo keys {unknown}; known: {sorted(known)}")
        return cls(**{k: (float(v) if k in ("r", "lr", "init", "alpha") and isinstance(v, (int, str))
                          and not isinstance(v, bool) else v) for k, v in d.items()})


def sample_weights(w: Weighting, group_lengths, positions, lam) -> torch.Tensor:
    return _sample_weights(w.method, group_lengths, positions, lam=lam, r=w.r, alpha=w.alpha,
                           sigma=w.sigma)


def group_advantages(rewards_by_group, scale: str) -> torch.Tensor:
    """Eq. 3 on ``[groups, G]``; ``scale`` is 'std' or 'none' (Dr.GRPO)."""
    return eq3_group_advantages(rewards_by_group, scale=scale)


def new_lambda(w: Weighting, device) -> LearnableLambda | None:
    return LearnableLambda(init=w.init, lr=w.lr, device=device) if w.learnable else None


class FStats:
    """Count, sum, sum of squares, min and max of f over one optimizer step (all processes).
    The std is the sample std (ddof 1), as the reference trainer's ``f_std``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.n, self.s, self.ss, self.lo, self.hi = 0.0, 0.0, 0.0, math.inf, -math.inf

    def add(self, f: torch.Tensor) -> None:
        f = f.detach().double().cpu().reshape(-1)
        if f.numel():
            self.n += f.numel()
            self.s += float(f.sum())
            self.ss += float((f * f).sum())
            self.lo = min(self.lo, float(f.min()))
            self.hi = max(self.hi, float(f.max()))

    def reduce(self, reduce_fn=None) -> dict:
        """``reduce_fn(tensor, op)`` sums ('sum'), minimises ('min') or maximises ('max') over the
        processes (identity when None)."""
        t = torch.tensor([self.n, self.s, self.ss], dtype=torch.float64)
        lo = torch.tensor([self.lo], dtype=torch.float64)
        hi = torch.tensor([self.hi], dtype=torch.float64)
        if reduce_fn is not None:
            t, lo, hi = reduce_fn(t, "sum"), reduce_fn(lo, "min"), reduce_fn(hi, "max")
        n, s, ss = (float(x) for x in t.cpu())
        if n == 0:
            raise ValueError("no weights were recorded in this optimizer step")
        mean = s / n
        var = max(ss - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
        return {"f_mean": mean, "f_std": math.sqrt(var), "f_min": float(lo), "f_max": float(hi)}


def metrics_record(*, step: int, rollout: int, method: str, lam: float, lam_grad: float | None,
                   fstats: dict, rollout_stats: dict, entropy: float | None, kl: float | None,
                   clip_ratio: float, grad_norm: float | None, time_s: float, extra: dict | None = None) -> dict:
    """One metrics line (``repro.runs`` schema); ``rollout_stats`` holds reward_mean, accuracy,
    response_length_mean/max, truncated_rate and len_adv_cov of the step's rollouts."""
    rec = {"step": int(step), "rollout": int(rollout), "method": method, "lambda": float(lam),
           "lambda_grad": None if lam_grad is None else float(lam_grad), **fstats,
           **{k: float(rollout_stats[k]) for k in ("reward_mean", "accuracy", "response_length_mean",
                                                    "response_length_max", "truncated_rate", "len_adv_cov")},
           "entropy": entropy, "kl": kl, "clip_ratio": float(clip_ratio),
           "grad_norm": None if grad_norm is None else float(grad_norm), "time_s": float(time_s)}
    for k, v in (extra or {}).items():
        rec.setdefault(k, v)
    return validate_record(rec)
