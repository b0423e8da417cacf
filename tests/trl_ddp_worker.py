"""One rank of the 2-process TRL test (tests/test_trl_ddp.py), started by torchrun with gloo on CPU.

Trains 2 optimizer steps of one group of G = 8 split over the two ranks (4 samples each, micro-
batches of 2), records λ after each step, the gradient it applied, and Eq. 20 computed here from
the lengths of both ranks (all-gathered in rank order) and the rewards TRL gathered."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
from trl_helpers import RecordingTrainer, make_trainer, tiny_cfg  # noqa: E402

from repro.objective import eq3_group_advantages, eq20_lambda_grad  # noqa: E402

G, R = 8, 0.2


def main(out: str) -> None:
    cfg = tiny_cfg("lambda", G=G, per_device=2, ga=2, prompts_per_step=1, steps=2, max_tokens=16,
                   extra=["weighting.lambda.init=0.5", f"weighting.r={R}", "weighting.lambda.lr=1.0"])
    tr = make_trainer(cfg, os.path.join(out, "run"), cls=RecordingTrainer)
    tr.train()
    rank, world = dist.get_rank(), dist.get_world_size()
    want = []
    for k, (b, rw) in enumerate(zip(tr.rec_batches, tr.rec_rewards)):
        local = b["completion_mask"].sum(1).double()
        parts = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        lengths = torch.cat(parts).view(-1, G)
        adv = eq3_group_advantages(rw[:, 0].double().view(-1, G))
        want.append(float(-eq20_lambda_grad(lengths, lengths * adv, tr.rec_lambda_before[k], r=R).mean()))
    res = {"rank": rank, "world": world, "lambda": [r["lambda"] for r in tr.lgrpo_records],
           "grads": tr.rec_lambda_grads, "want": want, "local_samples": [int(b["completion_mask"].shape[0]) for b in tr.rec_batches],
           "steps": int(tr.state.global_step)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(sys.argv[1])
