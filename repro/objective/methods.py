"""The methods: one object per token preference f(o_i) (Eq. 8-10, 16 and ΔL), registered once.
Part of ``repro.objective``; see its docstring."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch

from repro.objective.weights import PAPER_R, SIGMA_CONVENTIONS, _lambda_weights, check_lengths, max_abs_z


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
    if not params.keys() <= mine:  # (the registry is only read where some keyword is not the method's)
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
