"""The one stop rule (``repro.stop``) and its users in the package's own code: the reward, the
OpenRLHF reward file, the evaluation's HF backend. A tiny Qwen2 with a Qwen2.5-style tokenizer
(``tests/stop_model.py``) writes a right answer, ``<|im_end|>``, then a made-up next turn with a
wrong box, then ``<|endoftext|>``; expected values are spelled out here from that text."""
from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

import stop_model as M
from repro import stop
from repro.eval.prompts import STOP, build_prompt
from repro.grading.extract import last_boxed
from repro.reward import CORRECT, NO_BOX, WRONG_BOXED, reward

REPO = Path(__file__).resolve().parents[1]
ISSUE = ("Let me add: 3+4=7. \\boxed{7}<|im_end|>\n<|im_start|>user\nAnd 1+1?<|im_end|>\n"
         "<|im_start|>assistant\n\\boxed{2}")


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = M.build(tmp_path_factory.mktemp("stopmodel"))
    return folder, AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# the rule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("abc<|im_end|>def", "abc"),
    ("abc<|endoftext|>x<|im_end|>", "abc"),
    ("a</s>b<|im_end|>", "a"),
    ("no marker", "no marker"),
    ("<|im_end|>after", ""),
    ("", ""),
])
def test_cut(text, want):
    assert stop.cut(text) == want
    assert stop.cut(stop.cut(text)) == stop.cut(text)


def test_cut_refuses_non_text():
    with pytest.raises(TypeError, match="string"):
        stop.cut(None)


def test_evaluation_stops_are_the_markers():
    assert STOP is stop.END_MARKERS
    assert stop.END_MARKERS == ("<|im_end|>", "<|endoftext|>", "</s>")
    assert stop.QWEN25_MARKER_IDS == {"<|im_end|>": 151645, "<|endoftext|>": 151643}  # SimpleRL-Zoo's


def test_reward_grades_the_text_the_evaluation_scores():
    # the issue's case: a right box, <|im_end|>, a made-up turn ending in a wrong box
    assert last_boxed(ISSUE) == "2"  # what grading the whole text saw (-0.5)
    assert reward(ISSUE, "7") == CORRECT
    assert reward(ISSUE, "2") == WRONG_BOXED
    assert reward("no box<|im_end|>\\boxed{7}", "7") == NO_BOX  # a box after the marker does not count


def test_response_length_and_kind():
    assert stop.response_length([5, 6, 9, 7, 9], [9]) == 3
    assert stop.response_length([5, 6, 7], [9]) == 3
    assert stop.response_length([], [9]) == 0
    assert stop.stop_kind([5, 9], marker_ids=[9, 0], eos_ids=[0], truncated=False) == "marker"
    assert stop.stop_kind([5, 0], marker_ids=[9, 0], eos_ids=[0], truncated=False) == "eos"
    assert stop.stop_kind([5, 5], marker_ids=[9, 0], eos_ids=[0], truncated=True) == "length"
    assert stop.stop_kind([5, 5], marker_ids=[9, 0], eos_ids=[0], truncated=False) == "other"
    got = stop.stop_shares(["marker", "marker", "eos", "length"])
    assert got == {"stop_marker": 0.5, "stop_eos": 0.25, "stop_length": 0.25, "stop_other": 0.0}
    with pytest.raises(ValueError, match="unknown stop kind"):
        stop.stop_shares(["x"])
    with pytest.raises(ValueError, match="empty"):
        stop.stop_shares([])


def test_marker_ids_of_a_qwen_style_tokenizer(qwen_like):
    _, tok = qwen_like
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert stop.marker_token_ids(tok) == [im_end, eot]
    assert stop.string_markers(tok) == ["</s>"]  # several byte-level tokens, as in Qwen2.5
    assert stop.eos_token_ids(tok, [eot, im_end]) == [eot, im_end]


def test_marker_ids_of_a_tokenizer_without_markers():
    class CharTok:  # the CPU task's kind: every character one token, no special markers
        eos_token_id = 1

        def encode(self, s):
            return [ord(c) for c in s]

    assert stop.marker_token_ids(CharTok()) == []


def test_the_model_runs_past_im_end(qwen_like):
    """The test model itself (HF generate, EOS only): it writes the marker and goes on."""
    import torch
    from transformers import AutoModelForCausalLM

    folder, tok = qwen_like
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.encode(build_prompt("What is 3+4?"), add_special_tokens=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=True, temperature=1.0, top_k=0)
    resp = out[0, len(ids):].tolist()
    assert tok.decode(resp) == M.RESPONSE_TEXT
    assert len(resp) == M.RESPONSE_LEN == 12
    assert stop.response_length(resp, stop.marker_token_ids(tok)) == M.SCORED_LEN == 6
    assert stop.cut(tok.decode(resp)) == M.SCORED_TEXT
    assert reward(tok.decode(resp), M.GOLD) == CORRECT
    assert last_boxed(tok.decode(resp, skip_special_tokens=True)) == "2"  # the made-up turn's box


def test_hf_eval_backend_stops_at_im_end(qwen_like):
    """The evaluation's HF backend decodes without special tokens, so the stop string alone never
    matched: it returned 'So\\boxed{7}user\\fbox 2' before the marker ids stopped generation."""
    from repro.eval.backends import HFBackend

    folder, _ = qwen_like
    be = HFBackend(str(folder), batch_size=2, seed=0)
    prompts = [build_prompt("What is 3+4?"), build_prompt("And 5+2?")]
    greedy = be.generate(prompts, n=1, temperature=0.0, max_tokens=32, stop=list(STOP))
    sampled = be.generate(prompts[:1], n=3, temperature=1.0, top_p=1.0, max_tokens=32, stop=list(STOP))
    assert greedy == [[M.SCORED_TEXT], [M.SCORED_TEXT]]
    assert sampled == [[M.SCORED_TEXT] * 3]


# ---------------------------------------------------------------------------------------------
# the OpenRLHF reward file, called as OpenRLHF 0.11.2 calls it (agent.py:288-325)
# ---------------------------------------------------------------------------------------------
def test_reward_file_grades_up_to_the_first_marker(monkeypatch, qwen_like):
    for k, v in {"LGRPO_GRADER": "simple", "LGRPO_GRADER_TIMEOUT": "5", "LGRPO_GRADER_WORKERS": "1"}.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("reward_func", REPO / "repro/trainers/openrlhf/reward_fn.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        _, tok = qwen_like
        prompt = build_prompt("What is 3+4?")
        # the query as the engine decodes it: prompt + response tokens, special tokens kept
        query = tok.decode(tok.encode(prompt + M.RESPONSE_TEXT, add_special_tokens=False), skip_special_tokens=False)
        assert query == prompt + M.RESPONSE_TEXT
        issue_query = prompt + ISSUE

        async def run():
            return await asyncio.gather(*[asyncio.to_thread(mod.reward_func, [q], [prompt], ["7"])
                                          for q in (query, issue_query)])
        out = asyncio.run(run())
        assert [float(o["rewards"][0]) for o in out] == [CORRECT, CORRECT]
        assert [float(o["scores"][0]) for o in out] == [1.0, 1.0]
        assert mod.response_text(query, prompt) == M.SCORED_TEXT
        # a prompt that is not a prefix of the query (re-tokenised differently): the response
        # starts after the first assistant header, not after the made-up turn's
        assert mod.response_text(issue_query, "a different prompt") == "Let me add: 3+4=7. \\boxed{7}"
        assert float(mod.reward_func([issue_query], ["a different prompt"], ["7"])["rewards"][0]) == CORRECT
    finally:
        for pool in mod._pools.values():
            pool.close()
