"""The paper's math, in one place: token-preference weights, the unified objective, λ.

Everything in the package that computes a weight, an advantage or a policy loss imports it
from here. Pure PyTorch; no training framework is imported.

Paper equations and where they live
-----------------------------------
Eq. 3   ``eq3_group_advantages``     group-normalised advantage (sample std; or none, Dr.GRPO)
Eq. 4-6 the per-method objectives; they are Eq. 7 with the weights below (tests check this)
Eq. 7   ``eq7_unified_objective``    J per group from per-response surrogate sums L_i
        ``policy_loss``              the same objective as a *sum of per-sample terms*, exact
                                     under any split of a step into micro-batches / ranks
Eq. 8   ``grpo_weights``             f = μ/|o_i|
Eq. 9   ``dapo_weights``             f = 1
Eq. 10  ``dr_grpo_weights``          f = μ
Eq. 11-14 ``eq13_standardize``, ``eq14_h``   z = (|o_i|-μ)/σ,  h = 1 + r·z
Eq. 15  ``eq15_g``                   g = h^λ
Eq. 16  ``eq16_lambda_weights``      f = G·softmax(g)
Eq. 20  ``eq20_lambda_grad``         closed-form ∂J/∂λ per group
        ``METHODS``, ``Method``      each method as one object: name, label, its parameters (a
        ``Weighting``                small dataclass), learnable or not, f; a method with its parameters
        ``LearnableLambda``          λ (init 0) with its own SGD (lr 0.1, no weight decay) and a
                                     data-parallel gradient average at the accumulation boundary

Conventions (pinned; see README "Choices")
------------------------------------------
* σ of the lengths (Eq. 12) is the *sample* standard deviation (Bessel, ddof = 1), the same
  convention as the advantage of Eq. 3 and as ``torch.std``.  ``sigma="population"`` is
  available for comparison with implementations that use ddof = 0.
* σ = 0 (all G lengths equal, e.g. every response hit the length cap) gives z = 0, so h = 1,
  g = 1 and f = 1 for every λ: the group is weighted like DAPO.
* h ≤ 0 makes h^λ undefined. With sample σ, |z| ≤ (G-1)/√G (Samuelson), so r = 1/9 is safe for
  G ≤ 82. Where some h ≤ 0 a ``ValueError`` names r, G and the offending z; nothing is clamped.
* Groups need G ≥ 2 (a group-relative weight or advantage of one response is meaningless):
  G = 1 is a ``ValueError``.
* Lengths must be finite and ≥ 0. A zero-length response is allowed where its weight is defined
  (dapo, dr_grpo, lambda); ``grpo`` (μ/0) and ``delta_l`` (0^-α) reject it, and a group whose
  lengths are all zero has no tokens to normalise by and is rejected by the objective.
* Sign: the objective J is maximised; ``policy_loss`` returns -J (plus KL and entropy terms)
  for a minimiser. λ is trained by SGD on that same loss, i.e. by gradient ascent on J.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch

SIGMA_CONVENTIONS = ("sample", "population")
SCOPES = ("group", "batch")
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


# ----------------------------------------------------------------------------------------------
# the methods: one object per token preference f(o_i), registered once
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoParams:
    """The parameters of a method that has none (GRPO, DAPO, Dr.GRPO)."""


@dataclass(frozen=True)
class LambdaParams:
    """λ-GRPO's fixed parameters (λ itself is learned: ``LearnableLambda``)."""
    r: float = PAPER_R  # the reducer of Eq. 14
    sigma: str = "sample"  # σ convention of Eq. 12 (see "Conventions")

    def __post_init__(self):
        if isinstance(self.r, bool) or not (isinstance(self.r, (int, float)) and math.isfinite(self.r)
                                            and self.r > 0):
            raise ValueError(f"r must be a finite number > 0, got {self.r!r}")
        object.__setattr__(self, "r", float(self.r))
        if self.sigma not in SIGMA_CONVENTIONS:
            raise ValueError(f"sigma must be one of {SIGMA_CONVENTIONS}, got {self.sigma!r}")

    def check_group_size(self, G: int) -> None:
        """Refuse an (r, G) for which some lengths make h = 1 + r·z ≤ 0 (Samuelson bound)."""
        if self.r * max_abs_z(G, self.sigma) >= 1:
            raise ValueError(f"r = {self.r} with G = {G} can make h = 1 + r*z <= 0 (|z| can reach "
                             f"{max_abs_z(G, self.sigma):.3f} with {self.sigma} sigma); use r < "
                             f"{1 / max_abs_z(G, self.sigma):.4f}")


@dataclass(frozen=True)
class DeltaLParams:
    alpha: float = 1.0  # the exponent of f ∝ |o_i|^-α

    def __post_init__(self):
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be finite, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))


WeightFn = Callable[[torch.Tensor, object, object], torch.Tensor]  # (lengths [groups, G], params, λ) -> f


@dataclass(frozen=True)
class Method:
    """A token-preference method: f(o_i) as a function of its group's lengths.

    ``fn(lengths, params, lam)`` gets float lengths ``[groups, G]`` whose shape is checked
    (their values are checked by the caller, once: ``weights`` before, ``policy_loss`` with its
    other inputs after), an instance of ``params`` and λ (a float, or a tensor with a gradient;
    only ``learnable`` methods use it) and returns f of the same shape. ``learnable``: the
    trainer keeps a ``LearnableLambda`` for it and steps it (today only λ-GRPO)."""
    name: str
    label: str  # how tables and figures name it
    fn: WeightFn
    params: type = NoParams  # a frozen dataclass; its fields are the method's config keys
    learnable: bool = False
    color: str | None = None  # matplotlib colour of its curves

    def make_params(self, **values):
        """``params(**values)``; a key the method does not take is a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(self.params)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"method {self.name!r} takes parameters {sorted(known) or 'none'}, got {unknown}")
        return self.params(**values)

    def weights(self, lengths, params=None, lam=0.0) -> torch.Tensor:
        p = self.params() if params is None else params
        if not isinstance(p, self.params):
            raise TypeError(f"method {self.name!r} needs {self.params.__name__}, got {type(p).__name__}")
        return self.fn(check_lengths(lengths), p, lam if self.learnable else 0.0)

    def weights_of_checked(self, t: torch.Tensor, params, lam=0.0) -> torch.Tensor:
        """``weights`` for lengths already checked (or checked by the caller afterwards)."""
        return self.fn(t, params, lam if self.learnable else 0.0)


METHODS: dict[str, Method] = {}


def register_method(name: str, label: str, *, params: type = NoParams, learnable: bool = False,
                    color: str | None = None):
    """Decorator: register ``fn(lengths, params, lam) -> f`` as method ``name`` (once).

    Adding a weighting method is this block and a test, nothing else: both trainers, the
    configs (``weighting: {method: NAME, <params fields>: ...}``) and the objective find it here::

        @dataclass(frozen=True)
        class PowerParams:
            beta: float = 0.5

        @register_method("power", "f ∝ |o|^β", params=PowerParams)
        def power_weights(lengths, p: PowerParams, lam=0.0):
            w = lengths.pow(p.beta)
            return lengths.shape[-1] * w / w.sum(dim=-1, keepdim=True)

    (``tests/test_methods.py`` registers such a method and trains two steps with it.)
    """
    def deco(fn: WeightFn) -> WeightFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        if not (dataclasses.is_dataclass(params) and isinstance(params, type)):
            raise TypeError(f"params of {name!r} must be a dataclass type, got {params!r}")
        METHODS[name] = Method(name=name, label=label, fn=fn, params=params, learnable=learnable, color=color)
        return fn

    return deco


def get_method(method) -> Method:
    """A ``Method`` from its name (or itself)."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method]


@dataclass(frozen=True)
class Weighting:
    """A method with its parameters: everything the objective needs to weight a group, but λ.

    Build one with ``Weighting.of("lambda", r=0.2)`` (strict: only the method's parameters) or
    from a config's ``weighting`` block (``repro.trainers.contract.WeightingConfig``)."""
    method: Method
    params: object = None

    def __post_init__(self):
        if self.params is None:
            object.__setattr__(self, "params", self.method.params())
        if not isinstance(self.params, self.method.params):
            raise TypeError(f"method {self.method.name!r} needs {self.method.params.__name__}, "
                            f"got {type(self.params).__name__}")

    @classmethod
    def of(cls, method, **params) -> "Weighting":
        m = get_method(method)
        return cls(m, m.make_params(**params))

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def learnable(self) -> bool:
        return self.method.learnable

    def weights(self, lengths, lam=0.0) -> torch.Tensor:
        """f for ``lengths [groups, G]``."""
        return self.method.weights(lengths, self.params, lam)

    def weights_of_checked(self, t: torch.Tensor, lam=0.0) -> torch.Tensor:
        return self.method.weights_of_checked(t, self.params, lam)

    def check_group_size(self, G: int) -> None:
        """Raise where this weighting is undefined for some groups of size G (λ-GRPO's r)."""
        if G < 2:
            raise ValueError(f"group size G = {G}: group-relative weights need G >= 2")
        check = getattr(self.params, "check_group_size", None)
        if check is not None:
            check(G)


def as_weighting(method, **params) -> Weighting:
    """The ``Weighting`` that the functions below take as ``method``: a ``Weighting`` as is, or
    a method (name or ``Method``) with keyword parameters.

    Keywords that *another* registered method takes are ignored here (so one call can draw
    every method with the same ``r`` and ``alpha``, as the explainer figures do); a keyword no
    registered method takes is a ``ValueError``. ``Weighting.of`` is the strict form."""
    if isinstance(method, Weighting):
        if params:
            raise ValueError(f"parameters {sorted(params)} given with a Weighting that has its own")
        return method
    m = get_method(method)
    mine = {f.name for f in dataclasses.fields(m.params)}
    anyone = set().union(*({f.name for f in dataclasses.fields(x.params)} for x in METHODS.values()))
    unknown = sorted(set(params) - anyone - mine)
    if unknown:
        raise ValueError(f"unknown weighting parameters {unknown}; the registered methods take "
                         f"{sorted(anyone)}")
    return Weighting(m, m.params(**{k: v for k, v in params.items() if k in mine}))


@register_method("grpo", "GRPO", color="tab:blue")
def grpo_weights(t, p=None, lam=0.0) -> torch.Tensor:
    """f = μ/|o_i| (Eq. 8): turns Eq. 7 into GRPO's per-response token mean (Eq. 4)."""
    if bool((t == 0).any()):
        raise ValueError("grpo weight mu/|o_i| is undefined for a zero-length response")
    return t.mean(dim=-1, keepdim=True) / t


@register_method("dapo", "DAPO", color="tab:orange")
def dapo_weights(t, p=None, lam=0.0) -> torch.Tensor:
    """f = 1 (Eq. 9): one token mean over the group (Eq. 5)."""
    return torch.ones_like(t)


@register_method("dr_grpo", "Dr.GRPO", color="tab:purple")
def dr_grpo_weights(t, p=None, lam=0.0) -> torch.Tensor:
    """f = μ (Eq. 10): Eq. 7 becomes (1/G)·Σ_i Σ_t (Eq. 6)."""
    return t.mean(dim=-1, keepdim=True).expand_as(t).clone()


@register_method("lambda", "λ-GRPO", params=LambdaParams, learnable=True, color="tab:green")
def lambda_weights(t, p: LambdaParams = LambdaParams(), lam=0.0) -> torch.Tensor:
    """f = G·softmax(h^λ) (Eq. 11-16), λ learnable."""
    return _lambda_weights(t, lam, p.r, p.sigma)


@register_method("delta_l", "ΔL", params=DeltaLParams, color="tab:brown")
def delta_l_weights(t, p: DeltaLParams = DeltaLParams(), lam=0.0) -> torch.Tensor:
    """ΔL normalisation as an extra baseline: f ∝ |o_i|^-α, rescaled to sum to G per group.
    α = 0 is DAPO; α = 1 up-weights short responses like GRPO but keeps Σf = G."""
    alpha = p.alpha
    if alpha != 0 and bool((t == 0).any()):
        raise ValueError("delta_l weight |o_i|^-alpha is undefined for a zero-length response")
    w = t.pow(-alpha)
    return t.shape[-1] * w / w.sum(dim=-1, keepdim=True)


def token_weights(method, lengths, *, lam=0.0, **params) -> torch.Tensor:
    """Per-response weights f(o_i) for ``lengths`` of shape ``[groups, G]``; same shape out.
    ``method``: a ``Weighting``, or a method name with its parameters (``as_weighting``)."""
    return as_weighting(method, **params).weights(lengths, lam)


# ----------------------------------------------------------------------------------------------
# Eq. 3: the group-normalised advantage
# ----------------------------------------------------------------------------------------------
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
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped_val = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    surr = torch.minimum(unclipped, clipped_val)
    if dual_clip is not None:
        if not dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        surr = torch.where(adv < 0, torch.maximum(surr, dual_clip * adv), surr)
    clipped = surr != unclipped
    return surr, clipped


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


# ----------------------------------------------------------------------------------------------
# the training loss: Eq. 7 as a sum of per-sample terms (exact under any batching)
# ----------------------------------------------------------------------------------------------
def sample_weights(method, group_lengths, index, *, lam=0.0, **params) -> torch.Tensor:
    """f for each sample from the lengths of *its own* group (``method`` as in ``token_weights``).

    ``group_lengths [N, G]`` holds, for each of N samples, the lengths of all G responses of its
    group; ``index [N]`` is the sample's position in that row. Because each sample carries its
    whole group, the weight is exact however the group's members are spread over micro-batches
    and ranks.
    """
    gl = check_lengths(group_lengths)
    idx = torch.as_tensor(index, dtype=torch.long, device=gl.device)
    if idx.shape != (gl.shape[0],):
        raise ValueError(f"index must have shape [{gl.shape[0]}], got {tuple(idx.shape)}")
    _check_index(idx, gl.shape[1])
    return _own(as_weighting(method, **params).weights_of_checked(gl, lam), idx)


def _own(per_member: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``per_member [N, G]`` at each sample's own position ``idx [N]``: shape [N]."""
    return per_member.gather(1, idx[:, None]).squeeze(1)


def _check_index(idx: torch.Tensor, G: int) -> None:
    if bool(((idx < 0) | (idx >= G)).any()):
        raise ValueError(f"index out of range [0, {G})")


def step_denominator(scope: str, group_lengths_of_step) -> float:
    """The constant that ``policy_loss`` divides by, from all groups of one optimizer step.

    ``group``: the number of groups (each group is already divided by its own Σ|o_i|, Eq. 7,
    and the step averages groups). ``batch``: the total number of response tokens in the step
    (one token mean over the whole step, as OpenRLHF >= 0.10.4 and veRL's new engine do).
    ``group_lengths_of_step`` is ``[groups, G]``, one row per group (not per sample).
    """
    gl = check_lengths(group_lengths_of_step)
    if scope == "group":
        return float(gl.shape[0])
    if scope == "batch":
        return float(gl.sum())
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


@dataclass
class LossOutput:
    loss: torch.Tensor  # the micro-batch's contribution to -J (+ β·KL - c·H); sum over micro-batches
    weights: torch.Tensor  # f per sample [N] (detached)
    clip_fraction: torch.Tensor  # share of this micro-batch's tokens whose surrogate was clipped
    kl: torch.Tensor | None  # mean per-token KL (k3) over the micro-batch, if ref_logp was given
    entropy: torch.Tensor | None  # mean per-token entropy over the micro-batch, if given
    ppo_kl: torch.Tensor | None = None  # mean log(π_old/π) over the micro-batch's tokens
    surrogate_sums: torch.Tensor | None = None  # L_i = Σ_t min(ρA, clip(ρ)A) per sample [N] (detached)


def policy_loss(logp, old_logp, advantages, mask, group_lengths, index, *, method=None,
                denominator: float, scope: str = "group", lam=0.0, weights=None,
                clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = None,
                ref_logp=None, kl_coef: float = 0.0, entropy=None, entropy_coef: float = 0.0,
                **params) -> LossOutput:
    """The unified objective (Eq. 7) for one micro-batch, as a sum of per-sample terms.

    The token preference f comes from ``method`` and λ (``lam``): a ``Weighting``, or a method
    name with its parameters as keywords (``as_weighting``: ``method="lambda", r=0.2``); or,
    instead, ``weights``: f per sample ``[N]`` computed by the caller (``method`` then None).

    Shapes: ``logp, old_logp, mask [N, T]``; ``advantages`` ``[N]`` or ``[N, T]``;
    ``group_lengths [N, G]``, ``index [N]`` (see ``sample_weights``). ``denominator`` comes from
    ``step_denominator(scope, ...)`` over the *whole* optimizer step, so that summing the losses
    of the step's micro-batches (any sizes, any order) gives exactly the step's loss:

        group scope:  -1/n_groups · Σ_samples f_i·L_i / Σ_{j in group(i)} |o_j|
        batch scope:  -1/n_tokens · Σ_samples f_i·L_i

    The optional KL (k3 estimator, ``ref_logp``) and entropy (``entropy [N, T]``) terms use the
    same normalisation but are *not* weighted by f, as in the paper's objective.

    Data parallel: with the step's samples spread over W ranks that *average* gradients (as
    DeepSpeed does), multiply each rank's loss by W; ``LearnableLambda.step`` averages λ's
    gradient the same way, so both equal the single-process gradient.

    Checks: shapes and options first, before any work; every check of the *values* (lengths
    finite and >= 0, index in range, each sample's own length = its mask's token count, no
    empty group, finite inputs through the loss) runs once, on small tensors, and they are read
    back together in one sync at the end. If one fails, ``_raise_bad_input`` names the first bad
    input with a ``ValueError`` (for a non-finite tensor: whether the bad value sits in a
    response token or in padding). Padding must hold finite numbers (any value).
    """
    # -- shapes and options (reads no data) --
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not (math.isfinite(denominator) and denominator > 0):
        raise ValueError(f"denominator must be finite and > 0, got {denominator}")
    logp = _as_float(logp, "logp")
    if logp.dim() != 2:
        raise ValueError(f"logp must be [N, T], got {tuple(logp.shape)}")
    N, T = logp.shape
    old_logp = _as_float(old_logp, "old_logp", logp.dtype)
    mask = torch.as_tensor(mask)
    for name, t in (("old_logp", old_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logp.shape)}")
    if mask.dtype == torch.bool:
        on = mask
    else:  # (a token-level pass, so only for masks that are not bool already)
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must hold only 0 and 1")
        on = mask != 0
    maskf = on.to(logp.dtype)
    adv = _as_float(advantages, "advantages", logp.dtype)
    if adv.shape == (N,):
        adv = adv[:, None]  # one advantage per response, broadcast over its tokens
    elif adv.shape != (N, T):
        raise ValueError(f"advantages must be [N] or [N, T], got {tuple(adv.shape)}")
    gl = _lengths_shaped(_as_float(group_lengths, "group_lengths", logp.dtype))
    if gl.shape[0] != N:
        raise ValueError(f"group_lengths has shape {tuple(gl.shape)}: expected {N} rows, one per sample")
    G = gl.shape[1]
    idx = torch.as_tensor(index, dtype=torch.long, device=gl.device)
    if idx.shape != (N,):
        raise ValueError(f"index must have shape [{N}], got {tuple(idx.shape)}")
    if (weights is None) == (method is None):
        raise ValueError("policy_loss needs exactly one of method (with its parameters) and weights")
    own_idx = idx.clamp(0, G - 1)  # safe to gather with; an index out of range is reported below
    own = own_idx[:, None]  # each sample's own column of group_lengths

    # -- the token preference f_i (Eq. 8-16), from each sample's own group --
    if weights is None:
        f = as_weighting(method, **params).weights_of_checked(gl, lam).gather(1, own).squeeze(1)
    else:
        if params:
            raise ValueError(f"weighting parameters {sorted(params)} given with precomputed weights")
        f = _as_float(weights, "weights", logp.dtype)
        if f.shape != (N,):
            raise ValueError(f"weights and index must have shape [{N}], got {tuple(f.shape)}, {tuple(idx.shape)}")

    # -- Eq. 7 as a sum of per-sample terms: -Σ_i f_i·L_i / (its group's Σ|o_j| · denominator) --
    n_tok_row = maskf.sum(dim=1)
    group_tokens = gl.sum(dim=1)
    per_sample_norm = group_tokens * denominator if scope == "group" else denominator
    log_ratio = logp - old_logp
    surr, clipped = surrogate_from_log_ratio(log_ratio, adv, clip_low=clip_low,
                                             clip_high=clip_high, dual_clip=dual_clip)
    L = (surr * maskf).sum(dim=1)  # L_i = Σ_t min(ρA, clip(ρ)A); NaN in padding propagates
    loss = -(f * L / per_sample_norm).sum()

    n_tok = n_tok_row.sum().clamp_min(1)
    kl_mean = ent_mean = None
    extra = {}
    if ref_logp is not None:
        ref = _as_float(ref_logp, "ref_logp", logp.dtype)
        extra["ref_logp"] = ref
        d = ref - logp
        kl_row = ((torch.exp(d) - d - 1.0) * maskf).sum(dim=1)
        loss = loss + kl_coef * (kl_row / per_sample_norm).sum()
        kl_mean = kl_row.sum().detach() / n_tok
    if entropy is not None:
        ent = _as_float(entropy, "entropy", logp.dtype)
        extra["entropy"] = ent
        ent_row = (ent * maskf).sum(dim=1)
        if entropy_coef:
            loss = loss - entropy_coef * (ent_row / per_sample_norm).sum()
        ent_mean = ent_row.sum().detach() / n_tok
    # mean of log(π_old/π) over response tokens (a KL estimate PPO logs); it is also the cheap
    # check that no log-prob is ±inf where a finite loss could hide it (ratio exactly 0)
    ppo_kl = -(log_ratio.detach() * maskf).sum() / n_tok
    clip_frac = (clipped & on).sum().to(logp.dtype) / n_tok

    # -- every check of the values, read back in one sync --
    ok = [_length_ok(gl).flatten(), own_idx == idx, gl.gather(1, own).squeeze(1) == n_tok_row,
          torch.stack([loss.detach(), ppo_kl]).abs() < math.inf]  # NaN/inf in any input shows here
    if scope == "group":
        ok.append(group_tokens > 0)
    if not bool(torch.cat(ok).all()):
        _raise_bad_input(gl, idx, n_tok_row, scope, on, f, "weights" if weights is not None else
                         "the token-preference weights f", logp=logp, old_logp=old_logp,
                         advantages=adv, **extra)
    return LossOutput(loss=loss, weights=f.detach(), clip_fraction=clip_frac.detach(), kl=kl_mean,
                      entropy=ent_mean, ppo_kl=ppo_kl, surrogate_sums=L.detach())


def _raise_bad_input(gl, idx, n_tok_row, scope, on, f, f_name, **tensors) -> None:
    """The checks of ``policy_loss``'s values one by one, in order: raise for the first that
    fails (only called when their combined result said that one does)."""
    _check_length_values(gl)
    _check_index(idx, gl.shape[1])
    if not torch.equal(_own(gl, idx), n_tok_row):
        raise ValueError("mask lengths disagree with group_lengths[i, index[i]]: a sample's own "
                         "length must equal the number of its response tokens")
    if scope == "group" and bool((gl.sum(dim=1) == 0).any()):
        raise ValueError("a group has no response tokens (all lengths 0): Eq. 7 divides by 0")
    _check_finite(f.detach(), f_name)
    _raise_nonfinite(on, **tensors)


def _raise_nonfinite(on: torch.Tensor, **tensors) -> None:
    """Name the input that made the loss non-finite (only called on the error path)."""
    for name, t in tensors.items():
        t = t.detach()
        bad = ~torch.isfinite(t)
        if bool((bad & on).any()):
            raise ValueError(f"{name} contains NaN or inf on response tokens "
                             f"(first at {(bad & on).nonzero()[0].tolist()})")
        if bool(bad.any()):
            raise ValueError(f"{name} contains NaN or inf in padding (first at "
                             f"{bad.nonzero()[0].tolist()}); padding must hold finite values")
    raise ValueError("the loss is not finite although every input is (ratio overflow: "
                     "logp - old_logp too large?)")


# ----------------------------------------------------------------------------------------------
# λ: a learnable scalar with its own SGD
# ----------------------------------------------------------------------------------------------
class LearnableLambda:
    """λ (init 0) and its own ``torch.optim.SGD`` (lr 0.1, no weight decay), as in Sec. 2.3.

    Kept apart from the policy's optimizer: no Adam state, no LR schedule, no grad clipping
    touches it. Call ``step()`` once per optimizer step, at the gradient-accumulation boundary:
    it averages λ's gradient over the data-parallel group (when torch.distributed is
    initialised and ``group`` spans more than one rank), steps, and zeroes the gradient.
    """

    def __init__(self, init: float = 0.0, lr: float = 0.1, weight_decay: float = 0.0,
                 dtype=torch.float32, device="cpu"):
        self.param = torch.nn.Parameter(torch.tensor(float(init), dtype=dtype, device=device))
        self.optimizer = torch.optim.SGD([self.param], lr=lr, weight_decay=weight_decay)
        self.last_grad = 0.0

    @property
    def value(self) -> float:
        return float(self.param.detach())

    def all_reduce_grad(self, group=None) -> None:
        import torch.distributed as dist

        if self.param.grad is None:
            self.param.grad = torch.zeros_like(self.param)
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size(group)
            if world > 1:
                dist.all_reduce(self.param.grad, op=dist.ReduceOp.SUM, group=group)
                self.param.grad.div_(world)

    def step(self, group=None) -> float:
        """Reduce, step, zero. Returns the (reduced) gradient that was applied."""
        self.all_reduce_grad(group)
        self.last_grad = float(self.param.grad)
        _check_finite(self.param.grad.detach(), "lambda gradient")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.last_grad

    def state_dict(self) -> dict:
        return {"lambda": self.param.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.param.copy_(torch.as_tensor(state["lambda"], dtype=self.param.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
