"""λ's data-parallel gradient average, with 2 real CPU processes on the gloo backend."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repro import objective as O

STEPS = 3


def make_step(step, n_groups=4, G=4, T=6):
    g = torch.Generator().manual_seed(100 + step)
    lengths = torch.randint(1, T + 1, (n_groups, G), generator=g).double()
    N = n_groups * G
    mask = torch.zeros(N, T, dtype=torch.bool)
    for i, n in enumerate(lengths.flatten().long().tolist()):
        mask[i, :n] = True
    logp = -torch.rand(N, T, generator=g, dtype=torch.float64)
    old = logp + 0.2 * torch.randn(N, T, generator=g, dtype=torch.float64)
    adv = O.eq3_group_advantages(torch.randn(n_groups, G, generator=g, dtype=torch.float64)).flatten()
    perm = torch.randperm(N, generator=g)  # groups end up spread over both ranks
    return dict(lengths=lengths, mask=mask, logp=logp, old=old, adv=adv, perm=perm,
                gl=lengths.repeat_interleave(G, 0), idx=torch.arange(G).repeat(n_groups))


def run_steps(rank, world):
    lam = O.LearnableLambda(dtype=torch.float64)
    traj = []
    for step in range(STEPS):
        b = make_step(step)
        denom = O.step_denominator("group", b["lengths"])
        mine = b["perm"][rank::world]
        for chunk in torch.split(mine, 3):  # micro-batches of 3 with gradient accumulation
            out = O.policy_loss(b["logp"][chunk], b["old"][chunk], b["adv"][chunk],
                                b["mask"][chunk], b["gl"][chunk], b["idx"][chunk],
                                method="lambda", lam=lam.param, r=1 / 9, denominator=denom)
            (out.loss * world).backward()  # the DP convention: rank losses × W, gradients averaged
        lam.step()
        traj.append(lam.value)
    return traj


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        traj = run_steps(rank, world)
    finally:
        dist.barrier()  # no rank tears gloo down while the other still talks to it
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(traj, fh)


def test_two_gloo_ranks_agree_with_single_process(tmp_path):
    single = run_steps(0, 1)
    assert abs(single[-1]) > 1e-6  # λ really moved, so the comparison says something
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1  # identical λ on both ranks, bit for bit
    assert r0 == pytest.approx(single, rel=1e-12, abs=1e-15)
