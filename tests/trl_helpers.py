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

from repro.objective import eq3_group_advantages, eq20_lambda_grad, policy_loss, step_denominator  # noqa: E402
from repro.trainers.trl.run import build_trainer, load_config  # noqa: E402
from repro.trainers.trl.trainer import LambdaGRPOTrainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "repro" / "configs" / "trl" / "tiny-sum-cpu.yaml"


def tiny_cfg(method="lambda", *, G=4, per_device=2, ga=4, spg=None, prompts_per_step=2, steps=1,
             max_tokens=16, extra=()):
    """The committed CPU config shrunk to ``steps`` optimizer steps of ``prompts_per_step`` prompts."""
    spg = ga if spg is None else spg
    sets = [f"trl.num_generations={G}", f"trl.per_device_train_batch_size={per_device}",
            f"trl.gradient_accumulation_steps={ga}", f"trl.steps_per_generation={spg}",
            f"trl.max_completion_length={max_tokens}", f"data.prompts={prompts_per_step * steps}",
            "reward.workers=0", "trl.max_grad_norm=0", *extra]
    return load_config(CONFIG, method, sets)


class Recorder(TrainerCallback):
    """Copies the model's gradients just before each optimizer step (after TRL's accumulation)."""

    def __init__(self, trainer):
        self.trainer, self.grads = trainer, []

    def on_pre_optimizer_step(self, args, state, control, **kw):
        m = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.grads.append({n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None})


class RecordingTrainer(LambdaGRPOTrainer):
    """Keeps each generation batch as TRL produced it and the rewards TRL gathered; the λ value
    each optimizer step used and the gradient it applied."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.rec_batches, self.rec_rewards, self.rec_lambda_before, self.rec_lambda_grads = [], [], [], []
        self.rec = Recorder(self)
        self.add_callback(self.rec)
        m = self.accelerator.unwrap_model(self.model)
        self.rec_start_state = {k: v.detach().clone() for k, v in m.state_dict().items()}

    @property
    def rec_start_model(self):
        """A fresh copy of the starting policy (plain transformers module, none of TRL's set-up)."""
        from repro.trainers.rollout import load_policy

        model, _ = load_policy(REPO / "repro" / "assets" / "tiny-sum")
        model.load_state_dict(self.rec_start_state)
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
        if self.accelerator.sync_gradients and self.lgrpo_lambda is not None:
            self.rec_lambda_grads.append(self.lgrpo_lambda.last_grad)
        return out


def make_trainer(cfg, run_dir, cls=RecordingTrainer, run=None):
    return build_trainer(cfg, Path(run_dir), run, cls=cls)


def step_data(batches, rewards, G: int):
    """One optimizer step's samples (all its generation batches) in generation order."""
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
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


def independent_lambda_grad(d, *, lam: float, r: float, adv_scale: str, sigma: str = "sample") -> float:
    """∂loss/∂λ of the step from Eq. 20: on-policy (ρ = 1), L_i = |o_i|·A_i; the loss is minus
    the mean over the step's groups of Eq. 7."""
    adv = eq3_group_advantages(d["rewards"], scale=adv_scale)
    L = d["lengths"] * adv
    return float(-eq20_lambda_grad(d["lengths"], L, lam, r=r, sigma=sigma).mean())


@torch.enable_grad()
def independent_model_grads(model, d, *, weighting, lam: float, adv_scale: str, temperature: float = 1.0) -> dict:
    """The model gradient of ``policy_loss(scope='group')`` over the whole step, in one batch."""
    model = copy.deepcopy(model).train().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    ids = torch.cat([d["prompt_ids"], d["completion_ids"]], 1)
    att = torch.cat([d["prompt_mask"], d["completion_mask"]], 1)
    T = d["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=att).logits[:, -T - 1:-1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, d["completion_ids"].unsqueeze(-1)).squeeze(-1)
    G = d["lengths"].shape[1]
    N = ids.shape[0]
    adv = eq3_group_advantages(d["rewards"], scale=adv_scale).reshape(-1)
    gl = d["lengths"].repeat_interleave(G, 0)
    idx = torch.arange(N) % G
    out = policy_loss(logp, logp.detach(), adv, d["completion_mask"], gl, idx, method=weighting,
                      denominator=step_denominator("group", d["lengths"]), scope="group", lam=lam)
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_rel_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), (len(a), len(b), sorted(set(a) ^ set(b))[:3])
    num = max(float((a[k] - b[k]).abs().max()) for k in a)
    den = max(float(b[k].abs().max()) for k in b)
    return num / den
