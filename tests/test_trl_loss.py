"""The real TRL GRPOTrainer with the λ seams computes the package's loss exactly (issue 12).

For every weighting method, one optimizer step through ``trl.GRPOTrainer`` (generation, TRL's
shuffle and split of the generation batch, its accumulation over micro-batches smaller than the
group) gives the model gradient of ``repro.objective.policy_loss(scope='group')`` on the same
samples, and λ's applied gradient equals Eq. 20 (``eq20_lambda_grad``), both computed here
independently of the seams."""
from __future__ import annotations

import pytest
import torch

from trl_helpers import (independent_lambda_grad, independent_model_grads, make_trainer, max_rel_diff,
                         step_data, tiny_cfg)

torch.set_num_threads(1)

# (per-device batch, accumulation, steps_per_generation): 8 samples per step = 2 groups of G = 4
LAYOUTS = {"8x1": (8, 1, 1), "4x2": (4, 2, 2), "2x4": (2, 4, 4), "2x4-spg2": (2, 4, 2)}
METHOD_PARAMS = {"lambda": ["weighting.lambda.init=0.7", "weighting.r=0.3"], "delta_l": ["weighting.alpha=0.5"]}


def _check_step(tmp_path, method, layout, seed=0):
    per_device, ga, spg = LAYOUTS[layout]
    cfg = tiny_cfg(method, G=4, per_device=per_device, ga=ga, spg=spg,
                   extra=[f"seed={seed}", f"trl.seed={seed}", *METHOD_PARAMS.get(method, [])])
    tr = make_trainer(cfg, tmp_path / f"{method}-{layout}")
    tr.train()
    assert tr.state.global_step == 1
    assert len(tr.rec_batches) == ga // spg  # generation batches in the step
    ws = tr.lgrpo  # the contract's WeightingState
    d = step_data(tr.rec_batches, tr.rec_rewards, G=4)
    assert d["lengths"].shape == (2, 4)
    adv_scale = "none" if method == "dr_grpo" else "std"
    lam0 = ws.cfg.lambda_.init if ws.learnable else 0.0
    want = independent_model_grads(tr.rec_start_model, d, weighting=ws.weighting, lam=lam0, adv_scale=adv_scale)
    got = tr.rec.grads[0]
    assert max_rel_diff(got, want) < 2e-5, (method, layout)
    rec = tr.lgrpo_records[0]
    assert rec["step"] == 1 and rec["method"] == method
    if ws.learnable:
        p = ws.weighting.params
        g = independent_lambda_grad(d, lam=lam0, r=p.r, sigma=p.sigma, adv_scale=adv_scale)
        assert tr.rec_lambda_grads[0] == pytest.approx(g, rel=1e-5, abs=1e-9)
        assert rec["lambda"] == pytest.approx(lam0 - ws.cfg.lambda_.lr * g, rel=1e-5, abs=1e-7)
    else:
        assert rec["lambda_grad"] is None and rec["lambda"] == 0.0
    return tr


@pytest.mark.parametrize("method", ["grpo", "dapo", "dr_grpo", "delta_l"])
def test_fixed_methods_micro_batches_smaller_than_G(tmp_path, method):
    _check_step(tmp_path, method, "2x4")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_lambda_every_layout(tmp_path, layout):
    _check_step(tmp_path, "lambda", layout, seed=1)
