"""Every paper config, one rollout batch through OpenRLHF 0.11.2's own path, rank by rank.

The path is the real one from the rollout samples on: ``RemoteExperienceMaker.split_rollout_samples``
and ``compute_advantages_and_returns`` (through the package's ``LambdaExperienceMaker``), the
actor-group chunking ``RayActorGroup.async_run_method_batch`` + ``BaseModelActor.execute_batch``
(``trainer/ray/launcher.py``), ``PolicyModelActor.append`` into the real ``NaiveReplayBuffer``, and
on each rank the real ``ActorPPOTrainer.ppo_train`` (with the package's group shuffle) ->
``iter_grad_accum_global_norm`` -> the package's ``training_step`` -> the stock ``training_step``
-> ``WeightedPolicyLoss`` -> the stock ``PolicyLoss``.

Stand-ins, and only these: the data-parallel ranks are threads whose ``torch.distributed``
collectives are a barrier + sum (``ThreadDP``; a rank that issues fewer collectives than the
others leaves them at the barrier: ``BrokenBarrierError`` after a timeout, where NCCL would hang);
the policy is a table of per-token log-prob offsets θ (``FakeActor``); the DeepSpeed engine does
DeepSpeed's 1/gas backward scaling, the data-parallel gradient mean at the accumulation boundary
and one collective per backward like ZeRO-2 (``FakeEngine``); ``ray.put`` is the identity.

Expected values are written out here from the paper: Eq. 3 for the advantage, Eq. 4 (GRPO),
Eq. 5 (DAPO), Eq. 6 (Dr.GRPO) and Eq. 7 with Eq. 11-16 (λ-GRPO), per token in plain Python
floats; nothing from ``repro.objective``. The KL loss is switched off (the check is of the policy
term; KL keeps OpenRLHF's window token mean in every scope, see paper_artifacts/choices.md).
"""
from __future__ import annotations

import dataclasses
import math
import random
import sys
import threading
import types
from pathlib import Path

import pytest
import torch



import torch.distributed as dist  # noqa: E402
from openrlhf.models.loss import PolicyLoss  # noqa: E402
from openrlhf.trainer.ppo_utils.experience import Experience  # noqa: E402
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer  # noqa: E402
from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch  # noqa: E402
from openrlhf.trainer.ray import launcher as launcher_mod  # noqa: E402
from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer  # noqa: E402

from repro.eval import data as data_src  # noqa: E402
from repro.trainers.openrlhf import reproduce  # noqa: E402
from repro.trainers.openrlhf.cli_check import parse_train_ppo_ray  # noqa: E402
from repro.trainers.openrlhf.launch import count_prompts, layout_problems  # noqa: E402
from repro.trainers.openrlhf.patches import (  # noqa: E402
    LambdaActorPPOTrainer,
    LambdaExperienceMaker,
    _LambdaPolicyModelActorBase,
)
from repro.trainers.openrlhf.settings import LambdaSettings  # noqa: E402

# the training set where `make data` takes it from (DATA_SRC, else ../shared/data beside the repository)
TRAIN_PARQUET = data_src.default_src() / data_src.manifest()[data_src.TRAIN]["file"]
T_MAX = 10  # response tokens of the synthetic rollout (lengths 1..T_MAX)
CONFIGS = [(s, m) for s in reproduce.SIZES for m in reproduce.ALL_METHODS]


# ----------------------------------------------------------------------------------------------
# stand-ins: ranks as threads, the policy, the engine
# ----------------------------------------------------------------------------------------------
class CollectiveMismatch(RuntimeError):
    """Ranks entered one collective with different tensors: they are out of step."""


class ThreadDP:
    def __init__(self, world: int, timeout: float):
        self.world, self.barrier = world, threading.Barrier(world, timeout=timeout)
        self.slots = [None] * world
        self.calls = [0] * world
        self.tls = threading.local()

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        r = self.tls.rank
        self.calls[r] += 1
        self.slots[r] = tensor.detach().clone()
        self.barrier.wait()
        if len({tuple(x.shape) for x in self.slots}) != 1:
            raise CollectiveMismatch(f"one all_reduce, shapes {[tuple(x.shape) for x in self.slots]}")
        stack = torch.stack(self.slots)
        if op == dist.ReduceOp.SUM:
            res = stack.sum(0)
        elif op == dist.ReduceOp.MIN:
            res = stack.min(0).values
        elif op == dist.ReduceOp.MAX:
            res = stack.max(0).values
        else:
            raise NotImplementedError(op)
        self.barrier.wait()  # every rank has read the slots before any rank writes again
        with torch.no_grad():
            tensor.copy_(res)

    def install(self, monkeypatch):
        monkeypatch.setattr(dist, "is_available", lambda: True)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: self.world)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: self.tls.rank)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)

    def run(self, fn):
        """fn(rank) on every rank in its own thread; returns results, re-raises the first error."""
        out, errs = [None] * self.world, [None] * self.world

        def body(r):
            self.tls.rank = r
            try:
                out[r] = fn(r)
            except BaseException as e:  # noqa: BLE001
                errs[r] = e
                self.barrier.abort()

        ts = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for e in errs:
            if e is not None and not isinstance(e, threading.BrokenBarrierError):
                raise e
        for e in errs:
            if e is not None:
                raise e
        return out


class FakeEngine:
    def __init__(self, gas, theta, dp, on_boundary):
        self.gas, self.theta, self.dp, self.on_boundary, self.micro_steps = gas, theta, dp, on_boundary, 0

    def is_gradient_accumulation_boundary(self):
        return (self.micro_steps + 1) % self.gas == 0

    def backward(self, loss):
        (loss / self.gas).backward()
        self.dp.all_reduce(torch.zeros(1))  # ZeRO-2 reduces gradients on every backward

    def step(self):
        if self.is_gradient_accumulation_boundary():
            g = self.theta.grad if self.theta.grad is not None else torch.zeros_like(self.theta)
            g = g.detach().clone()
            self.dp.all_reduce(g)
            self.on_boundary(g / self.dp.world)  # DeepSpeed averages gradients over DP ranks
            self.theta.grad = None
        self.micro_steps += 1


class FakeActor:
    """log π(o_t) = logp_new[id, t] + θ[id, t], the sample id in ``sequences[:, 0]``."""

    def __init__(self, logp_new, engine, theta, seen):
        self.logp_new, self.model, self.theta, self.seen = logp_new, engine, theta, seen

    def train(self):
        pass

    def __call__(self, sequences, action_mask, attention_mask=None, return_output=False, **kw):
        ids = sequences[:, 0].long()
        self.seen.append(ids.tolist())
        A = action_mask.shape[1]
        lp = self.logp_new[ids, :A] + self.theta[ids, :A]
        return lp, types.SimpleNamespace(entropy=torch.zeros_like(lp), aux_loss=None)


# ----------------------------------------------------------------------------------------------
# one config's rollout batch, rank by rank
# ----------------------------------------------------------------------------------------------
def config_args(size, method, scope=None):
    cfg = reproduce.load_config(size, method)
    args, _ = parse_train_ppo_ray(reproduce.flags_from(cfg["openrlhf"]))
    args.algo.kl.use_loss = False  # the policy term only (see the module docstring)
    settings = reproduce.settings_of(cfg)
    if scope is not None:
        settings = dataclasses.replace(settings, scope=scope)
    return cfg, args, settings


def synthetic_rollout(n_prompts, G, seed):
    g = torch.Generator().manual_seed(seed)
    N = n_prompts * G
    lengths = torch.randint(1, T_MAX + 1, (N,), generator=g)
    rng = random.Random(seed)
    rewards = torch.tensor([rng.choice([1.0, -0.5, -1.0]) for _ in range(N)], dtype=torch.float64)
    old = -torch.rand(N, T_MAX, generator=g, dtype=torch.float64) * 2
    new = old + 0.3 * torch.randn(N, T_MAX, generator=g, dtype=torch.float64)
    samples = []
    for i in range(N):  # one Experience per response, as samples_generator makes them
        am = (torch.arange(T_MAX) < lengths[i])[None, :]
        seq = torch.ones(1, T_MAX + 3, dtype=torch.long)
        seq[0, 0] = i
        samples.append(Experience(
            sequences=seq, attention_mask=torch.ones(1, T_MAX + 3, dtype=torch.long), action_mask=am,
            action_log_probs=old[i:i + 1].clone(), base_action_log_probs=old[i:i + 1].clone(),
            kl=torch.zeros(1, T_MAX, dtype=torch.float64), rewards=rewards[i:i + 1].clone(),
            response_length=lengths[i:i + 1].double(), total_length=lengths[i:i + 1].double() + 3,
            info={"reward": rewards[i:i + 1].clone()}))
    return samples, dict(lengths=lengths, rewards=rewards, old=old, new=new, N=N)


def experience_maker(args):
    em = LambdaExperienceMaker.__new__(LambdaExperienceMaker)
    em.strategy = types.SimpleNamespace(args=args)
    em.args, em.advantage_estimator = args, args.algo.advantage.estimator
    em.kl_ctl = types.SimpleNamespace(value=0.0)
    em.tokenizer = types.SimpleNamespace(pad_token_id=0)
    return em


def rank_trainer(args, settings, dp, rank, data, record):
    gas = args.train.batch_size // args.train.micro_batch_size // dp.world
    strategy = types.SimpleNamespace(
        args=args, ds_device_mesh={"dp": types.SimpleNamespace(get_group=lambda: None)}, ring_attn_group=None,
        accumulated_gradient=gas, is_rank_0=lambda: False,
        all_reduce=lambda d: {k: _mean_all_reduce(dp, v) for k, v in d.items()},
        backward=lambda loss, actor, optim: actor.model.backward(loss),
        optimizer_step=lambda optim, actor, sched, name=None: actor.model.step(),
        get_grad_norm=lambda actor: 0.0)
    t = LambdaActorPPOTrainer.__new__(LambdaActorPPOTrainer)
    t.strategy, t.args, t.max_epochs, t.dataloader_pin_memory = strategy, args, args.train.max_epochs, False
    t.actor_loss_fn = PolicyLoss(clip_eps_low=args.actor.eps_clip_low_high[0],
                                 clip_eps_high=args.actor.eps_clip_low_high[1], dual_clip=args.actor.dual_clip)
    t.ema_model, t.aux_loss, t.actor_optim = None, False, None
    t.actor_scheduler = types.SimpleNamespace(get_last_lr=lambda: [1e-6])
    t.setup_lambda(settings)
    if t.lgrpo_lambda is not None:
        t.lgrpo_lambda.param.data = t.lgrpo_lambda.param.data.double()
    theta = torch.zeros(data["N"], T_MAX, dtype=torch.float64, requires_grad=True)
    seen: list = []

    def on_boundary(grad):
        record[rank].append({"ids": sorted(i for ids in seen for i in ids), "grad": grad,
                             "lam": t.lgrpo_lambda.value if t.lgrpo_lambda is not None else 0.0})
        seen.clear()

    t.actor = FakeActor(data["new"], FakeEngine(gas, theta, dp, on_boundary), theta, seen)
    t.replay_buffer = NaiveReplayBuffer(args.train.micro_batch_size, 0, True, False, False)
    return t


def _mean_all_reduce(dp, v):
    x = torch.tensor([float(v)], dtype=torch.float64)
    dp.all_reduce(x)
    return float(x) / dp.world


def hand_to_ranks(experiences, trainers, monkeypatch):
    """The controller's ``actor_model_group.async_run_method_batch("append", ...)``, for real."""
    monkeypatch.setattr(launcher_mod.ray, "put", lambda x: x)
    actors = []
    for t in trainers:
        a = _LambdaPolicyModelActorBase.__new__(_LambdaPolicyModelActorBase)
        a.trainer, a.strategy = t, t.strategy
        actors.append(types.SimpleNamespace(execute_batch=types.SimpleNamespace(
            remote=lambda name, ref, s, e, a=a: launcher_mod.BaseModelActor.execute_batch(a, name, ref, s, e))))
    group = launcher_mod.RayActorGroup.__new__(launcher_mod.RayActorGroup)
    group._actor_handlers, group.duplicate_actors = actors, 1
    group.async_run_method_batch(method_name="append", experience=experiences)


def run_batch(size, method, n_prompts, monkeypatch, *, scope=None, patched=True, timeout=20.0, seed=0):
    cfg, args, settings = config_args(size, method, scope)
    W = args.actor.num_nodes * args.actor.num_gpus_per_node
    G = args.rollout.n_samples_per_prompt
    samples, data = synthetic_rollout(n_prompts, G, seed)
    em = experience_maker(args)
    experiences = em.compute_advantages_and_returns(em.split_rollout_samples(samples))
    # the torch.cuda calls of NaiveReplayBuffer.__init__ (target device) and ppo_train (device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    dp = ThreadDP(W, timeout)
    dp.install(monkeypatch)
    record = [[] for _ in range(W)]
    trainers = [rank_trainer(args, settings, dp, r, data, record) for r in range(W)]
    hand_to_ranks(experiences, trainers, monkeypatch)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")
    torch.manual_seed(seed)  # the group shuffle draws from torch's generator, as RandomSampler does

    def train(r):
        t = trainers[r]
        if patched:
            return t.ppo_train(0.0)
        return ActorPPOTrainer.ppo_train(t, 0.0)  # the stock sample shuffle

    status = dp.run(train)
    return dict(cfg=cfg, args=args, settings=settings, data=data, record=record, trainers=trainers, dp=dp,
                status=status, G=G, W=W)


# ----------------------------------------------------------------------------------------------
# the paper's objectives, written out per token
# ----------------------------------------------------------------------------------------------
def paper_advantages(rewards, G, estimator):
    adv = []
    for p in range(len(rewards) // G):
        r = [float(x) for x in rewards[p * G:(p + 1) * G]]
        mu = sum(r) / G
        if estimator == "dr_grpo":
            adv += [x - mu for x in r]
        else:  # Eq. 3 with the sample std (OpenRLHF group_norm: + 1e-9)
            sd = math.sqrt(sum((x - mu) ** 2 for x in r) / (G - 1))
            adv += [(x - mu) / (sd + 1e-9) for x in r]
    return adv


def surrogate_grad(rho, A, eps_lo, eps_hi):
    """d/dθ of min(ρA, clip(ρ, 1-ε, 1+ε')A) with ρ = exp(θ + const) (θ = 0)."""
    if 1 - eps_lo <= rho <= 1 + eps_hi:
        return rho * A
    clipped = min(max(rho, 1 - eps_lo), 1 + eps_hi)
    return rho * A if rho * A < clipped * A else 0.0


def lambda_f(lens, lam, r):
    """Eq. 11-16: f = G softmax((1 + r z)^λ), z with the sample std (z = 0 when σ = 0)."""
    G = len(lens)
    mu = sum(lens) / G
    sd = math.sqrt(sum((x - mu) ** 2 for x in lens) / (G - 1))
    z = [(x - mu) / sd if sd > 0 else 0.0 for x in lens]
    g = [(1 + r * zi) ** lam for zi in z]
    e = [math.exp(x) for x in g]
    return [G * x / sum(e) for x in e]


def expected_step_grad(ids, data, G, method, scope, lam, r, eps_lo, eps_hi, adv):
    """-dJ/dθ for one optimizer step holding the samples ``ids`` (whole groups for 'group')."""
    lengths = [int(x) for x in data["lengths"]]
    grad = torch.zeros(data["N"], T_MAX, dtype=torch.float64)
    groups = sorted({i // G for i in ids})
    step_tokens = sum(lengths[i] for i in ids)
    for p in groups:
        members = list(range(p * G, (p + 1) * G))
        lens = [lengths[i] for i in members]
        S = sum(lens)
        f = lambda_f(lens, lam, r) if method == "lambda" else None
        for k, i in enumerate(members):
            if scope == "group":
                c = {"grpo": 1 / (G * lens[k]),  # Eq. 4: (1/G) Σ_i (1/|o_i|) Σ_t
                     "dapo": 1 / S,  # Eq. 5: (1/Σ|o_i|) Σ_i Σ_t
                     "dr_grpo": 1 / G,  # Eq. 6: (1/G) Σ_i Σ_t
                     "lambda": f[k] / S if f else None}[method] / len(groups)  # Eq. 7; mean over groups
            else:  # OpenRLHF's global token mean with f (Eq. 8-10, 16) multiplying each response
                w = {"grpo": (S / G) / lens[k], "dapo": 1.0, "dr_grpo": S / G, "lambda": f[k] if f else None}[method]
                c = w / step_tokens
            for t in range(lens[k]):
                rho = math.exp(float(data["new"][i, t] - data["old"][i, t]))
                grad[i, t] = -c * surrogate_grad(rho, adv[i], eps_lo, eps_hi)
    return grad


def r_of(settings):
    """λ-GRPO's r from the settings' weighting block (None for a method without one)."""
    return getattr(settings.weighting.params, "r", None)


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,method", CONFIGS)
def test_every_optimizer_step_is_the_papers_objective(size, method, monkeypatch):
    cfg, args, settings = config_args(size, method)
    assert settings.scope == "group"  # the paper configs compute Eq. 4-7 as written
    B, G = args.rollout.batch_size, args.rollout.n_samples_per_prompt
    res = run_batch(size, method, B, monkeypatch, seed=CONFIGS.index((size, method)))
    W, data, record = res["W"], res["data"], res["record"]
    gas = args.train.batch_size // args.train.micro_batch_size // W
    steps = B * G // args.train.batch_size
    # equal work: every rank ran the same micro-batches, optimizer steps and collectives
    assert [len(rec) for rec in record] == [steps] * W
    assert len(set(res["dp"].calls)) == 1
    adv = paper_advantages(data["rewards"], G, args.algo.advantage.estimator)
    lo, hi = args.actor.eps_clip_low_high
    seen_all = []
    lams = []
    for k in range(steps):
        ids = sorted(i for r in range(W) for i in record[r][k]["ids"])
        seen_all += ids
        for r in range(W):  # whole groups on every rank in every step
            mine = record[r][k]["ids"]
            assert len(mine) == args.train.batch_size // W == args.train.micro_batch_size * gas
            assert all(sum(1 for i in mine if i // G == p) == G for p in {i // G for i in mine})
        lam = record[0][k]["lam"]
        assert all(record[r][k]["lam"] == lam for r in range(W))
        lams.append(lam)
        want = expected_step_grad(ids, data, G, method, "group", lam, r_of(settings), lo, hi, adv)
        got = record[0][k]["grad"]
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-13), (k, float((got - want).abs().max()))
    assert sorted(seen_all) == list(range(data["N"]))  # each sample trained once per epoch
    if method == "lambda":
        assert len(set(lams)) == steps  # λ moved at every optimizer step (its own SGD)


def test_batch_scope_is_openrlhfs_global_token_mean(monkeypatch):
    """``lgrpo.scope batch`` stays available: f times OpenRLHF's window token mean."""
    for method in ("grpo", "lambda"):
        cfg, args, _ = config_args("1.5b", method, scope="batch")
        res = run_batch("1.5b", method, args.rollout.batch_size, monkeypatch, scope="batch", seed=5)
        adv = paper_advantages(res["data"]["rewards"], res["G"], args.algo.advantage.estimator)
        for k, step in enumerate(res["record"][0]):
            ids = sorted(i for r in range(res["W"]) for i in res["record"][r][k]["ids"])
            want = expected_step_grad(ids, res["data"], res["G"], method, "batch", step["lam"],
                                      r_of(res["settings"]), *args.actor.eps_clip_low_high, adv)
            assert torch.allclose(step["grad"], want, rtol=1e-9, atol=1e-13)
            # and it is not Eq. 4 (GRPO) / Eq. 7 (λ): groups with longer responses count differently
            eq = expected_step_grad(ids, res["data"], res["G"], method, "group", step["lam"],
                                    r_of(res["settings"]), *args.actor.eps_clip_low_high, adv)
            assert not torch.allclose(step["grad"], eq, rtol=1e-3)


def test_stock_sample_shuffle_breaks_groups_and_the_patch_keeps_them(monkeypatch):
    cfg, args, _ = config_args("1.5b", "dapo")
    G = args.rollout.n_samples_per_prompt
    stock = run_batch("1.5b", "dapo", args.rollout.batch_size, monkeypatch, patched=False, seed=3)
    split = 0
    for k in range(len(stock["record"][0])):
        ids = [i for r in range(stock["W"]) for i in stock["record"][r][k]["ids"]]
        split += sum(1 for p in {i // G for i in ids} if sum(1 for i in ids if i // G == p) != G)
    assert split > 0  # OpenRLHF's DataLoader(shuffle=True) spreads groups over optimizer steps


def _prompt_batches(n_prompts, B):
    """Rollout batch sizes from OpenRLHF's own prompt draw (batch-size-1 prompt loader)."""
    it = iter([(["d"], [f"p{i}"], [""], [None]) for i in range(n_prompts)])
    sizes = []
    while True:
        prompts, _, _, exhausted = _collect_prompt_batch(it, B)
        if prompts:
            sizes.append(len(prompts))
        if exhausted:
            return sizes


@pytest.mark.skipif(not TRAIN_PARQUET.exists(), reason="needs the training set under DATA_SRC (make data)")
def test_training_set_is_cut_to_whole_rollout_batches(tmp_path):
    import pandas as pd

    n = len(pd.read_parquet(TRAIN_PARQUET, columns=["gt_answer"]))
    assert n == 8523
    for size, method in CONFIGS:
        cfg = reproduce.load_config(size, method)
        B = int(cfg["openrlhf"]["rollout.batch_size"])
        assert _prompt_batches(n, B) == [B] * 66 + [75]  # uncut: OpenRLHF trains a 75-prompt batch
    out = tmp_path / "p.jsonl"
    kept = reproduce.prepare_prompts(TRAIN_PARQUET, out, "qwen-boxed", "question", "gt_answer", multiple_of=128, seed=42)
    manifest = reproduce.json.loads(reproduce.prompt_manifest_path(out).read_text())
    assert kept == count_prompts(str(out)) == 8448 == 66 * 128
    assert manifest["dropped"] == 75 == len(set(manifest["dropped_rows"])) and manifest["source_rows"] == n
    assert _prompt_batches(kept, 128) == [128] * 66
    # the launcher's check counts the same file
    for size, method in CONFIGS:
        _, args, _ = config_args(size, method)
        lay = dict(rollout_batch=args.rollout.batch_size, group_size=args.rollout.n_samples_per_prompt,
                   rollout_micro=args.rollout.micro_batch_size,
                   actors=args.actor.num_nodes * args.actor.num_gpus_per_node,
                   train_batch=args.train.batch_size, train_micro=args.train.micro_batch_size)
        assert layout_problems(prompts=kept, **lay) == []
        assert any("not a multiple of rollout.batch_size" in p for p in layout_problems(prompts=n, **lay))


def test_the_uncut_last_batch_hangs_stock_openrlhf_and_is_refused_by_the_patch(monkeypatch):
    """The 75-prompt batch of the uncut set on the 1.5B/3B layout (4 ranks, micro 8, gas 8)."""
    cfg, args, _ = config_args("1.5b", "grpo")
    G = args.rollout.n_samples_per_prompt
    samples, data = synthetic_rollout(75, G, 0)
    em = experience_maker(args)
    exps = em.split_rollout_samples(samples)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    bufs = [NaiveReplayBuffer(8, 0, True, False, False) for _ in range(4)]
    ts = [types.SimpleNamespace(replay_buffer=b, strategy=types.SimpleNamespace(is_rank_0=lambda: False)) for b in bufs]
    hand_to_ranks(exps, ts, monkeypatch)
    assert [len(b.items) for b in bufs] == [160, 160, 160, 120]  # OpenRLHF's split of 600 samples
    assert [len(b.items) // 8 for b in bufs] == [20, 20, 20, 15]  # micro-batches per rank
    # stock: the short rank stops issuing collectives; the others wait (NCCL: until its timeout)
    with pytest.raises((threading.BrokenBarrierError, CollectiveMismatch)):
        run_batch("1.5b", "grpo", 75, monkeypatch, patched=False, timeout=3.0)
    # the package: every rank refuses before its first step, with the reason
    with pytest.raises(ValueError, match="not a whole number of optimizer steps"):
        run_batch("1.5b", "grpo", 75, monkeypatch, patched=True, timeout=3.0)
    import openrlhf.trainer.ray.ppo_actor as pa

    assert pa.DataLoader is torch.utils.data.DataLoader  # the stand-in is gone after ppo_train, also on error


def test_group_shuffle_sampler_and_its_refusals():
    from openrlhf.trainer.ppo_utils.experience import split_experience_batch

    from repro.trainers.openrlhf.weighting import (
        GROUP_ID_KEY,
        GroupShuffleSampler,
        attach_group_info,
        check_step_layout,
        group_members,
    )

    _, args, _ = config_args("1.5b", "dapo")
    samples, _ = synthetic_rollout(6, 8, 1)
    exps = experience_maker(args).split_rollout_samples(samples)
    attach_group_info(exps, 8)
    items = [it for e in exps for it in split_experience_batch(e)]
    order = list(range(len(items)))
    random.Random(0).shuffle(order)
    items = [items[i] for i in order]  # groups found by their id, not by where they sit
    groups = group_members(items)
    assert [sorted(int(items[r].sequences[0]) for r in g) for g in groups] == \
        [list(range(p * 8, (p + 1) * 8)) for p in range(6)]
    torch.manual_seed(0)
    sampler = GroupShuffleSampler(groups)
    passes = [list(sampler), list(sampler)]
    for rows in passes:
        assert sorted(rows) == list(range(48)) and len(rows) == len(sampler)
        blocks = [rows[k:k + 8] for k in range(0, 48, 8)]
        assert sorted(sorted(b) for b in blocks) == sorted(sorted(g) for g in groups)  # whole groups, together
    assert passes[0] != passes[1]  # a new group order each epoch
    with pytest.raises(ValueError, match="partial group"):
        group_members(items[:-1])
    items[0].info.pop(GROUP_ID_KEY)
    with pytest.raises(KeyError, match="not patched"):
        group_members(items)
    check_step_layout(48, 8, 3, 8)
    with pytest.raises(ValueError, match="not a multiple of the group size"):
        check_step_layout(48, 4, 1, 8)
    with pytest.raises(ValueError, match="whole number of optimizer steps"):
        check_step_layout(40, 8, 3, 8)
