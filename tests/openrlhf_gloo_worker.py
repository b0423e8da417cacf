"""One data-parallel rank of the 2-process gloo test in test_openrlhf_seams.py.

Runs OpenRLHF's real ``ActorPPOTrainer.training_step`` (through the package's
``LambdaActorPPOTrainer``) on this rank's micro-batches of two optimizer steps, with OpenRLHF's
real loss normalisers (``iter_grad_accum_global_norm``) and a DeviceMesh 'dp' group like
DeepSpeedStrategy's. The policy model and the DeepSpeed engine are small stand-ins: a log-prob
table with one parameter, and an engine that does DeepSpeed's 1/gas loss scaling and
accumulation-boundary counting. ``expected_lambda_trajectory`` computes, for the test, what λ
must be from the whole step of both ranks with ``repro.objective``.

usage: python openrlhf_gloo_worker.py RANK WORLD PORT OUT.json
"""
from __future__ import annotations

import json
import os
import sys
import types

import torch

P, G, T, STEPS, GAS, WORLD, LR, R = 4, 4, 7, 2, 2, 2, 0.5, 1 / 9


def step_batch(step: int) -> dict:
    """The whole optimizer step (both ranks): P groups of G, and each sample's rank/micro-batch."""
    g = torch.Generator().manual_seed(100 + step)
    N = P * G
    lengths = torch.randint(1, T + 1, (P, G), generator=g)
    mask = torch.arange(T)[None, :] < lengths.reshape(-1)[:, None]
    old = -torch.rand(N, T, generator=g, dtype=torch.float64) * 2
    logp = old + 0.2 * torch.randn(N, T, generator=g, dtype=torch.float64)
    rewards = (torch.randint(0, 3, (P, G), generator=g).to(torch.float64) - 1.0)
    rewards[0] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # at least one group with signal
    from repro.objective import eq3_group_advantages

    adv = eq3_group_advantages(rewards).reshape(-1)
    perm = torch.randperm(N, generator=g)  # samples of a group land on both ranks
    per_rank = N // WORLD
    per_micro = per_rank // GAS
    assign = {}
    for k, i in enumerate(perm.tolist()):
        assign[i] = (k // per_rank, (k % per_rank) // per_micro)
    return dict(lengths=lengths, mask=mask, old=old, logp=logp, adv=adv, assign=assign, N=N)


def expected_lambda_trajectory() -> dict:
    from repro import objective as obj

    lam, lambdas, grads, fs = 0.0, [], [], []
    for step in range(STEPS):
        d = step_batch(step)
        gl = d["lengths"].to(torch.float64).repeat_interleave(G, dim=0)
        pos = torch.arange(d["N"]) % G
        lt = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
        out = obj.policy_loss(d["logp"], d["old"], d["adv"], d["mask"], gl, pos, method="lambda",
                              denominator=float(d["mask"].sum()), scope="batch", lam=lt, r=R)
        (g,) = torch.autograd.grad(out.loss, lt)
        fs.append(out.weights)
        grads.append(float(g))
        lam = lam - LR * float(g)
        lambdas.append(lam)
    return {"lambdas": lambdas, "grads": grads, "f_mean_all": float(torch.cat(fs).mean())}


class FakeEngine:
    """DeepSpeed's part that matters here: backward scales by 1/gas; step() counts micro-steps."""

    def __init__(self, gas, params):
        self.gas, self.micro_steps, self.params = gas, 0, params

    def is_gradient_accumulation_boundary(self):
        return (self.micro_steps + 1) % self.gas == 0

    def backward(self, loss):
        (loss / self.gas).backward()

    def step(self):
        if self.is_gradient_accumulation_boundary():
            for p in self.params:
                p.grad = None
        self.micro_steps += 1


class FakeActor:
    """Log-probs looked up by the sample id in ``sequences[:, 0]``, plus theta * 0 (a parameter,
    so the policy also has a gradient)."""

    def __init__(self, table):
        self.table = table
        self.theta = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.model = FakeEngine(GAS, [self.theta])

    def train(self):
        pass

    def __call__(self, sequences, action_mask, attention_mask=None, return_output=False, **kw):
        ids = sequences[:, 0]
        lp = torch.stack([self.table[int(i)] for i in ids])[:, : action_mask.shape[1]] + self.theta * 0.0
        return lp, types.SimpleNamespace(entropy=None, aux_loss=None)


def main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from openrlhf_cpu import use_stubs

    use_stubs()
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", rank=rank, world_size=world)
    from openrlhf.models.loss import PolicyLoss
    from openrlhf.trainer.ppo_utils.experience import Experience, make_experience_batch, split_experience_batch
    from openrlhf.utils.loss_utils import iter_grad_accum_global_norm

    from repro.trainers.openrlhf.patches import LambdaActorPPOTrainer
    from repro.trainers.openrlhf.settings import LambdaSettings
    from repro.trainers.openrlhf.weighting import attach_group_info

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("dp",))
    args = types.SimpleNamespace(
        actor=types.SimpleNamespace(loss_agg_mode="token-mean", policy_loss_type="ppo", entropy_coef=None,
                                    aux_loss_coef=0.0),
        algo=types.SimpleNamespace(kl=types.SimpleNamespace(use_loss=False, init_coef=0.0)),
        train=types.SimpleNamespace(dynamic_batch_enable=False),
        ds=types.SimpleNamespace(param_dtype="bf16"))
    strategy = types.SimpleNamespace(
        args=args, ds_device_mesh=mesh, ring_attn_group=None, accumulated_gradient=GAS,
        backward=lambda loss, actor, optim: actor.model.backward(loss),
        optimizer_step=lambda optim, actor, sched, name=None: actor.model.step(),
        get_grad_norm=lambda actor: 0.0)
    trainer = LambdaActorPPOTrainer.__new__(LambdaActorPPOTrainer)
    trainer.strategy, trainer.args = strategy, args
    trainer.actor_loss_fn = PolicyLoss()
    trainer.ema_model, trainer.aux_loss, trainer.replay_buffer, trainer.actor_optim = None, False, None, None
    trainer.actor_scheduler = types.SimpleNamespace(get_last_lr=lambda: [1e-6])
    trainer.setup_lambda(LambdaSettings(weighting={"method": "lambda", "r": R, "lambda": {"lr": LR}}))
    trainer.lgrpo_lambda.param.data = trainer.lgrpo_lambda.param.data.double()

    lambdas, grads = [], []
    for step in range(STEPS):
        d = step_batch(step)
        table = {i: d["logp"][i] for i in range(d["N"])}
        trainer.actor = FakeActor(table) if step == 0 else trainer.actor
        trainer.actor.table = table
        # the rollout as the experience maker holds it (consecutive samples), then the seam
        rollout = Experience(
            sequences=torch.arange(d["N"])[:, None].repeat(1, T + 2), attention_mask=torch.ones(d["N"], T + 2),
            action_mask=d["mask"], action_log_probs=d["old"], advantages=d["adv"][:, None].expand(-1, T).clone(),
            index=list(range(d["N"])), info={"reward": torch.zeros(d["N"])})
        attach_group_info([rollout], G)
        items = split_experience_batch(rollout)
        mine = [[i for i in range(d["N"]) if d["assign"][i] == (rank, m)] for m in range(GAS)]
        micro = [make_experience_batch([items[i] for i in ids]) for ids in mine]
        for k, (exp, info) in enumerate(iter_grad_accum_global_norm(micro, strategy, GAS, lambda e: e.action_mask)):
            trainer.training_step(exp, 0.0, k, info)
        lambdas.append(trainer.lgrpo_lambda.value)
        grads.append(trainer.lgrpo_lambda.last_grad)
    status = trainer.lgrpo_status()
    with open(out, "w") as fh:
        json.dump({"lambdas": lambdas, "grads": grads, "optimizer_steps": trainer.lgrpo_optimizer_steps,
                   "status": status}, fh)
    dist.barrier()  # no rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
