"""One rank of the 2-process TRL test (tests/test_trl_ddp.py), started by torchrun with gloo on CPU.

Trains 2 optimizer steps of one group of G = 8 split over the two ranks (4 samples each, micro-
batches of 2), records λ after each step, the gradient it applied, and Eq. 20 computed here from
the lengths and surrogate sums of both ranks (all-gathered in rank order, TRL's process slice) and
the rewards TRL gathered. With ``num_iterations`` μ = 2 (second argument) both steps train on one
generation batch, the second off-policy (ρ = π_θ/π_old ≠ 1, TRL's π_old from generation)."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
from trl_helpers import RecordingTrainer, _logp, make_trainer, tiny_cfg  # noqa: E402

from repro.objective import clipped_surrogate, eq3_group_advantages, eq20_lambda_grad  # noqa: E402

G, R = 8, 0.2


def _gather(local: torch.Tensor, world: int) -> torch.Tensor:
    parts = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def _surrogate_sums(tr, k: int, b: dict, adv: torch.Tensor) -> torch.Tensor:
    """This rank's L_i = Σ_t min(ρA, clip(ρ)A) at the parameters step k used (ρ = 1 on-policy)."""
    model = tr.rec_model_at(tr.rec.states[k]).train()
    logp = _logp(model, b).double()
    old = b.get("old_per_token_logps")
    old = logp if old is None else old.double()
    surr, _ = clipped_surrogate(logp, old, adv.view(-1, 1))
    return (surr * b["completion_mask"]).sum(1)


def main(out: str, mu: int) -> None:
    lr = 1e-3 if mu > 1 else 5e-5  # with μ = 2, a policy step large enough that ρ ≠ 1 shows
    cfg = tiny_cfg("lambda", G=G, per_device=2, ga=2, prompts_per_step=1, steps=2, max_tokens=16,
                   num_iterations=mu, extra=["weighting.lambda.init=0.5", f"weighting.r={R}",
                                             "weighting.lambda.lr=1.0", f"trl.learning_rate={lr}"])
    tr = make_trainer(cfg, os.path.join(out, "run"), cls=RecordingTrainer)
    tr.train()
    rank, world = dist.get_rank(), dist.get_world_size()
    want, off = [], []
    for k, used in enumerate(tr.rec_step_batches):
        (i,) = used
        b, rw = tr.rec_batches[i], tr.rec_rewards[i]
        B = b["completion_mask"].shape[0]
        lengths = _gather(b["completion_mask"].sum(1).double(), world).view(-1, G)
        adv_all = eq3_group_advantages(rw[:, 0].double().view(-1, G))
        local_adv = adv_all.reshape(-1)[rank * B:(rank + 1) * B]  # TRL's process slice
        L = _gather(_surrogate_sums(tr, k, b, local_adv), world).view(-1, G)
        off.append(float((L - lengths * adv_all).abs().max()))
        want.append(float(-eq20_lambda_grad(lengths, L, tr.rec_lambda_before[k], r=R).mean()))
    res = {"rank": rank, "world": world, "lambda": [r["lambda"] for r in tr.lgrpo_records],
           "iteration": [r["iteration"] for r in tr.lgrpo_records], "off_policy": off,
           "grads": tr.rec_lambda_grads, "want": want, "local_samples": [int(b["completion_mask"].shape[0]) for b in tr.rec_batches],
           "steps": int(tr.state.global_step)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
