"""A short λ-GRPO run on the ``sum`` task through the real TRL trainer and the package's entry
point: λ rises (longer responses earn more there), the metrics JSONL is the package's schema, and a
run resumed from a TRL checkpoint continues λ's trajectory (issue 12)."""
from __future__ import annotations

import shutil

import pytest
import torch

from trl_helpers import tiny_cfg

from repro.runs import Run
from repro.trainers.trl.run import dry_run, last_checkpoint, train
from repro.trainers.trl.trainer import STATE_FILE

torch.set_num_threads(1)

STEPS = 3


def _cfg():
    # 2 prompts x G 8 per step, 2 micro-batches of 8; λ lr 5 so that λ moves visibly in 3 steps
    return tiny_cfg("lambda", G=8, per_device=8, ga=2, prompts_per_step=2, steps=STEPS, max_tokens=40,
                    extra=["weighting.lambda.lr=5.0", "trl.save_strategy=steps", "trl.save_steps=1",
                           "reward.workers=1"])


def test_sum_run_lambda_rises_and_resume_continues(tmp_path):
    run, tr = train(_cfg(), tmp_path / "full")
    recs = Run(run.path).metrics()  # validated against repro.runs.REQUIRED
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
    assert [r["rollout"] for r in recs] == list(range(1, STEPS + 1))
    lam = [r["lambda"] for r in recs]
    assert lam[-1] > 0.05, lam  # λ rises on sum: the within-group length-advantage covariance is > 0
    assert sum(r["len_adv_cov"] > 0 for r in recs) >= 2
    assert all(r["trainer"] == "trl" and r["task"] == "sum" for r in recs)
    assert run.is_done() and (run.path / "final" / "config.json").is_file()
    # λ's state is in every TRL checkpoint, in the contract's format
    st = torch.load(run.path / "checkpoints" / "checkpoint-1" / STATE_FILE, weights_only=True)
    assert st["weighting"]["lambda"] == pytest.approx(lam[0]) and st["weighting"]["optimizer_steps"] == 1

    # resume from checkpoint-1 in a copy of the run folder (later checkpoints removed)
    part = tmp_path / "resumed"
    shutil.copytree(run.path, part)
    for k in range(2, STEPS + 1):
        shutil.rmtree(part / "checkpoints" / f"checkpoint-{k}")
    shutil.rmtree(part / "final")
    (part / "DONE").unlink()
    assert last_checkpoint(part).endswith("checkpoint-1")
    run2, tr2 = train(_cfg(), part, resume=True)
    recs2 = Run(part).metrics()
    assert [r["step"] for r in recs2] == list(range(1, STEPS + 1))  # lines after step 1 rewritten once
    assert recs2[0] == recs[0]
    assert tr2.lgrpo_rollouts == STEPS
    # the resumed run continues from λ_1 (not from 0); TRL restores its RNG, so generation and hence
    # λ's whole trajectory match the uninterrupted run
    assert [r["lambda"] for r in recs2] == pytest.approx(lam, rel=1e-5, abs=1e-7)


def test_dry_run_prints_config_and_machine_check(capsys):
    from repro.trainers.trl.run import REPO, load_config

    cfg = load_config(REPO / "repro" / "configs" / "trl" / "qwen2.5-1.5b-1gpu.yaml", "lambda")
    rc = dry_run(cfg, gpu=True)
    out = capsys.readouterr().out
    assert "### machine check:" in out and "needs 1 CUDA GPU(s); this machine has 0" in out
    assert "Qwen/Qwen2.5-1.5B" in out and "loss_type: dr_grpo" in out
    assert "### λ-seam checks: ok" in out and rc == 0  # GRPOConfig built (bf16 off: no GPU here)
