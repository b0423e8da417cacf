"""The OpenRLHF stop seam (``repro/trainers/openrlhf/stop.py``) on OpenRLHF 0.11.2's own
``SamplesGenerator`` code, without vLLM: a response dict as ``SingleTurnAgentExecutor.execute``
returns it (``utils/agent.py:266-283``) for a model that ran past ``<|im_end|>`` (what stock
OpenRLHF gets from vLLM, which it sends no stop), then the stock
``_process_response_into_experience``. The same path through the real vLLM engine is
``tests/test_engines_stop.py`` (engine venv). Expected values are counted here from the text."""
from __future__ import annotations

import types

import pytest
import torch

import stop_model as M
from repro.eval.prompts import build_prompt
from repro.stop import SHARE_KEYS, stop_shares


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(M.build(tmp_path_factory.mktemp("stopmodel")))


@pytest.fixture
def seam():
    from repro.trainers.openrlhf import stop

    stop.install()
    try:
        yield stop
    finally:
        stop.uninstall()


def _response(tok, resp_ids, *, truncated=False, logprobs=False):
    prompt = tok.encode(build_prompt("What is 3+4?"), add_special_tokens=False)
    obs = prompt + list(resp_ids)
    return dict(prompt="p", label="7", images=None, mm_train_inputs=None, observation_tokens=obs,
                action_ranges=[(len(prompt), len(obs))], rollout_log_probs=[-0.5] * len(obs) if logprobs else None,
                truncated=truncated, reward=1.0, scores=1.0, extra_logs={})


def _generator(tok):
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    gen = SamplesGenerator.__new__(SamplesGenerator)
    gen.tokenizer = tok
    return gen


def test_experience_ends_at_the_first_stop_token(tok, seam):
    ids = M.chain_ids(tok)[1:]  # the 12 response tokens, <|im_end|> 6th
    exp = _generator(tok)._process_response_into_experience(_response(tok, ids, logprobs=True), max_len=512)
    assert int(exp.action_mask.sum()) == M.SCORED_LEN == 6
    act = exp.sequences[0, 1:][exp.action_mask[0].bool()].tolist()
    assert act == ids[:6] and act[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert int(exp.response_length[0]) == 6
    assert exp.rollout_log_probs.shape[1] == exp.action_mask.shape[1]
    assert {k: float(exp.info[k][0]) for k in SHARE_KEYS} == stop_shares(["marker"])


def test_stock_experience_counts_the_made_up_turn(tok):
    ids = M.chain_ids(tok)[1:]
    exp = _generator(tok)._process_response_into_experience(_response(tok, ids), max_len=512)
    assert int(exp.action_mask.sum()) == M.RESPONSE_LEN == 12
    assert not any(k in exp.info for k in SHARE_KEYS)


@pytest.mark.parametrize("resp,truncated,kind,n", [
    (["So", "<|endoftext|>"], False, "eos", 2),
    (["So", "\\boxed", "{"], True, "length", 3),
    (["So", "\\boxed"], False, "other", 2),
])
def test_stop_kinds(tok, seam, resp, truncated, kind, n):
    ids = [tok.convert_tokens_to_ids(t if t.startswith("<|") else tok.tokenize(t)[0]) for t in resp]
    exp = _generator(tok)._process_response_into_experience(_response(tok, ids, truncated=truncated), max_len=512)
    assert int(exp.action_mask.sum()) == n
    assert {k: float(exp.info[k][0]) for k in SHARE_KEYS} == stop_shares([kind])


def test_dispatch_sends_the_marker_ids(tok, seam, monkeypatch):
    """The stock dispatch builds its SamplingParams by the module-global name; inside the wrapped
    dispatch that name adds the rule's stops (vLLM itself is replaced by a recorder here)."""
    import openrlhf.trainer.ppo_utils.samples_generator as sg

    made = []
    monkeypatch.setattr(seam, "STOCK_SAMPLING_PARAMS", lambda **kw: made.append(kw) or kw)
    monkeypatch.setattr(seam, "STOCK_DISPATCH", lambda self, *a, **k: sg.SamplingParams(temperature=1.0, top_p=1.0))
    gen = _generator(tok)
    out = sg.SamplesGenerator._dispatch_prompts_to_vllm(gen, ["p"], ["7"])
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert out == dict(temperature=1.0, top_p=1.0, stop_token_ids=[im_end, eot], stop=["</s>"])
    sg.SamplingParams(temperature=0.5)  # outside a dispatch: the stock arguments only
    assert made[-1] == dict(temperature=0.5)


def test_rollout_stats_and_metrics_line_carry_the_shares():
    from openrlhf.trainer.ppo_utils.experience import Experience

    from repro.trainers.openrlhf.metrics import record_from_status, rollout_stats

    kinds = ["marker", "marker", "eos", "length", "marker", "other"]
    exps = []
    for rows in ([0, 1, 2, 3], [4, 5]):
        am = torch.ones(len(rows), 3, dtype=torch.bool)
        info = {"reward": torch.ones(len(rows))}
        info.update({k: torch.tensor([float(kinds[r] == k[5:]) for r in rows]) for k in SHARE_KEYS})
        exps.append(Experience(action_mask=am, advantages=torch.zeros(len(rows), 3), index=rows, info=info))
    st = rollout_stats(exps, 3)
    assert {k: st[f"lgrpo/{k}"] for k in SHARE_KEYS} == pytest.approx({
        "stop_marker": 3 / 6, "stop_eos": 1 / 6, "stop_length": 1 / 6, "stop_other": 1 / 6}, abs=1e-12)
    status = {"ppo_clip_ratio": 0.0, "rollout/reward_mean": 1.0, "rollout/response_length_mean": 3.0,
              "rollout/truncated_rate": 1 / 6, "lgrpo/lambda": 0.0, "lgrpo/f_mean": 1.0, "lgrpo/f_std": 0.0,
              "lgrpo/f_min": 1.0, "lgrpo/f_max": 1.0, "lgrpo/optimizer_steps": 1, **st}
    rec = record_from_status(status, rollout=1, method="lambda", time_s=0.0)
    assert {k: rec[k] for k in SHARE_KEYS} == {k: st[f"lgrpo/{k}"] for k in SHARE_KEYS}
    assert not any(f"lgrpo/{k}" in rec for k in SHARE_KEYS)


def test_the_ppo_trainer_actor_installs_the_rule(monkeypatch):
    """The samples generator runs inside the PPO trainer's Ray actor: the package's trainer
    installs the rule there, before the stock constructor builds the generator."""
    import openrlhf.trainer.ppo_utils.samples_generator as sg

    from repro.trainers.openrlhf import patches, stop

    class StockInit(Exception):
        pass

    def stock_init(self, *a, **k):
        assert sg.SamplingParams is stop.sampling_params  # already installed here
        raise StockInit

    stop.uninstall()
    monkeypatch.setattr(patches.STOCK_PPO_TRAINER.__ray_actor_class__, "__init__", stock_init)
    t = patches._LambdaPPOTrainerBase.__new__(patches._LambdaPPOTrainerBase)
    try:
        with pytest.raises(StockInit):
            patches._LambdaPPOTrainerBase.__init__(t)
        assert sg.SamplesGenerator._process_response_into_experience is not stop.STOCK_PROCESS
    finally:
        stop.uninstall()
