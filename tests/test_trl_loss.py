"""The real TRL GRPOTrainer with the λ seams computes the package's loss exactly (issues 12, 21).

For every weighting method and every batch layout that ``repro.trainers.trl.options`` accepts, each
optimizer step through ``trl.GRPOTrainer`` (generation, TRL's shuffle and split of the generation
batch, its accumulation over micro-batches smaller than the group, several PPO epochs over one
generation batch with TRL's π_old) gives the model gradient of ``repro.objective.policy_loss
(scope='group')`` on the same samples at the same parameters, and λ's applied gradient equals
Eq. 20 (``eq20_lambda_grad``) with each response's clipped-surrogate sum, both computed here
independently of the seams; every step writes its metrics line with the λ it reached."""
from __future__ import annotations

import pytest
import torch

from repro.objective import eq3_group_advantages
from trl_helpers import (independent_lambda_grad, independent_model_grads, make_trainer, max_rel_diff,
                         step_data, surrogate_sums, tiny_cfg)

torch.set_num_threads(1)

# name: (per-device batch, accumulation, steps_per_generation, num_iterations μ, optimizer steps);
# 8 samples per step = 2 groups of G = 4. These are all the single-process shapes options.py
# accepts: steps_per_generation dividing the accumulation (one or several generation batches per
# step) and, with steps_per_generation = accumulation, μ PPO epochs per generation batch.
LAYOUTS = {"8x1": (8, 1, 1, 1, 2), "4x2": (4, 2, 2, 1, 2), "2x4": (2, 4, 4, 1, 2),
           "2x4-spg2": (2, 4, 2, 1, 2), "2x4-mu2": (2, 4, 4, 2, 4), "8x1-mu3": (8, 1, 1, 3, 3)}
METHOD_PARAMS = {"lambda": ["weighting.lambda.init=0.7", "weighting.r=0.3"], "delta_l": ["weighting.alpha=0.5"]}


def _check_steps(tmp_path, method, layout, seed=0):
    per_device, ga, spg, mu, steps = LAYOUTS[layout]
    # lr 1e-3 so that the later PPO epochs are visibly off-policy (ρ ≠ 1, some tokens clipped)
    cfg = tiny_cfg(method, G=4, per_device=per_device, ga=ga, spg=spg, num_iterations=mu, steps=steps,
                   extra=[f"seed={seed}", f"trl.seed={seed}", "trl.learning_rate=1e-3",
                          *METHOD_PARAMS.get(method, [])])
    tr = make_trainer(cfg, tmp_path / f"{method}-{layout}")
    tr.train()
    assert tr.state.global_step == steps
    assert len(tr.rec_batches) == steps // mu * (ga // spg)  # generation batches
    assert len(tr.rec.grads) == len(tr.rec_step_batches) == len(tr.lgrpo_records) == steps
    ws = tr.lgrpo  # the contract's WeightingState
    adv_scale = "none" if method == "dr_grpo" else "std"
    lam = ws.cfg.lambda_.init if ws.learnable else 0.0
    off_policy = []
    for k in range(steps):
        used = tr.rec_step_batches[k]
        epoch = k % mu + 1
        assert used == list(range(k // mu * (ga // spg), (k // mu + 1) * (ga // spg))), (k, used)
        d = step_data([tr.rec_batches[i] for i in used], [tr.rec_rewards[i] for i in used], G=4)
        assert d["lengths"].shape == (2, 4)
        assert ("old_per_token_logps" in d) == (mu > 1)  # TRL keeps π_old only when epochs repeat
        model = tr.rec_model_at(tr.rec.states[k])
        if ws.learnable:
            assert tr.rec_lambda_before[k] == pytest.approx(lam, rel=1e-6, abs=1e-9)
        want = independent_model_grads(model, d, weighting=ws.weighting, lam=lam, adv_scale=adv_scale)
        assert max_rel_diff(tr.rec.grads[k], want) < 2e-5, (method, layout, k)
        rec = tr.lgrpo_records[k]
        assert rec["step"] == k + 1 and rec["method"] == method and rec["iteration"] == epoch
        assert rec["rollout"] == (k // mu + 1) * (ga // spg)
        L = surrogate_sums(model, d, adv_scale=adv_scale)
        if mu > 1 and epoch > 1:
            on_policy = d["lengths"] * eq3_group_advantages(d["rewards"], scale=adv_scale)  # L_i at ρ = 1
            off_policy.append(float((L - on_policy).abs().max()))
            assert rec["accuracy"] == tr.lgrpo_records[k - 1]["accuracy"]  # same rollouts, another epoch
        if ws.learnable:
            p = ws.weighting.params
            g = independent_lambda_grad(d, lam=lam, r=p.r, sigma=p.sigma, adv_scale=adv_scale, L=L)
            assert tr.rec_lambda_grads[k] == pytest.approx(g, rel=1e-5, abs=1e-9), (layout, k)
            lam = lam - ws.cfg.lambda_.lr * g
            assert rec["lambda"] == pytest.approx(lam, rel=1e-5, abs=1e-7)
        else:
            assert rec["lambda_grad"] is None and rec["lambda"] == 0.0
    if mu > 1:  # the later epochs were checked off-policy, not at ρ = 1
        assert max(off_policy) > 1e-4, off_policy
    return tr


@pytest.mark.parametrize("method", ["grpo", "dapo", "dr_grpo", "delta_l"])
def test_fixed_methods_micro_batches_smaller_than_G(tmp_path, method):
    _check_steps(tmp_path, method, "2x4")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_lambda_every_layout(tmp_path, layout):
    _check_steps(tmp_path, "lambda", layout, seed=1)


def test_a_method_with_a_parameter_of_its_own_rides_the_trl_path(tmp_path, softmax_beta):
    """The ``softmax_beta`` fixture's method (f = G·softmax(β·z), conftest.py), chosen and given
    β through the config's ``weighting:`` block as ``--set`` spells it: the TRL trainer carries
    the block, its step's model gradient is ``policy_loss`` with that weighting, and the f it
    logged equals f written out here from the step's lengths."""
    import math

    cfg = tiny_cfg("dapo", G=4, per_device=8, ga=1, steps=1,
                   extra=["trl.learning_rate=1e-3", "weighting.method=softmax_beta", "weighting.beta=2.5"])
    assert cfg["weighting"] == {"method": "softmax_beta", "beta": 2.5, "lambda": {"init": 0.0, "lr": 0.1}}
    tr = make_trainer(cfg, tmp_path / "softmax_beta")
    tr.train()
    ws = tr.lgrpo
    assert ws.method == "softmax_beta" and ws.weighting.params.beta == 2.5 and not ws.learnable
    d = step_data([tr.rec_batches[0]], [tr.rec_rewards[0]], G=4)
    model = tr.rec_model_at(tr.rec.states[0])
    want = independent_model_grads(model, d, weighting=ws.weighting, lam=0.0, adv_scale="std")
    assert max_rel_diff(tr.rec.grads[0], want) < 2e-5
    f = []
    for lens in d["lengths"].tolist():
        mu = sum(lens) / 4
        sd = max(math.sqrt(sum((x - mu) ** 2 for x in lens) / 3), 1e-6)
        e = [math.exp(2.5 * (x - mu) / sd) for x in lens]
        f += [4 * x / sum(e) for x in e]
    assert max(f) - min(f) > 1e-2  # lengths differ within a group: β shapes f here
    rec = tr.lgrpo_records[0]
    assert rec["method"] == "softmax_beta"
    assert rec["f_min"] == pytest.approx(min(f), rel=1e-6) and rec["f_max"] == pytest.approx(max(f), rel=1e-6)
    assert rec["f_mean"] == pytest.approx(sum(f) / len(f), rel=1e-6)
