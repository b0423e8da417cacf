"""The training loss: Eq. 7 as a sum of per-sample terms (exact under any batching), and λ, a
learnable scalar with its own SGD. Part of ``repro.objective``; see its docstring."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from repro.objective.methods import as_weighting
from repro.objective.surrogate import surrogate_sums
from repro.objective.weights import (_as_float, _check_finite, _check_length_values, _length_ok,
                                     _lengths_shaped, check_lengths)

SCOPES = ("group", "batch")


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
    # L_i = Σ_t min(ρA, clip(ρ)A) over the response tokens; NaN in padding propagates
    L, clipped = surrogate_sums(log_ratio, adv, maskf, clip_low=clip_low, clip_high=clip_high,
                                dual_clip=dual_clip)
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
