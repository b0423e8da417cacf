"""Cost of the λ-weighted objective against a plain DAPO token-mean loss (``make bench``).

Forward + backward on 64 groups × 8 responses × 1024 tokens (random lengths up to 1024), on CPU.
Both losses compute the same by-products (clip fraction, the PPO KL estimate), as a training
loss does. Runs are interleaved (baseline, λ, baseline, λ, ...) so that load on a shared machine
hits both alike (``repro.speed.pairs``). Target (issue 23): ratio of best times <= 1.03.

Two comparisons: λ-GRPO's ``policy_loss`` against a plain DAPO token mean written out with
autograd (the issue's baseline), and against ``policy_loss`` with DAPO's weights (f = 1): the
same code on the tokens, so the second ratio is what the λ weighting itself costs.

    python -m repro.speed.objective [--reps 40] [--inner 5] [--threads 2] [--dtype float32]
"""
from __future__ import annotations

import argparse

import torch

from repro import objective as O
from repro.speed.pairs import CLOCKS, format_summary, time_pairs


def make_batch(groups=64, G=8, T=1024, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 8, T + 1, (groups, G), generator=g).to(dtype)
    N = groups * G
    mask = torch.arange(T)[None, :] < lengths.flatten()[:, None]
    logp = -torch.rand(N, T, generator=g, dtype=dtype)
    old = logp + 0.05 * torch.randn(N, T, generator=g, dtype=dtype)
    adv = O.eq3_group_advantages(torch.randint(0, 2, (groups, G), generator=g).to(dtype)).flatten()
    return dict(lengths=lengths, mask=mask, logp=logp, old=old, adv=adv,
                gl=lengths.repeat_interleave(G, 0), idx=torch.arange(G).repeat(groups))


def dapo_token_mean(logp, old, adv, mask, eps=0.2):
    """The baseline: one token mean over the batch, as a plain DAPO loss computes it."""
    log_ratio = logp - old
    ratio = torch.exp(log_ratio)
    a = adv[:, None]
    s1, s2 = ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a
    surr = torch.minimum(s1, s2)
    m = mask.to(logp.dtype)
    n = m.sum()
    loss = -(surr * m).sum() / n
    clip_frac = ((surr != s1) & mask).sum() / n
    ppo_kl = -(log_ratio.detach() * m).sum() / n
    return loss, clip_frac, ppo_kl


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40, help="interleaved pairs of timings")
    ap.add_argument("--inner", type=int, default=5, help="calls per timing (evens out jitter)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--clock", nargs="+", default=["wall", "cpu"], choices=sorted(CLOCKS),
                    help="wall: elapsed time (the target's); cpu: this process's CPU time (the work)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="instead of timing: N calls of each loss under torch.profiler, the ops that "
                         "take the time (self CPU) and how many ops each call dispatches")
    args = ap.parse_args(argv)
    if args.reps < 2 or args.inner < 1 or args.threads < 0 or args.profile < 0:
        ap.error("--reps must be >= 2, --inner >= 1, --threads >= 0, --profile >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    b = make_batch(dtype=dtype)
    lam = O.LearnableLambda(init=0.3, dtype=dtype)
    denom = O.step_denominator("group", b["lengths"])
    logp = b["logp"].clone().requires_grad_()

    def run_base():
        logp.grad = None
        loss, _, _ = dapo_token_mean(logp, b["old"], b["adv"], b["mask"])
        loss.backward()

    def run_dapo():
        logp.grad = None
        out = O.policy_loss(logp, b["old"], b["adv"], b["mask"], b["gl"], b["idx"],
                            method="dapo", denominator=denom)
        out.loss.backward()

    def run_lambda():
        logp.grad = None
        lam.param.grad = None
        out = O.policy_loss(logp, b["old"], b["adv"], b["mask"], b["gl"], b["idx"],
                            method="lambda", lam=lam.param, r=O.PAPER_R, denominator=denom)
        out.loss.backward()

    if args.profile:
        return profile({"DAPO token mean": run_base, "DAPO policy_loss (f = 1)": run_dapo,
                        "lambda-GRPO policy_loss": run_lambda}, args.profile)
    N, T = b["logp"].shape
    print(f"objective fwd+bwd, {N} responses x {T} tokens ({int(b['mask'].sum())} response "
          f"tokens), {args.dtype}, {torch.get_num_threads()} threads, {args.reps} interleaved pairs "
          f"of {args.inner} calls each (target: ratio of best times <= 1.03)", flush=True)
    out = {}
    for clock in args.clock:
        out[clock] = time_pairs(run_base, run_lambda, reps=args.reps, inner=args.inner, warmup=3,
                                clock=clock).summary()
        print(format_summary("DAPO token mean", "lambda-GRPO policy_loss", out[clock]), flush=True)
    for clock in args.clock:
        key = f"{clock}_same_code"
        out[key] = time_pairs(run_dapo, run_lambda, reps=args.reps, inner=args.inner, warmup=3,
                              clock=clock).summary()
        print(format_summary("DAPO policy_loss (f = 1)", "lambda-GRPO policy_loss", out[key]), flush=True)
    return out


def profile(runs: dict, n: int, top: int = 12) -> dict:
    """Where each loss's time goes: its ``top`` ops by self CPU time over ``n`` calls (after one
    warm-up call), and the number of ops one call dispatches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out = {}
    for name, run in runs.items():
        run()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                run()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        out[name] = {"self_cpu_ms_per_call": total / n / 1e3,
                     "ops_per_call": sum(e.count for e in events) / n}
        print(f"{name}: {out[name]['self_cpu_ms_per_call']:.2f} ms self CPU per call, "
              f"{out[name]['ops_per_call']:.0f} ops per call; top ops:")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
            print(f"    {e.key[:44]:44s} {e.self_cpu_time_total / n / 1e3:7.3f} ms  "
                  f"{100 * e.self_cpu_time_total / total:5.1f} %  x{e.count / n:g}")
    return out


if __name__ == "__main__":
    main()
