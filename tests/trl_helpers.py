"""Shared pieces of the TRL tests: a tiny config, a trainer subclass that records what the real
GRPOTrainer generated and the gradients it produced, and the independent computation of the same
step from ``repro.objective`` (``policy_loss`` for the model gradient, ``eq20_lambda_grad`` for λ).

Nothing here replaces a TRL component: generation, the shuffle/split of the generation batch,
the stock loss, accumulation, DDP and the optimizer step are TRL's and transformers' own."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import TrainerCallback  # noqa: E402

from repro.objective import (clipped_surrogate, eq3_group_advantages, eq20_lambda_grad, policy_loss,  # noqa: E402
                             step_denominator)
from repro.trainers.trl.run import build_trainer, load_config  # noqa: E402
from repro.trainers.trl.trainer import LambdaGRPOTrainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "repro" / "configs" / "trl" / "tiny-sum-cpu.yaml"


def tiny_cfg(method="lambda", *, G=4, per_device=2, ga=4, spg=None, prompts_per_step=2, steps=1,
             max_tokens=16, num_iterations=1, extra=()):
    """The committed CPU config shrunk to ``steps`` optimizer steps of ``prompts_per_step`` prompts
    (``num_iterations`` μ: each generation batch trains μ steps, so ``steps`` is a multiple of μ)."""
    spg = ga if spg is None else spg
    assert steps % num_iterations == 0, (steps, num_iterations)
    sets = [f"trl.num_generations={G}", f"trl.per_device_train_batch_size={per_device}",
            f"trl.gradient_accumulation_steps={ga}", f"trl.steps_per_generation={spg}",
            f"trl.num_iterations={num_iterations}", f"trl.max_completion_length={max_tokens}",
            f"data.prompts={prompts_per_step * steps // num_iterations}",
            "reward.workers=0", "trl.max_grad_norm=0", *extra]
    return load_config(CONFIG, method, sets)


class Recorder(TrainerCallback):
    """Copies the model's gradients just before each optimizer step (after TRL's accumulation), and
    the parameters they were computed at."""

    def __init__(self, trainer):
        self.trainer, self.grads, self.states = trainer, [], []

    def on_pre_optimizer_step(self, args, state, control, **kw):
        m = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.grads.append({n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None})
        self.states.append({k: v.detach().clone() for k, v in m.state_dict().items()})


class RecordingTrainer(LambdaGRPOTrainer):
    """Keeps each generation batch as TRL produced it and the rewards TRL gathered; the λ value
    each optimizer step used and the gradient it applied; which generation batches each optimizer
    step trained on (``rec_step_batches``: indices into ``rec_batches``; a step that generated
    nothing, another PPO epoch, trains on the previous step's)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.rec_batches, self.rec_rewards, self.rec_lambda_before, self.rec_lambda_grads = [], [], [], []
        self.rec_step_batches, self._rec_seen = [], 0
        self.rec = Recorder(self)
        self.add_callback(self.rec)
        m = self.accelerator.unwrap_model(self.model)
        self.rec_start_state = {k: v.detach().clone() for k, v in m.state_dict().items()}

    @property
    def rec_start_model(self):
        """A fresh copy of the starting policy (plain transformers module, none of TRL's set-up)."""
        return self.rec_model_at(self.rec_start_state)

    def rec_model_at(self, state):
        """A fresh policy holding ``state`` (e.g. ``self.rec.states[k]``, the parameters of step k+1)."""
        from repro.trainers.rollout import load_policy

        model, _ = load_policy(REPO / "repro" / "assets" / "tiny-sum")
        model.load_state_dict(state)
        return model

    def _calculate_rewards(self, *a, **k):
        rpf = super()._calculate_rewards(*a, **k)
        self.rec_rewards.append(rpf.detach().clone())
        return rpf

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.rec_batches.append({k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)})
        return out

    def training_step(self, model, inputs, num_items_in_batch):
        if self.lgrpo_lambda is not None and len(self.rec_lambda_before) == len(self.rec_lambda_grads):
            self.rec_lambda_before.append(self.lgrpo_lambda.value)
        out = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            new = list(range(self._rec_seen, len(self.rec_batches)))
            self._rec_seen = len(self.rec_batches)
            self.rec_step_batches.append(new or self.rec_step_batches[-1])
            if self.lgrpo_lambda is not None:
                self.rec_lambda_grads.append(self.lgrpo_lambda.last_grad)
        return out


def make_trainer(cfg, run_dir, cls=RecordingTrainer, run=None):
    return build_trainer(cfg, Path(run_dir), run, cls=cls)


def step_data(batches, rewards, G: int):
    """One optimizer step's samples (all its generation batches) in generation order."""
    keys = ["prompt_ids", "prompt_mask", "completion_ids", "completion_mask"]
    if all(b.get("old_per_token_logps") is not None for b in batches):  # off-policy: TRL's π_old
        keys.append("old_per_token_logps")
    out = {}
    for k in keys:
        width = max(b[k].shape[1] for b in batches)
        pad_left = k.startswith("prompt")
        parts = []
        for b in batches:
            x = b[k]
            pad = torch.zeros(x.shape[0], width - x.shape[1], dtype=x.dtype)
            parts.append(torch.cat([pad, x], 1) if pad_left else torch.cat([x, pad], 1))
        out[k] = torch.cat(parts)
    r = torch.cat([x[:, 0] for x in rewards]).double()
    out["rewards"] = r.view(-1, G)
    out["lengths"] = out["completion_mask"].sum(1).double().view(-1, G)
    return out


def independent_lambda_grad(d, *, lam: float, r: float, adv_scale: str, sigma: str = "sample", L=None) -> float:
    """∂loss/∂λ of the step from Eq. 20; the loss is minus the mean over the step's groups of Eq. 7.
    ``L`` [groups, G]: the responses' surrogate sums (``surrogate_sums``); None: on-policy (ρ = 1),
    L_i = |o_i|·A_i."""
    if L is None:
        L = d["lengths"] * eq3_group_advantages(d["rewards"], scale=adv_scale)
    return float(-eq20_lambda_grad(d["lengths"], L, lam, r=r, sigma=sigma).mean())


def _logp(model, d, temperature: float = 1.0):
    ids = torch.cat([d["prompt_ids"], d["completion_ids"]], 1)
    att = torch.cat([d["prompt_mask"], d["completion_mask"]], 1)
    T = d["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=att).logits[:, -T - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, d["completion_ids"].unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def surrogate_sums(model, d, *, adv_scale: str, clip: float = 0.2, temperature: float = 1.0):
    """L_i = Σ_t min(ρ_t A_i, clip(ρ_t) A_i) over each response's tokens, ρ = π_θ / TRL's π_old
    (``old_per_token_logps``; ρ = 1 when the step is on-policy), shape [groups, G]."""
    logp = _logp(copy.deepcopy(model).train(), d, temperature).double()
    old = d.get("old_per_token_logps")
    old = logp if old is None else old.double()
    adv = eq3_group_advantages(d["rewards"], scale=adv_scale).reshape(-1, 1)
    surr, _ = clipped_surrogate(logp, old, adv, clip_low=clip, clip_high=clip)
    return (surr * d["completion_mask"]).sum(1).view_as(d["lengths"])


@torch.enable_grad()
def independent_model_grads(model, d, *, weighting, lam: float, adv_scale: str, temperature: float = 1.0) -> dict:
    """The model gradient of ``policy_loss(scope='group')`` over the whole step, in one batch."""
    model = copy.deepcopy(model).train().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    logp = _logp(model, d, temperature)
    old = d.get("old_per_token_logps")  # TRL's π_old after the first PPO epoch; else on-policy
    old = logp.detach() if old is None else old.to(logp.dtype)
    G = d["lengths"].shape[1]
    N = logp.shape[0]
    adv = eq3_group_advantages(d["rewards"], scale=adv_scale).reshape(-1)
    gl = d["lengths"].repeat_interleave(G, 0)
    idx = torch.arange(N) % G
    out = policy_loss(logp, old, adv, d["completion_mask"], gl, idx, method=weighting,
                      denominator=step_denominator("group", d["lengths"]), scope="group", lam=lam)
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_rel_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), (len(a), len(b), sorted(set(a) ^ set(b))[:3])
    num = max(float((a[k] - b[k]).abs().max()) for k in a)
    den = max(float(b[k].abs().max()) for k in b)
    return num / den
