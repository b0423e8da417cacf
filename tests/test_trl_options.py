"""Every TRL option that would make Eq. 7 inexact is refused with a clear error (issue 12).

Config-level refusals are raised by ``LambdaGRPOTrainer`` before TRL builds anything (so no model
is loaded for them); the prompt-count and reward refusals go through a real trainer."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from trl_helpers import make_trainer, tiny_cfg

from repro.trainers.contract import WeightingConfig
from repro.trainers.trl import options
from repro.trainers.trl.run import grpo_config
from repro.trainers.trl.trainer import LambdaGRPOTrainer

torch.set_num_threads(1)

# (--set overrides, a phrase the error must contain)
REFUSED = {
    "loss_type": (["trl.loss_type=dapo"], "loss_type='dapo'"),
    "steps_per_generation": (["trl.per_device_train_batch_size=4", "trl.steps_per_generation=3"],
                             "does not divide gradient_accumulation_steps"),
    "num_iterations": (["trl.steps_per_generation=2", "trl.num_iterations=2"], "the same samples twice"),
    "beta": (["trl.beta=0.04"], "beta=0.04"),
    "entropy_coef": (["trl.entropy_coef=0.01"], "entropy bonus"),
    "top_entropy_quantile": (["trl.top_entropy_quantile=0.2"], "top_entropy_quantile=0.2"),
    "mask_truncated": (["trl.mask_truncated_completions=true"], "mask_truncated_completions"),
    "sequence_is": (["trl.importance_sampling_level=sequence"], "importance_sampling_level='sequence'"),
    "delta": (["trl.delta=1.5"], "two-sided clipping"),
    "scale_rewards_batch": (["trl.scale_rewards=batch"], "'batch' std is not Eq. 3"),
    "normalize_then_sum": (["trl.multi_objective_aggregation=normalize_then_sum"], "sum_then_normalize"),
    "r_too_large": (["weighting.r=0.7"], "h = 1 + r*z <= 0"),
}


def _args_and_weighting(tmp_path, sets, method="lambda"):
    cfg = tiny_cfg(method, G=4, per_device=2, ga=4, extra=sets)
    return grpo_config(cfg, Path(tmp_path)), WeightingConfig.from_dict(cfg["weighting"])


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_trl_builds(tmp_path, case):
    sets, phrase = REFUSED[case]
    args, w = _args_and_weighting(tmp_path, sets)
    with pytest.raises(ValueError, match="would make Eq. 7 inexact") as e:
        # the model is never loaded: the check runs before GRPOTrainer.__init__
        LambdaGRPOTrainer(model="not-loaded", reward_funcs=[lambda **k: []], args=args, weighting=w)
    assert phrase in str(e.value)


@pytest.mark.parametrize("attr,value,phrase", [("fp16", True, "fp16=True"), ("deepspeed", "ds.json", "deepspeed"),
                                               ("eval_strategy", "steps", "eval_strategy")])
def test_refused_training_arguments(tmp_path, attr, value, phrase):
    args, w = _args_and_weighting(tmp_path, [])  # GRPOConfig itself rejects some on CPU: set after
    setattr(args, attr, value)
    assert any(phrase in p for p in options.check_config(args, w))


def test_accepted_config_has_no_problems(tmp_path):
    for method in ("grpo", "dapo", "dr_grpo", "lambda", "delta_l"):
        args, w = _args_and_weighting(tmp_path, [], method)
        assert options.check_config(args, w) == []
    args, w = _args_and_weighting(tmp_path, ["trl.steps_per_generation=2"])  # 2 generations per step: exact
    assert options.check_config(args, w) == []
    args, w = _args_and_weighting(tmp_path, ["trl.num_iterations=2"])  # 2 PPO epochs, whole batch per step
    assert options.check_config(args, w) == []  # runs: tests/test_trl_loss.py, layouts '*-mu*'


def test_refused_trainer_features():
    t = types.SimpleNamespace(tools=[print], environment_factories=None, rollout_func=None,
                              args=types.SimpleNamespace(use_liger_kernel=False))
    assert "tool_mask" in " ".join(options.check_trainer(t))
    t.tools, t.rollout_func = [], (lambda *a: None)
    assert "rollout_func" in " ".join(options.check_trainer(t))
    t.rollout_func, t.args.use_liger_kernel = None, True
    assert "Liger" in " ".join(options.check_trainer(t))


def test_vllm_importance_sampling_is_documented_not_refused():
    on = types.SimpleNamespace(use_vllm=True, vllm_importance_sampling_correction=True)
    off = types.SimpleNamespace(use_vllm=True, vllm_importance_sampling_correction=False)
    assert "importance ratio" in options.vllm_is_note(on)
    assert options.vllm_is_note(off) is None


def test_short_last_window_refused_at_train(tmp_path):
    # one prompt per generation batch, two generation batches per step: 3 prompts leave a short step
    cfg = tiny_cfg("lambda", G=4, per_device=2, ga=4, spg=2, prompts_per_step=1, steps=3)
    assert options.check_window(grpo_config(cfg, tmp_path), 4) == []
    tr = make_trainer(cfg, tmp_path / "short")
    with pytest.raises(ValueError, match="Size the prompt set to a multiple of 2 prompts"):
        tr.train()
    assert tr.state.global_step == 0


def test_reward_none_is_an_error_not_a_dropped_sample(tmp_path):
    cfg = tiny_cfg("dapo", G=4, per_device=2, ga=4)
    tr = make_trainer(cfg, tmp_path / "none")
    tr.reward_funcs = [lambda completions, **k: [None] + [1.0] * (len(completions) - 1)]
    with pytest.raises(ValueError, match="returned None or NaN"):
        tr.train()
