"""Build the starting checkpoint of the CPU reproduction from scratch (supervised, seeded).

    python -m repro.trainers.pretrain            # -> repro/assets/tiny-sum (the committed one)
    python -m repro.trainers.pretrain --out /tmp/x --steps 2

A ``Qwen2ForCausalLM`` from a ``Qwen2Config`` (2 layers, hidden 128, ~0.5 M parameters) learns
the synthetic sum task (``repro.tasks.arith``) from responses written in the three styles
(direct / terse / verbose, equal shares), with the loss on response tokens only; batch 128,
AdamW lr 2e-3. Two stages by default (800 + 500 steps), each with a fresh AdamW, a 50-step
linear warm-up and cosine decay to 10%: after 800 steps the model still cannot add (about 5%
held-out accuracy), the second stage brings it into the useful range for RL. The committed
checkpoint was made with stage 0 in one call and stage 1 in a second call
(``--init <stage-0 folder> --first-stage 1 --steps 500``), which gives the same weights as one
call. ``pretrain.json`` next to the weights records every stage's command, seed, wall time and
losses, and a held-out greedy evaluation on both task variants.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from repro.runs import library_versions, write_json_atomic
from repro.tasks.arith import (STYLES, VARIANTS, encode_prompt, encode_response,
                               sample_problems, solution)
from repro.trainers.rollout import ASSET_DIR, build_model, evaluate, save_policy
from repro.tasks.arith import build_tokenizer


def make_batch(tok, rng: random.Random, batch_size: int):
    """Right-padded prompt+response sequences; labels are -100 except on response tokens."""
    seqs, labels = [], []
    for p in sample_problems(batch_size, rng, "train"):
        style = rng.choice(STYLES)
        pr, rs = encode_prompt(tok, p), encode_response(tok, solution(p, style))
        seqs.append(pr + rs)
        labels.append([-100] * len(pr) + rs)
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), T), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, :len(s)] = torch.tensor(s)
        lab[i, :len(l)] = torch.tensor(l)
        att[i, :len(s)] = 1
    return ids, att, lab


def train_stage(model, tok, *, steps: int, batch_size: int, lr: float, warmup: int, seed: int,
                desc: str = "pretrain") -> list[float]:
    """One supervised stage: a fresh AdamW, linear warm-up then cosine decay to 10% of ``lr``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(s: int) -> float:
        if s < warmup:
            return lr * (s + 1) / warmup
        frac = (s - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True)
    for s in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        ids, att, lab = make_batch(tok, rng, batch_size)
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def stage_seed(seed: int, stage: int) -> int:
    return seed if stage == 0 else seed + 7919 * stage


def pretrain(out: str | Path, *, steps=(800, 500), batch_size: int = 128, lr: float = 2e-3,
             warmup: int = 50, seed: int = 0, eval_problems: int = 500, threads: int = 0,
             init: str | Path | None = None, first_stage: int = 0) -> dict:
    """Stages of ``steps[i]`` supervised steps each (stage 0 builds the model from scratch with
    ``torch.manual_seed(seed)``; stage i > 0 continues with a fresh optimizer and schedule,
    seeded ``seed + 7919 i``). ``init``/``first_stage`` continue a saved stage-(k-1) model from
    stage k: running the stages in one call or split over calls gives the same weights."""
    steps = [int(x) for x in ([steps] if isinstance(steps, int) else steps)]
    if not steps or min(steps) < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps, batch_size and lr must be positive (got {steps}, {batch_size}, {lr})")
    if threads:
        torch.set_num_threads(threads)
    tok = build_tokenizer()
    stages = []
    if init is not None:
        from repro.trainers.rollout import load_policy

        model, _ = load_policy(init)
        prev = Path(init) / "pretrain.json"
        if prev.is_file():
            import json

            stages = json.loads(prev.read_text()).get("stages", [])
    else:
        if first_stage:
            raise ValueError("first_stage > 0 needs --init (the model saved after the previous stage)")
        torch.manual_seed(seed)
        model = build_model(tok)
    n_params = sum(p.numel() for p in model.parameters())
    for i, n in enumerate(steps, start=first_stage):
        t0 = time.time()
        losses = train_stage(model, tok, steps=n, batch_size=batch_size, lr=lr, warmup=warmup,
                             seed=stage_seed(seed, i), desc=f"pretrain stage {i}")
        stages.append({"stage": i, "steps": n, "seed": stage_seed(seed, i), "lr": lr,
                       "warmup": warmup, "batch_size": batch_size, "wall_s": round(time.time() - t0, 1),
                       "loss_first": losses[0], "loss_last_50": sum(losses[-50:]) / len(losses[-50:]),
                       "command": sys.argv})

    out = Path(out)
    save_policy(model, tok, out)
    test = sample_problems(eval_problems, random.Random(10_000 + seed), "test")
    model.eval()
    evals = {name: evaluate(model, tok, test, max_new_tokens=v.max_new_tokens)
             for name, v in VARIANTS.items()}
    info = {"seed": seed, "steps": sum(s["steps"] for s in stages), "params": n_params,
            "wall_s": round(sum(s["wall_s"] for s in stages), 1), "stages": stages,
            "loss_last_50": stages[-1]["loss_last_50"], "eval_greedy": evals,
            "versions": library_versions()}
    write_json_atomic(out / "pretrain.json", info)
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ASSET_DIR))
    ap.add_argument("--steps", type=int, nargs="+", default=[800, 500],
                    help="steps per stage (each stage: fresh AdamW, warm-up + cosine)")
    ap.add_argument("--init", default=None, help="continue from this saved model ...")
    ap.add_argument("--first-stage", type=int, default=0, help="... as stage number N")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-problems", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    info = pretrain(a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=a.warmup,
                    seed=a.seed, eval_problems=a.eval_problems, threads=a.threads,
                    init=a.init, first_stage=a.first_stage)
    print(f"wrote {a.out}: {info['params']} parameters, {info['wall_s']} s, "
          f"loss {info['loss_last_50']:.3f}")
    for name, e in info["eval_greedy"].items():
        print(f"  {name}: greedy acc {e['accuracy']:.3f}, length {e['response_length_mean']:.1f}, "
              f"styles {e['style_share']}")


if __name__ == "__main__":
    main()
