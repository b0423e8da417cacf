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
