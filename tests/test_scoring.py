"""Scoring arithmetic against hand-computed values, the paper's Table 1 as entered, the backends,
and the evaluation pipeline end to end (fake backend and a tiny random HF model), including resume
after an interrupted run."""
from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from repro import paper
from repro.eval import backends as B
from repro.eval.run import evaluate
from repro.eval.scoring import benchmark_scores, default_ks, pass_at_k, unweighted_average


# ------------------------------------------------------------------------------------------------
# arithmetic
# ------------------------------------------------------------------------------------------------
def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(32, 0, 8) == 0.0
    assert pass_at_k(32, 32, 1) == 1.0
    assert pass_at_k(32, 30, 4) == 1.0  # fewer than k wrong samples
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_average_at_32_and_pass_at_k():
    rows = [[True] * 32, [True] * 16 + [False] * 16, [False] * 32]
    s = benchmark_scores(rows)
    assert s["accuracy"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)  # Average@32 = 50
    assert s["n_items"] == 3 and s["n_samples"] == 32
    assert s["pass@1"] == pytest.approx(50.0)
    # item 2: 1 - C(16,2)/C(32,2) = 1 - 120/496
    assert s["pass@2"] == pytest.approx(100 * (1 + (1 - 120 / 496) + 0) / 3)
    assert s["pass@32"] == pytest.approx(100 * 2 / 3)
    assert default_ks(32) == [1, 2, 4, 8, 16, 32] and default_ks(6) == [1, 2, 4, 6]


def test_pass_at_1_greedy_and_bad_input():
    s = benchmark_scores([[True], [False], [False], [True]])
    assert s["accuracy"] == 50.0 and "pass@1" not in s and s["n_samples"] == 1
    with pytest.raises(ValueError):
        benchmark_scores([[True], [True, False]])
    with pytest.raises(ValueError):
        benchmark_scores([])


def test_unweighted_average():
    assert unweighted_average({"a": 10.0, "b": 20.0, "c": 60.0}) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        unweighted_average({})


# ------------------------------------------------------------------------------------------------
# the paper's Table 1 as entered
# ------------------------------------------------------------------------------------------------
def test_table1_as_entered():
    rows = paper.load_table1().to_dict("records")
    assert [(r["size"], r["method"]) for r in rows] == [
        (s, m) for s in ("1.5B", "3B", "7B") for m in ("Base", "DAPO", "GRPO", "λ-GRPO")]
    cols = ["gsm8k", "math500", "minerva_math", "gaokao2023en", "olympiadbench", "college_math",
            "aime24", "amc23"]
    with open(paper.TABLE1_CSV, newline="") as fh:
        assert next(csv.reader(fh)) == ["size", "method"] + cols + ["avg"]
    for r in rows:
        mean = sum(r[c] for c in cols) / 8
        if (r["size"], r["method"]) == ("1.5B", "Base"):
            assert mean == pytest.approx(2.1625) and r["avg"] == 1.9  # the paper's own mismatch
        else:
            assert abs(mean - r["avg"]) <= 0.1, (r["size"], r["method"], mean, r["avg"])
    by = {(r["size"], r["method"]): r for r in rows}
    assert by[("1.5B", "λ-GRPO")]["avg"] == 37.8 and by[("7B", "λ-GRPO")]["amc23"] == 58.8
    assert by[("3B", "Base")]["gsm8k"] == 81.6 and by[("7B", "GRPO")]["aime24"] == 17.2


def test_size_of():
    assert paper.size_of("Qwen/Qwen2.5-1.5B") == "1.5B" and paper.size_of("ckpt/qwen2.5-7b-lgrpo") == "7B"
    assert paper.size_of("runs/x/checkpoints/step_000160") is None
    assert paper.size_of("llama-3b") is None  # only a Qwen2.5 model names a Table 1 block
    assert paper.size_of({"model": {"path": "Qwen/Qwen2.5-3B"}, "seed": 1}) == "3B"


# ------------------------------------------------------------------------------------------------
# the pipeline with a fake backend
# ------------------------------------------------------------------------------------------------
ROWS = {
    "gsm8k": [{"id": 0, "question": "q0", "gold": "18"}, {"id": 1, "question": "q1", "gold": "3"},
              {"id": 2, "question": "q2", "gold": "70000"}],
    "math500": [{"id": 0, "question": "m0", "gold": "\\frac{1}{2}"},
                {"id": 1, "question": "m1", "gold": "\\left( 3, \\frac{\\pi}{2} \\right)"}],
    "aime24": [{"id": 0, "question": "a0", "gold": "204"}, {"id": 1, "question": "a1", "gold": "023"}],
}
ANSWERS = {  # question -> response per sample (the fake model)
    "q0": "16 - 3 - 4 = 9 eggs, 9 * 2 = \\boxed{18}", "q1": "It takes \\boxed{2}",
    "q2": "so the answer is 70,000.", "m0": "\\boxed{0.5}", "m1": "\\boxed{(3, \\pi/2)}",
}


class FakeBackend:
    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.prompts_seen: list[str] = []
        self.fail_after = fail_after

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=10, stop=None):
        out = []
        for p in prompts:
            if self.fail_after is not None and len(self.prompts_seen) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.prompts_seen.append(p)
            q = p.split("<|im_start|>user\n")[1].split("\n")[0]
            if q.startswith("a"):
                # aime: the k-th sample is right for k < 8 on a0 and for k < 2 on a1
                right = {"a0": ("204", 8), "a1": ("23", 2)}[q]
                out.append([f"\\boxed{{{right[0] if k < right[1] else 999}}}" for k in range(n)])
            else:
                out.append([ANSWERS[q]] * n)
        return out


SETTINGS = dict(avg_n=8, max_tokens=64, grade_workers=1, grade_timeout=20.0, chunk=2)


def test_evaluate_scores_records_and_tables(tmp_path):
    fake = FakeBackend()
    s = evaluate(ROWS, tmp_path, backend_factory=lambda: fake, model_id="fake/Qwen2.5-1.5B-step160",
                 settings=SETTINGS, progress=False)
    q = s["graders"]["qwen"]["benchmarks"]
    assert q["gsm8k"]["accuracy"] == pytest.approx(200 / 3)  # 18 right, 2 wrong, 70,000 right
    assert q["math500"]["accuracy"] == 100.0
    assert q["aime24"]["accuracy"] == pytest.approx(100 * (8 / 8 + 2 / 8) / 2)  # Average@8
    assert q["aime24"]["pass@2"] == pytest.approx(100 * (1 + (1 - (6 * 5) / (8 * 7))) / 2)
    assert s["graders"]["qwen"]["average"] == pytest.approx((200 / 3 + 100 + 62.5) / 3)
    assert len(fake.prompts_seen) == 3 + 2 + 2  # each prompt generated once (n via the backend)
    assert "You are a helpful assistant." in fake.prompts_seen[0]
    recs = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(recs) == (3 + 2 + 2 * 8) * 2  # items x samples x graders
    r0 = next(r for r in recs if r["benchmark"] == "gsm8k" and r["id"] == 2 and r["grader"] == "qwen")
    assert r0["extracted"] == "70,000." and r0["correct"] is True and r0["sample"] == 0
    assert set(r0) >= {"output", "gold", "flagged", "time_s"}
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["primary_grader"] == "qwen" and set(scores["graders"]) == {"qwen", "math-verify"}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["benchmarks"]["aime24"] == {"n": 8, "temperature": 1.0, "top_p": 0.95, "n_items": 2}
    assert cfg["benchmarks"]["gsm8k"]["temperature"] == 0.0
    assert cfg["stop"] == ["<|im_end|>", "<|endoftext|>", "</s>"]
    text = (tmp_path / "comparison.md").read_text()
    assert "| paper 1.5B λ-GRPO |" in text and "| paper 7B" not in text
    assert f"| diff vs 1.5B λ-GRPO | {200 / 3 - 77.3:+.1f} |" in text
    assert "qwen,gsm8k,66.6667,3,1,0," in (tmp_path / "scores.csv").read_text()


def test_interrupted_run_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        evaluate(ROWS, tmp_path, backend_factory=lambda: FakeBackend(fail_after=2),
                 model_id="fake", settings=SETTINGS, progress=False)
    assert not (tmp_path / "scores.json").exists()
    # chunks of 2: the first chunk of gsm8k (2 prompts) reached the disk, then the crash
    cache = tmp_path / "generations" / "gsm8k.jsonl"
    assert len(cache.read_text().splitlines()) == 2
    with open(cache, "a") as fh:
        fh.write('{"key": "2", "outp')  # a torn last line, as a kill mid-write leaves
    second = FakeBackend()
    s = evaluate(ROWS, tmp_path, backend_factory=lambda: second, model_id="fake",
                 settings=SETTINGS, progress=False)
    assert len(second.prompts_seen) == 7 - 2  # only the missing prompts
    fresh = evaluate(ROWS, tmp_path / "fresh", backend_factory=FakeBackend, model_id="fake",
                     settings=SETTINGS, progress=False)
    assert s["graders"] == fresh["graders"]
    # a finished run re-grades without loading a model at all
    def no_model():
        raise AssertionError("the model must not be loaded when nothing is missing")
    evaluate(ROWS, tmp_path, backend_factory=no_model, model_id="fake", settings=SETTINGS,
             progress=False)
    with pytest.raises(B.SettingsMismatch):
        evaluate(ROWS, tmp_path, backend_factory=FakeBackend, model_id="other-model",
                 settings=SETTINGS, progress=False)


def test_comparison_without_size_lists_all_rows():
    scores = {"model": "m", "primary_grader": "qwen",
              "graders": {"qwen": {"benchmarks": {"gsm8k": {"accuracy": 80.0}}, "average": 80.0}}}
    text = paper.comparison_markdown(scores, None)
    assert text.count("| paper ") == 12 and "| diff vs 3B Base | -1.6 |" in text


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------
def test_cut_at_stop():
    assert B.cut_at_stop("abc<|im_end|>def</s>", ["</s>", "<|im_end|>"]) == "abc"
    assert B.cut_at_stop("abc", None) == "abc"


class CharTok:
    """A minimal character tokenizer (0 pad, 1 eos), like the CPU-scale trainer's."""
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    pad_token_id, eos_token_id = 0, 1

    def encode(self, s):
        return [self.chars.index(c) + 2 if c in self.chars else 2 for c in s]

    def decode(self, ids):
        return "".join(self.chars[i - 2] for i in ids if i >= 2)


@pytest.fixture(scope="module")
def tiny_hf():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(CharTok.chars) + 2, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, eos_token_id=1, pad_token_id=0)
    return B.HFBackend(Qwen2ForCausalLM(cfg), CharTok(), batch_size=4, seed=0)


def test_hf_backend_greedy_sampling_and_stops(tiny_hf):
    prompts = ["hello", "a longer prompt than the first"]
    g1 = tiny_hf.generate(prompts, n=2, temperature=0.0, max_tokens=12)
    g2 = tiny_hf.generate(prompts[::-1], n=1, temperature=0.0, max_tokens=12)
    assert [len(x) for x in g1] == [2, 2] and g1[0][0] == g1[0][1]
    assert [g1[1][0], g1[0][0]] == [g2[0][0], g2[1][0]]  # greedy is batch-independent
    assert all(len(t) <= 12 for row in g1 for t in row)
    s = tiny_hf.generate(prompts, n=3, temperature=1.0, top_p=0.95, max_tokens=12,
                         stop=["e", "a", "o", "i"])
    assert [len(x) for x in s] == [3, 3]
    assert all(not any(c in t for c in "eaoi") for row in s for t in row)
    with pytest.raises(ValueError):
        tiny_hf.generate(prompts, n=0)
    for mode in (True, False):  # a trainer's policy keeps its mode
        tiny_hf.model.train(mode)
        tiny_hf.generate(prompts[:1], max_tokens=2)
        assert tiny_hf.model.training is mode


def test_evaluate_with_tiny_hf_model(tmp_path, tiny_hf):
    rows = {"gsm8k": ROWS["gsm8k"][:2]}
    s = evaluate(rows, tmp_path, backend_factory=lambda: tiny_hf, model_id="tiny-random",
                 settings=dict(SETTINGS, max_tokens=8, graders=["qwen"]), progress=False)
    assert s["graders"]["qwen"]["benchmarks"]["gsm8k"]["n_items"] == 2
    outs = [json.loads(x)["outputs"] for x in
            (tmp_path / "generations" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(outs) == 2 and all(len(o) == 1 and len(o[0]) <= 8 for o in outs)


def test_vllm_backend_calls(monkeypatch):
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            calls.setdefault("sp", []).append(kw)

    class LLM:
        def __init__(self, **kw):
            calls["llm"] = kw

        def get_tokenizer(self):  # Qwen2.5's ids of the two one-token end markers
            ids = {"<|im_end|>": [151645], "<|endoftext|>": [151643]}
            return types.SimpleNamespace(encode=lambda s, add_special_tokens=True: ids.get(s, [1, 2]))

        def generate(self, prompts, sp, use_tqdm=True):
            assert len(sp) == len(prompts)  # one SamplingParams per prompt (its own seed)
            n = calls["sp"][-1]["n"]
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{p}-{k}</s>x")
                                                   for k in range(n)]) for p in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    be = B.VLLMBackend("some/model", seed=3)
    assert calls["llm"]["model"] == "some/model" and calls["llm"]["seed"] == 3
    assert calls["llm"]["generation_config"] == "vllm"
    out = be.generate(["p", "q"], n=3, temperature=0.0, top_p=0.95, max_tokens=7, stop=["</s>"])
    assert out == [["p-0"] * 3, ["q-0"] * 3]
    assert calls["sp"][-1] == dict(n=1, temperature=0.0, top_p=1.0, max_tokens=7, stop=["</s>"],
                                   stop_token_ids=[151645, 151643], seed=None)
    out = be.generate(["p"], n=2, temperature=1.0, top_p=0.95, max_tokens=7, stop=["</s>"])
    assert out == [["p-0", "p-1"]] and calls["sp"][-1]["top_p"] == 0.95
    # each sampled prompt's seed depends on (seed, prompt) only
    assert calls["sp"][-1]["seed"] == B.request_seed(3, "p") != B.request_seed(3, "q") != B.request_seed(4, "q")
    assert calls["llm"]["enforce_eager"] is (not __import__("torch").cuda.is_available())
