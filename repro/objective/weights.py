"""Eq. 11-16: the λ-GRPO weights f = G·softmax(h^λ), h = 1 + r·z(length), and the checks of
their inputs (lengths per group). Part of ``repro.objective``; see its docstring."""
from __future__ import annotations

import math

import torch

SIGMA_CONVENTIONS = ("sample", "population")
PAPER_R = 1 / 9  # the paper's reducer r (Sec. 3); the one place the package writes 1/9


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _as_float(x, name: str, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not torch.is_floating_point(t):
        t = t.to(dtype or torch.get_default_dtype())
    elif dtype is not None:
        t = t.to(dtype)
    return t


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}); refusing to compute")


def check_lengths(lengths) -> torch.Tensor:
    """Validate a ``[groups, G]`` tensor of response lengths and return it as float."""
    t = _lengths_shaped(_as_float(lengths, "lengths"))
    if not bool(_lengths_valid(t)):
        _check_length_values(t)
    return t


def _lengths_shaped(t: torch.Tensor) -> torch.Tensor:
    """The part of ``check_lengths`` that reads no data: the shape [groups, G >= 2]."""
    if t.dim() != 2:
        raise ValueError(f"lengths must have shape [groups, G], got {tuple(t.shape)}")
    if t.shape[1] < 2:
        raise ValueError(f"group size G = {t.shape[1]}: group-relative weights need G >= 2")
    return t


def _lengths_valid(t: torch.Tensor) -> torch.Tensor:
    """True (a 0-dim tensor, not yet read back) iff every length is finite and >= 0."""
    return _length_ok(t).all()


def _length_ok(t: torch.Tensor) -> torch.Tensor:
    return (t >= 0) & (t < math.inf)  # False for NaN, ±inf and < 0


def _check_length_values(t: torch.Tensor) -> None:
    """Raise, naming what is wrong, if some length is NaN, ±inf or < 0."""
    if not bool(_lengths_valid(t)):
        _check_finite(t, "lengths")
        raise ValueError("lengths must be >= 0")


# ----------------------------------------------------------------------------------------------
# Eq. 11-16: the λ-GRPO weights
# ----------------------------------------------------------------------------------------------
def eq13_standardize(lengths, sigma: str = "sample") -> torch.Tensor:
    """z_i = (|o_i| - μ)/σ within each group (Eq. 11-13); z = 0 where σ = 0.

    Lengths are token counts (whole numbers), so μ of equal lengths is exact and σ = 0 exactly
    when all G lengths are equal; then every deviation is 0 and z = 0 / 1 = 0.
    """
    return _standardize(check_lengths(lengths), sigma)


def _standardize(t: torch.Tensor, sigma: str) -> torch.Tensor:
    if sigma not in SIGMA_CONVENTIONS:
        raise ValueError(f"sigma must be one of {SIGMA_CONVENTIONS}, got {sigma!r}")
    G = t.shape[-1]
    # Written out rather than torch.std_mean (on CPU ~6x slower over a short last dim, G = 8),
    # and 1/σ by rsqrt: see "The O(samples) tensors" below on why not sqrt.
    dev = t - t.mean(dim=-1, keepdim=True)
    var = (dev * dev).sum(dim=-1, keepdim=True) / (G - 1 if sigma == "sample" else G)
    return dev * torch.where(var > 0, torch.rsqrt(var), 0.0)  # z = 0 where σ = 0


def max_abs_z(G: int, sigma: str = "sample") -> float:
    """The largest |z| any G lengths can give (Samuelson's inequality)."""
    return (G - 1) / math.sqrt(G) if sigma == "sample" else math.sqrt(G - 1)


def eq14_h(lengths, r: float, sigma: str = "sample") -> torch.Tensor:
    """h_i = 1 + r·z_i (Eq. 14). Raises if any h ≤ 0, where h^λ is undefined."""
    return _h(check_lengths(lengths), r, sigma)


def _h(t: torch.Tensor, r: float, sigma: str) -> torch.Tensor:
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
        raise ValueError(f"r must be a finite number > 0, got {r!r}")
    z = _standardize(t, sigma)
    h = 1.0 + r * z
    G = z.shape[-1]
    # r·max|z| < 1 guarantees h > 0 whatever the lengths; only otherwise look at the data
    if r * max_abs_z(G, sigma) >= 1 and not bool((h > 0).all()):
        _check_length_values(t)  # bad lengths (policy_loss checks them later) are named as such
        zmin = float(z.min())
        raise ValueError(
            f"h = 1 + r*z <= 0 (r = {r}, G = {G}, min z = {zmin:.4f}): h^lambda is undefined. "
            f"Use r < 1/max|z|; with {sigma} sigma max|z| <= {max_abs_z(G, sigma):.3f}"
        )
    return h


def eq15_g(h: torch.Tensor, lam) -> torch.Tensor:
    """g_i = h_i^λ (Eq. 15); λ may be a tensor with a gradient (∂g/∂λ = h^λ·ln h, Eq. 17)."""
    if isinstance(lam, torch.Tensor):
        return torch.pow(h, lam.to(h.dtype))
    return torch.pow(h, float(lam))


def eq16_lambda_weights(lengths, lam=0.0, r: float = PAPER_R, sigma: str = "sample") -> torch.Tensor:
    """f = G·softmax(h^λ) over each group (Eq. 16). Sums to G per group; λ = 0 gives f = 1."""
    return _lambda_weights(check_lengths(lengths), lam, r, sigma)


def _lambda_weights(t: torch.Tensor, lam, r: float, sigma: str) -> torch.Tensor:
    return _Eq16.apply(_h(t, r, sigma), lam)


class _Eq16(torch.autograd.Function):
    """f = G·softmax(g), g = h^λ (Eq. 15-16), over the last dim; λ's gradient in closed form.

    Forward, per group: g_i = h_i^λ, s_i = e^{g_i} / Σ_j e^{g_j}, f_i = G·s_i. Where λ needs a
    gradient it also keeps Eq. 17-18,

        ∂f_i/∂λ = f_i·(g'_i - Σ_j s_j g'_j),   g'_i = ∂g_i/∂λ = h_i^λ ln h_i,

    so the backward pass is one product and one sum (Eq. 20 is this summed against L_i; tests
    check it against autograd through torch.pow/softmax and against ``eq20_lambda_grad``).
    λ may broadcast against h (a grid of λ values); its gradient is summed back to its shape.

    The O(samples) tensors: this is the only work λ-GRPO adds to DAPO's, on [samples, G]
    values, so it is written with ops that stay on the calling thread. On CPU with >= 2 torch
    threads, torch.exp, log and sqrt open an OpenMP parallel region from ~512 values (MKL's
    vector math) and softmax (forward and backward) at any size; on a machine whose cores are
    busy each region can wait a scheduler slice for its second thread. torch.pow, rsqrt and
    xlogy stay on the thread (their scalar kernels cost ~15 µs more per 4,096 values on one
    thread). Hence e^x as pow(e, x), and xlogy for h^λ·ln h.
    """

    @staticmethod
    def forward(ctx, h, lam):
        g = eq15_g(h, lam)  # Eq. 15
        e = torch.pow(math.e, g - g.amax(dim=-1, keepdim=True))  # e^{g_i - max_j g_j} <= 1
        s = e / e.sum(dim=-1, keepdim=True)  # softmax over the group
        f = h.shape[-1] * s  # Eq. 16
        ctx.lam_shape = None
        if ctx.needs_input_grad[1]:
            dg = torch.xlogy(g, h)  # Eq. 17: h^λ ln h
            ctx.save_for_backward(f * (dg - (s * dg).sum(dim=-1, keepdim=True)))  # Eq. 18
            ctx.lam_shape = lam.shape
        return f

    @staticmethod
    def backward(ctx, grad_f):
        if ctx.lam_shape is None:
            return None, None
        (df_dlam,) = ctx.saved_tensors
        return None, (grad_f * df_dlam).sum_to_size(ctx.lam_shape)

