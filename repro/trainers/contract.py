"""The trainer contract: what every training engine hands the shared layer. Torch only.

An engine (the reference trainer, the OpenRLHF seams, a TRL or veRL seam) generates, scores and
back-propagates with its own machinery; for the paper's part it uses exactly these pieces:

``WeightingConfig``   the ``weighting:`` block of every config: ``method`` plus that method's
                      parameters (``repro.objective.METHODS[method].params``) and ``lambda:
                      {init, lr}`` (λ's own SGD; used only by learnable methods)
``GroupInfo``         per sample: the lengths of its whole group ``[N, G]`` and its position in
                      it ``[N]`` (``from_groups`` for group-major batches, ``from_positions`` for
                      shuffled rows with their rollout positions)
``WeightingState``    the method, λ and its SGD, the optimizer-step count and the f statistics
                      of one run: ``weights(info)`` f per sample, ``loss(...)`` the weighted
                      ``repro.objective.policy_loss``, ``step()`` at every optimizer step (the
                      gradient-accumulation boundary), ``state_dict()`` the ONE λ checkpoint format
``FStats``            the ONE set of f statistics (mean, *sample* std, min, max), mergeable over
                      micro-batches and data-parallel ranks
``rollout_stats``     reward mean, accuracy (share of rewards ``== repro.reward.CORRECT``),
                      lengths, truncation, len-advantage covariance of a rollout batch
``metrics_record``    the ONE builder of a ``repro.runs`` metrics line

A trainer, in five lines (``repro.trainers.reference`` is the full version)::

    ws = WeightingState(cfg.weighting)                        # λ from cfg.weighting.lambda_
    info = GroupInfo.from_groups(lengths)                    # lengths [groups, G] of the rollout
    out = ws.loss(logp, old_logp, adv, mask, info, denominator=d, scope="group")
    out.loss.backward(); policy_opt.step(); lam_grad = ws.step()   # once per optimizer step
    run.log(metrics_record(step=ws.optimizer_steps, rollout=k, method=ws.method, lam=ws.value,
                           lam_grad=lam_grad, f=ws.pop_fstats(), stats=rollout_stats(...),
                           time_s=t, clip_ratio=out.clip_fraction, ...))

A new engine is one small seam package over this (``repro/trainers/openrlhf/`` is the
example): it finds each sample's group (``GroupInfo``), either computes its loss with
``WeightingState.loss`` or multiplies its stock loss's advantages by ``WeightingState.weights``
(exact for f > 0, see ``openrlhf.weighting``), calls ``WeightingState.step`` at its
gradient-accumulation boundary, saves ``state_dict()`` in its checkpoints and writes
``metrics_record`` lines through ``repro.runs``. Its config nests the same ``weighting:`` block.

Conventions fixed here (both engines used to differ): f_std is the *sample* std (ddof 1, like
``torch.std`` and the σ of Eq. 12; 0 for a single sample); accuracy is ``reward == CORRECT``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from repro import objective as obj
from repro.reward import CORRECT

LAMBDA_STATE_FORMAT = 1  # version of WeightingState.state_dict()


# ----------------------------------------------------------------------------------------------
# the weighting block of a config
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LambdaOptimConfig:
    """λ's start value and its own SGD learning rate (Sec. 2.3: 0 and 0.1, no weight decay):
    ``weighting.lambda.{init, lr}``, read by ``WeightingConfig.from_dict``, handed by
    ``WeightingState`` to ``repro.objective.LearnableLambda``, whose ``torch.optim.SGD`` takes it."""
    init: float = 0.0
    lr: float = 0.1

    def __post_init__(self):
        for name in ("init", "lr"):
            v = _number_or_fraction(getattr(self, name))
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"weighting.lambda.{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.lr < 0:
            raise ValueError(f"weighting.lambda.lr must be >= 0, got {self.lr}")


@dataclass(frozen=True)
class WeightingConfig:
    """``weighting: {method: lambda, r: 0.2, sigma: sample, lambda: {init: 0, lr: 0.1}}``.

    The one parsed form of that block (``from_dict``; ``to_dict`` gives the same nested block
    back, which is how it travels to OpenRLHF's workers and TRL). ``params`` is the method's own
    parameter dataclass (``LambdaParams``, ``DeltaLParams``, ``NoParams``...), so a key the method
    does not take is an error, and a parameter left out takes the method's default
    (r = ``repro.objective.PAPER_R``)."""
    method: str = "lambda"
    params: object = None
    lambda_: LambdaOptimConfig = field(default_factory=LambdaOptimConfig)

    def __post_init__(self):
        m = obj.get_method(self.method)
        if self.params is None:
            object.__setattr__(self, "params", m.params())
        obj.Weighting(m, self.params)  # type check
        if not isinstance(self.lambda_, LambdaOptimConfig):
            raise TypeError(f"lambda_ must be a LambdaOptimConfig (a dict goes through "
                            f"WeightingConfig.from_dict), got {type(self.lambda_).__name__}")

    @classmethod
    def from_dict(cls, d: dict | None, *, complete: bool = False) -> "WeightingConfig":
        """The block as YAML, JSON or ``--set``/``--lgrpo.weighting.*`` give it (nested dict).
        ``complete``: ``method`` and ``lambda: {init, lr}`` must be given, none taken from the
        defaults here (the CPU configs, whose YAML layers are the one source of their values)."""
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"weighting must be a mapping {{method, <its parameters>, lambda: {{init, lr}}}}, got {d!r}")
        if complete and ("method" not in (d or {}) or not isinstance((d or {}).get("lambda"), dict)
                         or not {"init", "lr"} <= set(d["lambda"])):
            raise ValueError(f"config key 'weighting' must give method and lambda: {{init, lr}} "
                             f"(base.yaml gives lambda, methods/<method>.yaml the method), got {d!r}")
        d = dict(d or {})
        method = d.pop("method", cls.method)
        lam = d.pop("lambda", None) or {}
        if not isinstance(lam, dict):
            raise ValueError(f"weighting.lambda must be a mapping {{init, lr}}, got {lam!r}")
        unknown = sorted(set(lam) - {"init", "lr"})
        if unknown:
            raise ValueError(f"weighting.lambda takes init and lr, got {unknown}")
        params = {k: _number_or_fraction(v) for k, v in d.items()}
        return cls(method=method, params=obj.get_method(method).make_params(**params),
                   lambda_=LambdaOptimConfig(**lam))

    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self.params),
                "lambda": dataclasses.asdict(self.lambda_)}

    @property
    def weighting(self) -> obj.Weighting:
        return obj.Weighting(obj.get_method(self.method), self.params)

    @property
    def learnable(self) -> bool:
        return obj.get_method(self.method).learnable


def _number_or_fraction(v):
    """YAML has no fractions and reads ``1e-4`` as a string: accept "a/b" and numeric strings."""
    if isinstance(v, str):
        s = v.strip()
        try:
            if "/" in s:
                a, b = s.split("/", 1)
                return float(a) / float(b)
            return float(s)
        except ValueError:
            return v  # not a number: the parameter's own check says what it expects
    return v


# ----------------------------------------------------------------------------------------------
# group info per sample
# ----------------------------------------------------------------------------------------------
@dataclass
class GroupInfo:
    """For each of N samples: ``group_lengths [N, G]`` (its whole group's response lengths, float)
    and ``index [N]`` (its position in that row). ``group_id [N]``: its group, where known."""
    group_lengths: torch.Tensor
    index: torch.Tensor
    group_id: torch.Tensor | None = None

    @classmethod
    def from_groups(cls, lengths) -> "GroupInfo":
        """Samples in group-major order (sample k is member k % G of group k // G)."""
        t = obj.check_lengths(lengths)
        P, G = t.shape
        return cls(t.repeat_interleave(G, dim=0), torch.arange(P * G) % G, torch.arange(P * G) // G)

    @classmethod
    def from_positions(cls, row_lengths, positions, group_size: int) -> "GroupInfo":
        """Rows in any order, with ``positions [N]`` = each row's place in rollout order, where
        the G samples of a prompt are consecutive; checked to be a permutation of 0..N-1."""
        G = int(group_size)
        pos = check_positions(positions, G)
        groups = rows_as_groups(torch.as_tensor(row_lengths).to(torch.float32).reshape(-1), pos, G)
        return cls(groups[pos // G], pos % G, pos // G)

    def split(self, sizes: list[int]) -> list["GroupInfo"]:
        parts = zip(self.group_lengths.split(sizes), self.index.split(sizes),
                    self.group_id.split(sizes) if self.group_id is not None else [None] * len(sizes))
        return [GroupInfo(g.clone(), i.clone(), None if d is None else d.clone()) for g, i, d in parts]


def check_positions(positions, group_size: int) -> torch.Tensor:
    """``positions`` as a long tensor ``[N]``, checked to be a permutation of 0..N-1 with N a
    multiple of the group size G >= 2 (whole groups)."""
    G = int(group_size)
    if G < 2:
        raise ValueError(f"group size (n_samples_per_prompt) must be >= 2, got {G}")
    pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    n = pos.numel()
    if n == 0:
        raise ValueError("no samples")
    if n % G:
        raise ValueError(f"{n} samples do not form whole groups of {G}")
    if not torch.equal(torch.sort(pos).values, torch.arange(n)):
        raise ValueError("experience indices are not a permutation of 0..N-1: cannot rebuild groups")
    return pos


def rows_as_groups(values: torch.Tensor, positions: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-row ``values`` rearranged into ``[groups, G]`` in rollout order."""
    by_rollout = torch.empty_like(values)
    by_rollout[positions] = values
    return by_rollout.view(-1, group_size)


# ----------------------------------------------------------------------------------------------
# f statistics
# ----------------------------------------------------------------------------------------------
class FStats:
    """Count, mean, sum of squared deviations (M2), min and max of f, in float64; merges
    micro-batches and data-parallel ranks exactly up to rounding (Chan et al.'s update).
    ``reduced()`` gives f_mean, f_std (sample std, ddof 1; 0 for one sample), f_min, f_max."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n, self.mean, self.m2, self.lo, self.hi = 0.0, 0.0, 0.0, math.inf, -math.inf

    def add(self, f: torch.Tensor) -> "FStats":
        f = f.detach().reshape(-1).to("cpu", torch.float64)
        if f.numel():
            n, mean = float(f.numel()), float(f.mean())
            m2 = float(((f - mean) ** 2).sum())
            self._merge(n, mean, m2, float(f.min()), float(f.max()))
        return self

    def _merge(self, n, mean, m2, lo, hi) -> None:
        if n == 0:
            return
        tot = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / tot
        self.m2 += m2 + delta * delta * self.n * n / tot
        self.n = tot
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def reduced(self, group=None) -> dict:
        """The statistics over every rank of ``group`` (when torch.distributed is initialised)."""
        import torch.distributed as dist

        n, mean, m2, lo, hi = self.n, self.mean, self.m2, self.lo, self.hi
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            dev = _collective_device(group)
            t = torch.tensor([n, n * mean, m2 + n * mean * mean], dtype=torch.float64, device=dev)
            ext = torch.tensor([lo, -hi], dtype=torch.float64, device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            dist.all_reduce(ext, op=dist.ReduceOp.MIN, group=group)
            n, s, ss = (float(x) for x in t.cpu())
            lo, hi = float(ext[0]), -float(ext[1])
            mean = s / n if n else 0.0
            m2 = max(ss - n * mean * mean, 0.0)
        if n == 0:
            return {}
        return {"f_mean": mean, "f_std": math.sqrt(m2 / (n - 1)) if n > 1 else 0.0,
                "f_min": lo, "f_max": hi}


def f_stats(f: torch.Tensor) -> dict:
    """``FStats`` of one tensor of weights."""
    return FStats().add(f).reduced()


def _collective_device(group=None):
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# the method, λ and its state
# ----------------------------------------------------------------------------------------------
class WeightingState:
    """One run's weighting: the method with its parameters, λ (a ``LearnableLambda``, only for a
    learnable method), the number of optimizer steps taken and the running f statistics."""

    def __init__(self, cfg: WeightingConfig, *, device="cpu", dtype=torch.float32):
        self.cfg = cfg
        self.weighting = cfg.weighting
        self.lam = (obj.LearnableLambda(init=cfg.lambda_.init, lr=cfg.lambda_.lr, dtype=dtype, device=device)
                    if self.weighting.learnable else None)
        self.optimizer_steps = 0
        self.fstats = FStats()

    @property
    def method(self) -> str:
        return self.weighting.name

    @property
    def learnable(self) -> bool:
        return self.lam is not None

    @property
    def value(self) -> float:
        """λ now (0.0 for a fixed-weight method)."""
        return self.lam.value if self.lam is not None else 0.0

    @property
    def loss_lambda(self):
        """What the loss takes as λ: the parameter (so λ gets a gradient) or 0.0."""
        return self.lam.param if self.lam is not None else 0.0

    def weights(self, info: GroupInfo) -> torch.Tensor:
        """f per sample ``[N]`` (differentiable in λ), from each sample's own group."""
        return obj.sample_weights(self.weighting, info.group_lengths, info.index, lam=self.loss_lambda)

    def loss(self, logp, old_logp, advantages, mask, info: GroupInfo, *, denominator: float,
             scope: str = "group", **loss_kw) -> obj.LossOutput:
        """``repro.objective.policy_loss`` with this weighting and λ; adds f to the statistics."""
        out = obj.policy_loss(logp, old_logp, advantages, mask, info.group_lengths, info.index,
                              method=self.weighting, lam=self.loss_lambda, denominator=denominator,
                              scope=scope, **loss_kw)
        self.fstats.add(out.weights)
        return out

    def step(self, group=None) -> float | None:
        """Call once per optimizer step, at the gradient-accumulation boundary: counts the step
        and, for a learnable method, averages λ's gradient over ``group`` and steps its SGD.
        Returns the applied gradient (None for a fixed-weight method)."""
        self.optimizer_steps += 1
        return self.lam.step(group=group) if self.lam is not None else None

    def pop_fstats(self, group=None) -> dict:
        """The f statistics since the last call (over ``group``'s ranks), then reset."""
        out = self.fstats.reduced(group)
        self.fstats.reset()
        return out

    # the one λ checkpoint format (plain types: loads with torch.load(weights_only=True))
    def state_dict(self) -> dict:
        state = {"format": LAMBDA_STATE_FORMAT, "method": self.method,
                 "optimizer_steps": int(self.optimizer_steps)}
        if self.lam is not None:
            sd = self.lam.state_dict()
            state["lambda"] = float(sd["lambda"])
            state["optimizer"] = sd["optimizer"]
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.method:
            raise ValueError(f"checkpoint was trained with method {state.get('method')!r}, "
                             f"this run uses {self.method!r}")
        if "optimizer_steps" not in state:
            raise ValueError("λ state without optimizer_steps (not written by WeightingState.state_dict)")
        self.optimizer_steps = int(state["optimizer_steps"])
        if self.lam is not None:
            if "lambda" not in state:
                raise ValueError("checkpoint has no λ state")
            self.lam.load_state_dict({"lambda": state["lambda"], "optimizer": state["optimizer"]})


# ----------------------------------------------------------------------------------------------
# rollout statistics and the metrics record
# ----------------------------------------------------------------------------------------------
def rollout_stats(rewards, lengths, advantages=None, truncated=None) -> dict:
    """Statistics of one rollout batch, ``rewards``/``lengths``/``advantages`` as ``[groups, G]``
    (per-sample advantage: sequence level), ``truncated`` per sample. ``len_adv_cov`` is the
    mean over groups of the within-group sample covariance of length and advantage (the sign of
    λ's first-order gradient); keys whose input is not given are left out."""
    rewards = torch.as_tensor(rewards)
    lengths = torch.as_tensor(lengths)
    out = {"reward_mean": float(rewards.mean()),
           "accuracy": float((rewards == CORRECT).float().mean()),
           "response_length_mean": float(lengths.float().mean()),
           "response_length_max": float(lengths.max())}
    if truncated is not None:
        out["truncated_rate"] = float(torch.as_tensor(truncated).float().mean())
    if advantages is not None:
        out["len_adv_cov"] = float(obj.within_group_cov(lengths, advantages).mean())
    return out


_REQUIRED_FINITE = ("reward_mean", "accuracy", "response_length_mean", "response_length_max",
                    "len_adv_cov", "truncated_rate", "lambda", "f_mean", "f_std", "f_min", "f_max",
                    "clip_ratio")


def metrics_record(*, step: int, rollout: int, method: str, lam: float, lam_grad, f: dict,
                   stats: dict, time_s: float, entropy=None, kl=None, clip_ratio, grad_norm=None,
                   extras: dict | None = None) -> dict:
    """One metrics line (``repro.runs.REQUIRED`` plus ``extras``).

    ``f``: ``FStats.reduced()``; ``stats``: ``rollout_stats`` (+ ``truncated_rate``), or the same
    keys from an engine's own counters. Required values must be finite numbers (``ValueError``
    otherwise, naming the field); ``entropy``, ``kl``, ``grad_norm`` and ``lam_grad`` may be None."""
    rec: dict = {"step": int(step), "rollout": int(rollout), "method": str(method),
                 "lambda": lam, "lambda_grad": lam_grad, **{k: f.get(k) for k in ("f_mean", "f_std", "f_min", "f_max")},
                 **{k: stats.get(k) for k in ("reward_mean", "accuracy", "response_length_mean",
                                              "response_length_max", "truncated_rate", "len_adv_cov")},
                 "entropy": entropy, "kl": kl, "clip_ratio": clip_ratio, "grad_norm": grad_norm,
                 "time_s": float(time_s)}
    for k, v in rec.items():
        if isinstance(v, torch.Tensor):
            rec[k] = float(v)
    for k in _REQUIRED_FINITE:
        v = rec[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"metrics field {k!r} = {v!r} is not a finite number")
        rec[k] = float(v)
    for k in ("entropy", "kl", "grad_norm", "lambda_grad"):
        if rec[k] is not None:
            rec[k] = float(rec[k])
    for k, v in (extras or {}).items():
        rec.setdefault(k, v)
    return rec
