"""The stop rule through the real TRL 1.16.0 ``GRPOTrainer`` (transformers generate, CPU).

A tiny Qwen2 with a Qwen2.5-style tokenizer (``tests/stop_model.py``) writes a right answer,
``<|im_end|>``, a made-up next turn with a wrong box, and its EOS ``<|endoftext|>``. One optimizer
step of the package's trainer (``run.build_trainer``, which applies ``run.apply_stop_rule``) on two
qwen-boxed prompts; asserted on what TRL produced: every completion ends at ``<|im_end|>`` (6
tokens, the mask included), the rewards TRL gathered are +1, the group lengths λ's weights are
made of are 6, and the metrics line's stop shares. The same step without the rule (the stock
``LambdaGRPOTrainer`` built around the same model) shows what the rule changes: 12 tokens and
-0.5 for every completion."""
from __future__ import annotations

import pytest

pytest.importorskip("trl")

import stop_model as M  # noqa: E402
from trl_helpers import RecordingTrainer, tiny_cfg  # noqa: E402

from repro.eval.prompts import build_prompt  # noqa: E402
from repro.reward import CORRECT, WRONG_BOXED  # noqa: E402

ROWS = [{"prompt": build_prompt("What is 3+4?"), "label": M.GOLD},
        {"prompt": build_prompt("And 5+2?"), "label": M.GOLD}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return M.build(tmp_path_factory.mktemp("stopmodel"))


def _model(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(folder), tok


def test_trl_completion_ends_at_im_end(tmp_path, folder):
    from repro.trainers.trl.run import build_trainer

    model, tok = _model(folder)
    cfg = tiny_cfg("lambda", G=4, per_device=2, ga=4, max_tokens=20)
    tr = build_trainer(cfg, tmp_path, None, model=model, tokenizer=tok, rows=ROWS, cls=RecordingTrainer)
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert tr.eos_token_ids == [eot, im_end]
    tr.train()
    batch = tr.rec_batches[0]
    mask, ids = batch["completion_mask"], batch["completion_ids"]
    assert mask.shape[0] == 8
    assert mask.sum(dim=1).tolist() == [M.SCORED_LEN] * 8 == [6] * 8
    assert ids[:, M.SCORED_LEN - 1].tolist() == [im_end] * 8
    assert tok.batch_decode([r[m.bool()] for r, m in zip(ids, mask)], skip_special_tokens=True) == [M.SCORED_TEXT] * 8
    assert tr.rec_rewards[0].flatten().tolist() == [CORRECT] * 8
    assert batch["lgrpo_group_lengths"].tolist() == [[6.0] * 4] * 8  # each sample's whole group (G = 4)
    rec = tr.lgrpo_records[0]
    assert (rec["response_length_mean"], rec["truncated_rate"]) == (6.0, 0.0)
    assert {k: rec[k] for k in ("stop_marker", "stop_eos", "stop_length", "stop_other")} == {
        "stop_marker": 1.0, "stop_eos": 0.0, "stop_length": 0.0, "stop_other": 0.0}


def test_trl_without_the_rule_counts_the_made_up_turn(tmp_path, folder):
    """The stock path (TRL stops at the tokenizer's EOS only): the completion mask runs to the
    EOS after the made-up turn, and TRL decodes completions without special tokens
    (``grpo_trainer.py:2247``), so the reward never sees <|im_end|> and grades the made-up box:
    the reward's cut alone cannot repair TRL, generation has to stop."""
    from repro.trainers.contract import WeightingConfig
    from repro.trainers.trl.reward import PaperReward
    from repro.trainers.trl.run import grpo_config
    from datasets import Dataset

    model, tok = _model(folder)
    cfg = tiny_cfg("lambda", G=4, per_device=2, ga=4, max_tokens=20)
    tr = RecordingTrainer(model=model, reward_funcs=[PaperReward("simple", workers=0)],
                          args=grpo_config(cfg, tmp_path), train_dataset=Dataset.from_list(ROWS),
                          processing_class=tok, weighting=WeightingConfig.from_dict(cfg["weighting"]))
    tr.train()
    mask = tr.rec_batches[0]["completion_mask"]
    assert mask.sum(dim=1).tolist() == [M.RESPONSE_LEN] * 8 == [12] * 8
    assert tr.rec_rewards[0].flatten().tolist() == [WRONG_BOXED] * 8
    assert tr.lgrpo_records[0]["stop_eos"] == 1.0


def test_apply_stop_rule_gives_vllm_the_markers(folder):
    """With ``use_vllm`` TRL hands ``generation_kwargs`` to vLLM's SamplingParams only
    (``vllm_generation.py:662-683``): the rule adds the marker ids and the string markers there,
    keeping what the config set."""
    import types

    from repro.trainers.trl.run import apply_stop_rule

    model, tok = _model(folder)
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    args = types.SimpleNamespace(use_vllm=True, generation_kwargs={"top_k": 5, "stop_token_ids": [7]})
    assert apply_stop_rule(model, tok, args) == [eot, im_end] == model.generation_config.eos_token_id
    assert args.generation_kwargs == {"top_k": 5, "stop_token_ids": [7, im_end, eot], "stop": ["</s>"]}
    plain = types.SimpleNamespace(use_vllm=False, generation_kwargs=None)
    apply_stop_rule(model, tok, plain)
    assert plain.generation_kwargs is None  # transformers' generate reads the model's eos ids
