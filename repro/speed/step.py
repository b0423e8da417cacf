"""Cost of a λ-GRPO optimizer step against a DAPO step on the same rollout (``make bench``).

Two steps, each timed as interleaved pairs in one process (``repro.speed.pairs``), on CPU:

* ``reference``: the reference trainer's optimizer step (``repro.trainers.reference.optimizer_step``:
  forward of the tiny-sum policy, ``policy_loss``, backward, clipping, AdamW, λ's SGD), with the
  CPU configs of DAPO and λ-GRPO (task ``sum``), on one rollout that the policy generated.
* ``openrlhf``: OpenRLHF 0.11.2's ``ActorPPOTrainer.ppo_train`` over one replay buffer, through
  OpenRLHF's own classes as ``tests/test_openrlhf_steps.py`` drives them (experience maker's
  advantages, ``NaiveReplayBuffer``, ``ppo_train`` -> ``training_step`` -> ``Actor.forward`` ->
  loss), one data-parallel rank: stock ``ActorPPOTrainer`` with the stock ``PolicyLoss`` (DAPO's
  token mean) against ``LambdaActorPPOTrainer`` (group shuffle, ``WeightedPolicyLoss``, λ's SGD)
  with the paper config of λ-GRPO. The policy is the tiny-sum model inside OpenRLHF's ``Actor``.
  Stand-ins, as in the test: the DeepSpeed engine (``_Engine``: 1/gas backward scaling, clipping
  and AdamW at the accumulation boundary, what ZeRO-2 does on one rank), the strategy's
  collectives (one rank: identity), ``torch.cuda.current_device`` (CPU), and where flash_attn /
  vllm are not installed the tests' import stand-ins (``tests/openrlhf_stubs``; never called).

    python -m repro.speed.step [--which reference openrlhf] [--reps 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import random
import types

import torch

from repro.speed.pairs import CLOCKS, format_summary, time_pairs


# ----------------------------------------------------------------------------------------------
# the reference trainer
# ----------------------------------------------------------------------------------------------
def reference_runners(seed: int = 0):
    """(run_dapo, run_lambda, description): one optimizer step each, on the same rollout."""
    from repro.objective import eq3_group_advantages, step_denominator
    from repro.reward import reward
    from repro.tasks.arith import sample_problems
    from repro.trainers.contract import GroupInfo, WeightingState
    from repro.trainers.reference import load_cpu_config, optimizer_step, response_logp
    from repro.trainers.rollout import generate, load_policy

    cfgs = {m: load_cpu_config("sum", m) for m in ("dapo", "lambda")}
    cfg = cfgs["lambda"]
    for k in ("prompts_per_rollout", "group_size", "budget", "adv_scale", "scope", "kl_coef", "lr"):
        if getattr(cfgs["dapo"], k) != getattr(cfg, k):
            raise ValueError(f"the DAPO and λ-GRPO CPU configs differ in {k}: not the same step")
    P, G = cfg.prompts_per_rollout, cfg.group_size
    model, tok = load_policy(cfg.checkpoint_path)
    torch.manual_seed(seed)
    problems = sample_problems(P, random.Random(seed), "train")
    ro = generate(model, tok, problems, n=G, max_new_tokens=cfg.budget, temperature=cfg.temperature)
    rewards = torch.tensor([reward(t, problems[i // G].answer, cfg.grader)
                            for i, t in enumerate(ro.texts)]).view(P, G)
    adv = eq3_group_advantages(rewards, scale=cfg.adv_scale).reshape(-1)
    lengths = ro.lengths.view(P, G).float()
    info = GroupInfo.from_groups(lengths)
    denom = step_denominator(cfg.scope, lengths)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    with torch.no_grad():
        old_logp, _ = response_logp(model, ro)
        ref_logp = response_logp(ref, ro)[0] if ref is not None else None
    model.train()

    def runner(method):
        c = cfgs[method]
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        ws = WeightingState(c.weighting)

        def run():
            optimizer_step(m, opt, ws, c, ro, old_logp, adv, info, denom, ref_logp)
            ws.pop_fstats()  # as the trainer's metrics line does every step

        run.model, run.weighting_state = m, ws  # what a test looks at after a step
        return run

    desc = (f"reference trainer optimizer step (tiny-sum policy, task sum, {P} prompts x G {G}, "
            f"{int(ro.lengths.sum())} response tokens, KL {cfg.kl_coef})")
    return runner("dapo"), runner("lambda"), desc


# ----------------------------------------------------------------------------------------------
# OpenRLHF's ppo_train
# ----------------------------------------------------------------------------------------------
class _Engine(torch.nn.Module):
    """Stand-in for the DeepSpeed engine around the policy on one rank (ZeRO-2 without
    partitions): ``backward`` scales by 1/gas, ``step`` clips and steps AdamW at the boundary."""

    def __init__(self, module, gas: int, lr: float, max_norm: float):
        super().__init__()
        self.module, self.gas, self.max_norm, self.micro_steps = module, gas, max_norm, 0
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=lr)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def is_gradient_accumulation_boundary(self):
        return (self.micro_steps + 1) % self.gas == 0

    def backward(self, loss):
        (loss / self.gas).backward()

    def step(self):
        if self.is_gradient_accumulation_boundary():
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.micro_steps += 1


def _openrlhf_args(method: str, prompts: int, train_batch: int, micro_batch: int):
    from repro.trainers.openrlhf import reproduce
    from repro.trainers.openrlhf.cli_check import parse_train_ppo_ray

    cfg = reproduce.load_config("1.5b", method)
    args, _ = parse_train_ppo_ray(reproduce.flags_from(cfg["openrlhf"]))
    args.actor.num_nodes, args.actor.num_gpus_per_node = 1, 1  # one data-parallel rank
    args.rollout.batch_size, args.train.batch_size = prompts, train_batch
    args.train.micro_batch_size = micro_batch
    return args, reproduce.settings_of(cfg)


def _importable_openrlhf() -> None:
    """OpenRLHF imports flash_attn and vllm at module level (GPU-only; never called on this
    path): where they are absent, use the tests' import stand-ins (``tests/openrlhf_stubs``),
    appended after site-packages so that a real install wins, as ``tests/openrlhf_cpu.py`` does."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    stubs = Path(__file__).resolve().parents[2] / "tests" / "openrlhf_stubs"
    if any(importlib.util.find_spec(n) is None for n in ("flash_attn", "vllm")):
        if not stubs.is_dir():
            raise SystemExit(f"flash_attn/vllm are not installed and {stubs} is missing: "
                             "cannot import OpenRLHF on this machine")
        if str(stubs) not in sys.path:
            sys.path.append(str(stubs))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def openrlhf_runners(seed: int = 0, prompts: int = 16, train_batch: int = 64, micro_batch: int = 8):
    """(run_dapo, run_lambda, description): one ``ppo_train`` over the same replay buffer each."""
    _importable_openrlhf()
    from openrlhf.models import Actor
    from openrlhf.models.loss import PolicyLoss
    from openrlhf.trainer.ppo_utils.experience import Experience
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer

    from repro.tasks.arith import sample_problems
    from repro.trainers.openrlhf.local_actor import current_device_as
    from repro.trainers.openrlhf.patches import LambdaActorPPOTrainer, LambdaExperienceMaker
    from repro.trainers.rollout import ASSET_DIR, generate, load_policy
    from repro.reward import reward

    model, tok = load_policy(ASSET_DIR)
    args, settings = _openrlhf_args("lambda", prompts, train_batch, micro_batch)
    G = args.rollout.n_samples_per_prompt
    torch.manual_seed(seed)
    problems = sample_problems(prompts, random.Random(seed), "train")
    ro = generate(model, tok, problems, n=G, max_new_tokens=64)
    seqs = torch.cat([ro.prompt_ids, ro.response_ids], dim=1)
    att = torch.cat([ro.prompt_mask, ro.response_mask], dim=1)
    am = ro.response_mask.bool()
    actor0 = Actor(model)
    actor0.packing_samples = False  # set by Actor.__init__ only when it loads a path itself
    with torch.no_grad():
        old = actor0(seqs, am, attention_mask=att)
    rewards = torch.tensor([reward(t, problems[i // G].answer) for i, t in enumerate(ro.texts)],
                           dtype=torch.float32)
    N = seqs.shape[0]

    def samples():
        out = []
        for i in range(N):  # one Experience per response, as samples_generator makes them
            n = am[i].sum().float()[None]
            out.append(Experience(
                sequences=seqs[i:i + 1].clone(), attention_mask=att[i:i + 1].clone(),
                action_mask=am[i:i + 1].clone(), action_log_probs=old[i:i + 1].clone(),
                base_action_log_probs=old[i:i + 1].clone(), kl=torch.zeros_like(old[i:i + 1]),
                rewards=rewards[i:i + 1].clone(), response_length=n,
                total_length=att[i:i + 1].sum().float()[None], info={"reward": rewards[i:i + 1].clone()}))
        return out

    def trainer(method):
        margs, msettings = _openrlhf_args(method, prompts, train_batch, micro_batch)
        maker_cls = LambdaExperienceMaker if method == "lambda" else RemoteExperienceMaker
        em = maker_cls.__new__(maker_cls)
        em.strategy = types.SimpleNamespace(args=margs)
        em.args, em.advantage_estimator = margs, margs.algo.advantage.estimator
        em.kl_ctl = types.SimpleNamespace(value=0.0)
        em.tokenizer = types.SimpleNamespace(pad_token_id=tok.pad_token_id)
        experiences = em.compute_advantages_and_returns(em.split_rollout_samples(samples()))
        gas = margs.train.batch_size // margs.train.micro_batch_size
        strategy = types.SimpleNamespace(
            args=margs, ds_device_mesh={"dp": types.SimpleNamespace(get_group=lambda: None)},
            ring_attn_group=None, accumulated_gradient=gas, is_rank_0=lambda: False,
            all_reduce=lambda d: {k: float(v) for k, v in d.items()},
            backward=lambda loss, actor, optim: actor.model.backward(loss),
            optimizer_step=lambda optim, actor, sched, name=None: actor.model.step(),
            get_grad_norm=lambda actor: 0.0)
        cls = LambdaActorPPOTrainer if method == "lambda" else ActorPPOTrainer
        t = cls.__new__(cls)
        t.strategy, t.args, t.max_epochs, t.dataloader_pin_memory = strategy, margs, margs.train.max_epochs, False
        lo, hi = margs.actor.eps_clip_low_high
        t.actor_loss_fn = PolicyLoss(clip_eps_low=lo, clip_eps_high=hi, dual_clip=margs.actor.dual_clip)
        t.ema_model, t.aux_loss, t.actor_optim = None, False, None
        t.actor_scheduler = types.SimpleNamespace(get_last_lr=lambda: [margs.actor.adam.lr])
        if method == "lambda":
            t.setup_lambda(msettings)
        t.actor = Actor(_Engine(copy.deepcopy(model), gas, margs.actor.adam.lr, margs.actor.max_norm))
        t.actor.packing_samples = False
        with current_device_as(0):  # the buffer's target device (unused: cpu_offload)
            t.replay_buffer = NaiveReplayBuffer(margs.train.micro_batch_size, 0, True, False, False)
        for e in experiences:
            t.replay_buffer.append(e)

        def run():
            with current_device_as("cpu"):  # ppo_train moves each micro-batch to this device
                return t.ppo_train(0.0)

        run.trainer = t  # what a test looks at after a step
        return run

    desc = (f"OpenRLHF 0.11.2 ppo_train, one rank ({prompts} prompts x G {G}, train batch "
            f"{train_batch}, micro-batch {micro_batch}: {N // train_batch} optimizer steps, "
            f"{int(am.sum())} response tokens; stock DAPO vs LambdaActorPPOTrainer, scope {settings.scope})")
    return trainer("dapo"), trainer("lambda"), desc


STEPS = {"reference": reference_runners, "openrlhf": openrlhf_runners}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--reps", type=int, default=10, help="interleaved pairs of timings")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--clock", nargs="+", default=["wall", "cpu"], choices=sorted(CLOCKS),
                    help="wall: elapsed time; cpu: this process's CPU time (the work)")
    args = ap.parse_args(argv)
    if args.reps < 2 or args.threads < 0:
        ap.error("--reps must be >= 2 and --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.which:
        run_dapo, run_lambda, desc = STEPS[name]()
        print(f"{desc}, {torch.get_num_threads()} threads", flush=True)
        for clock in args.clock:
            s = time_pairs(run_dapo, run_lambda, reps=args.reps, inner=1, warmup=1, clock=clock).summary()
            print(format_summary("DAPO step", "lambda-GRPO step", s), flush=True)
            results[(name, clock)] = s
    return results


if __name__ == "__main__":
    main()
