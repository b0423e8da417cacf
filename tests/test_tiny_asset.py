"""``repro/assets/tiny-sum`` stores its tied embedding as ``model.embed_tokens.weight`` (vLLM 0.29
reads a checkpoint holding only ``lm_head.weight`` as untied and leaves the embedding uninitialised:
the same garbage for every prompt), and ``repro.trainers.rollout.save_policy`` (the pretrainer's and
the reference trainer's save) writes it that way. In the engine venv: vLLM's greedy output on the
asset equals HF's, token for token."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors import safe_open

from repro.trainers.rollout import ASSET_DIR, load_policy, save_policy


def _keys(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_asset_stores_the_tied_embedding_under_its_own_name():
    keys = _keys(ASSET_DIR)
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    model, _ = load_policy(ASSET_DIR)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_save_policy_round_trip_is_bit_identical_and_keeps_the_tie(tmp_path):
    model, tok = load_policy(ASSET_DIR)
    with torch.no_grad():  # a changed copy, so the round trip is not just the file copied
        model.model.embed_tokens.weight.add_(0.5)
    save_policy(model, tok, tmp_path / "m")
    assert "lm_head.weight" not in _keys(tmp_path / "m")
    back, _ = load_policy(tmp_path / "m")
    sd, sb = model.state_dict(), back.state_dict()
    assert sd.keys() == sb.keys()
    assert all(torch.equal(sd[k], sb[k]) for k in sd)
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None
                    or "openrlhf_stubs" in str(importlib.util.find_spec("vllm").origin),
                    reason="vLLM is not installed here: runs in the engine venv (make engines; make test)")
def test_vllm_greedy_equals_hf_greedy_on_the_asset():
    import random

    from vllm import LLM, SamplingParams

    from repro.tasks.arith import sample_problems

    model, tok = load_policy(ASSET_DIR)
    prompts = ["<bos>" + p.prompt for p in sample_problems(8, random.Random(3), "test")]
    hf = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        hf.append(out[0, ids.shape[1]:].tolist())
    llm = LLM(str(ASSET_DIR), dtype="float32", enforce_eager=True, gpu_memory_utilization=0.05, seed=0,
              max_model_len=128)
    outs = llm.generate([{"prompt_token_ids": tok(p, add_special_tokens=False).input_ids} for p in prompts],
                        SamplingParams(temperature=0.0, max_tokens=40))
    got = [list(o.outputs[0].token_ids) for o in outs]
    assert len({tuple(g) for g in got}) > 1  # not the same garbage for every prompt
    assert got == hf
