"""Eq. 3 (the group-normalised advantage), the clipped surrogate, Eq. 7 per group and the closed-form
λ gradient of Eq. 20. Part of ``repro.objective``; see its docstring."""
from __future__ import annotations

import torch

from repro.objective.methods import as_weighting
from repro.objective.weights import PAPER_R, _as_float, _check_finite, _h, check_lengths, eq15_g


def eq3_group_advantages(rewards, *, scale: str = "std", eps: float = 1e-6) -> torch.Tensor:
    """A_i = (R_i - mean_j R_j) / (std_j R_j + eps) within each group of ``rewards [groups, G]``.

    ``scale="std"`` uses the sample std (ddof = 1), as Eq. 3 and ``torch.std``; ``scale="none"``
    only centres (Dr.GRPO). A group whose rewards are all equal gets A = 0 either way.
    """
    t = _as_float(rewards, "rewards")
    if t.dim() != 2 or t.shape[1] < 2:
        raise ValueError(f"rewards must have shape [groups, G] with G >= 2, got {tuple(t.shape)}")
    _check_finite(t, "rewards")
    centred = t - t.mean(dim=-1, keepdim=True)
    if scale == "none":
        return centred
    if scale != "std":
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    return centred / (t.std(dim=-1, keepdim=True) + eps)



# ----------------------------------------------------------------------------------------------
# the clipped surrogate, Eq. 7 per group, and Eq. 20
# ----------------------------------------------------------------------------------------------
def clipped_surrogate(logp, old_logp, adv, *, clip_low: float = 0.2, clip_high: float = 0.2,
                      dual_clip: float | None = None):
    """Per-token min(ρA, clip(ρ, 1-ε_low, 1+ε_high)·A), the quantity Eq. 4-7 maximise.

    ``dual_clip = c > 1`` additionally bounds it below by c·A where A < 0 (dual-clip PPO).
    Returns ``(surrogate, clipped)`` where ``clipped`` marks tokens whose surrogate is not ρA.
    """
    return surrogate_from_log_ratio(logp - old_logp, adv, clip_low=clip_low, clip_high=clip_high,
                                    dual_clip=dual_clip)


def surrogate_from_log_ratio(log_ratio, adv, *, clip_low: float = 0.2, clip_high: float = 0.2,
                             dual_clip: float | None = None):
    """``clipped_surrogate`` given log ρ = logp - old_logp."""
    _, unclipped, surr = _surrogate(log_ratio, adv, clip_low, clip_high, dual_clip)
    return surr, surr != unclipped


def _surrogate(log_ratio, adv, clip_low, clip_high, dual_clip):
    """ρ, ρA and min(ρA, clip(ρ)A) (bounded below by c·A where A < 0 with a dual clip c)."""
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped_val = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    surr = torch.minimum(unclipped, clipped_val)
    if dual_clip is not None:
        if not dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        surr = torch.where(adv < 0, torch.maximum(surr, dual_clip * adv), surr)
    return ratio, unclipped, surr


def surrogate_sums(log_ratio, adv, mask, *, clip_low: float = 0.2, clip_high: float = 0.2,
                   dual_clip: float | None = None):
    """L_i = Σ_t m_it·min(ρA, clip(ρ)A) per sample (the L_i of Eq. 7) and the per-token ``clipped``
    marks, from log ρ ``[N, T]``, A ``[N, 1]`` or ``[N, T]`` and a float 0/1 mask ``[N, T]``.

    The same numbers as ``surrogate_from_log_ratio`` summed over the mask, with the gradient in
    closed form: ∂L_i/∂log ρ_it = m_it·ρ_it·A_it where the surrogate is ρA and 0 where it is
    clipped (the clipped value does not depend on ρ), rounded in the order autograd's chain
    rounds it. The backward pass is then two products on the tokens instead of the chain through
    exp, clamp and minimum (``tests/test_objective.py`` checks it bit for bit against that chain).
    """
    if log_ratio.requires_grad and not (adv.requires_grad or mask.requires_grad):
        # (the closed form is ∂/∂log ρ only: a gradient to A or the mask takes autograd's chain)
        return _SurrogateSums.apply(log_ratio, adv, mask, clip_low, clip_high, dual_clip)
    surr, clipped = surrogate_from_log_ratio(log_ratio, adv, clip_low=clip_low, clip_high=clip_high,
                                             dual_clip=dual_clip)
    return (surr * mask).sum(dim=1), clipped


class _SurrogateSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_ratio, adv, mask, clip_low, clip_high, dual_clip):
        ratio, unclipped, surr = _surrogate(log_ratio, adv, clip_low, clip_high, dual_clip)
        clipped = surr != unclipped
        ctx.save_for_backward((ratio * mask).masked_fill_(clipped, 0.0), adv)  # m·ρ where unclipped
        ctx.mark_non_differentiable(clipped)
        return (surr * mask).sum(dim=1), clipped

    @staticmethod
    def backward(ctx, grad_L, _grad_clipped):
        # (g·A)·ρ in the order autograd's chain rounds it (mul, then exp's backward), so that the
        # gradient is bit for bit the one the written-out chain gives
        d, adv = ctx.saved_tensors
        return (grad_L[:, None] * adv) * d, None, None, None, None, None


def eq7_unified_objective(method, lengths, L, *, lam=0.0, **params) -> torch.Tensor:
    """J per group (Eq. 7): Σ_i f(o_i)·L_i / Σ_i |o_i|, for per-response surrogate sums
    ``L [groups, G]`` (L_i = Σ_t min(ρA, clip(ρ)A)). Returns shape ``[groups]``.
    ``method``: a ``Weighting``, or a method name with its parameters (``as_weighting``)."""
    weighting = as_weighting(method, **params)
    t = check_lengths(lengths)
    L = _as_float(L, "L", t.dtype)
    if L.shape != t.shape:
        raise ValueError(f"L has shape {tuple(L.shape)}, lengths {tuple(t.shape)}")
    _check_finite(L, "L")
    total = t.sum(dim=-1)
    if bool((total == 0).any()):
        raise ValueError("a group has no response tokens (all lengths 0): Eq. 7 divides by 0")
    f = weighting.weights_of_checked(t, lam)
    return (f * L).sum(dim=-1) / total


def within_group_cov(x, y) -> torch.Tensor:
    """Sample covariance (ddof 1, the σ convention above) of ``x`` and ``y`` within each group of
    ``[groups, G]``; shape ``[groups]``. With x = lengths and y = advantages (or L_i) this is the
    quantity whose sign ∂J/∂λ takes at λ = 0 (to first order in r); the metrics log its mean."""
    x = _as_float(x, "x")
    y = _as_float(y, "y", x.dtype)
    if x.shape != y.shape or x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"x and y must both be [groups, G >= 2], got {tuple(x.shape)}, {tuple(y.shape)}")
    xc = x - x.mean(dim=-1, keepdim=True)
    yc = y - y.mean(dim=-1, keepdim=True)
    return (xc * yc).sum(dim=-1) / (x.shape[1] - 1)


def eq20_lambda_grad(lengths, L, lam, r: float = PAPER_R, sigma: str = "sample") -> torch.Tensor:
    """Closed-form ∂J/∂λ of Eq. 20 per group (shape ``[groups]``):

        G/Σ|o| · Σ_i L_i s_i (h_i^λ ln h_i - Σ_j s_j h_j^λ ln h_j),   s = softmax(h^λ).
    """
    t = check_lengths(lengths)
    L = _as_float(L, "L", t.dtype)
    if L.shape != t.shape:
        raise ValueError(f"L has shape {tuple(L.shape)}, lengths {tuple(t.shape)}")
    _check_finite(L, "L")
    h = _h(t, r, sigma)
    g = eq15_g(h, float(lam))
    s = torch.softmax(g, dim=-1)  # (Eq. 20 is a check, not a hot path: the plain form)
    dg = g * torch.log(h)  # Eq. 17
    inner = dg - (s * dg).sum(dim=-1, keepdim=True)  # Eq. 18 / s_i
    G = t.shape[-1]
    return G / t.sum(dim=-1) * (L * s * inner).sum(dim=-1)
