"""The stop rule through the real vLLM and OpenRLHF 0.11.2's own rollout code, on CPU.

A tiny Qwen2 with a Qwen2.5-style tokenizer (``tests/stop_model.py``) writes a right answer,
``<|im_end|>``, a made-up next turn with a wrong box, and ``<|endoftext|>`` (its EOS, as a base
Qwen2.5). One OpenRLHF ``RolloutRayActor`` (``trainer/ray/vllm_engine.py``: a vLLM 0.29
``AsyncLLMEngine`` in a Ray actor, CPU build) loads it, with the package's reward file as
``remote_rm_url`` (loaded and called by OpenRLHF's ``SingleTurnAgentExecutor``). The stock
``SamplesGenerator`` (``trainer/ppo_utils/samples_generator.py``) draws prompts, dispatches them to
that actor, and turns each response into an ``Experience`` -- once as shipped (no stop: the
response runs to the EOS) and once with ``repro.trainers.openrlhf.stop.install()``.

Asserted on what the runs produced: the action mask's length (12 tokens as shipped, 6 with the
rule: up to and including ``<|im_end|>``, the length ``repro.eval`` would score), the last action
token, the reward (+1: the reward file grades up to the first end marker in both cases), the
stop_token_ids the engine received, and the stop kinds (``marker`` / ``length``). Last, the
evaluation's own vLLM backend on the same model returns the same text.

Not a shim but a choice: the actor is created with ``num_gpus=0`` and ``num_cpus=1`` instead of
``create_vllm_engines``' GPU placement group (``vllm_engine.py:226-229``; this machine has no GPU).
The ``strategy`` passed to ``SamplesGenerator`` is a namespace holding the installed OpenRLHF
parser's ``args`` (``SamplesGenerator`` reads only ``strategy.args``, ``samples_generator.py:52``).

Runs in the engine venv; in ``.venv`` it is skipped. About 2-4 minutes on 2 shared cores.
"""
from __future__ import annotations

import os
import types
from pathlib import Path

import pytest
from openrlhf_cpu import engines_missing


_MISSING = engines_missing(("vllm", "ray", "openrlhf"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]

REPO = Path(__file__).resolve().parents[1]
G = 4  # samples per prompt


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import stop_model as M

    return M.build(tmp_path_factory.mktemp("stopmodel"))


@pytest.fixture(scope="module")
def engine(folder):
    import ray

    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "LGRPO_GRADER": "simple", "LGRPO_GRADER_TIMEOUT": "10", "LGRPO_GRADER_WORKERS": "1",
           "OMP_NUM_THREADS": "1"}
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    actor = RolloutRayActor.options(num_cpus=1, num_gpus=0).remote(
        model=str(folder), num_gpus=0, remote_rm_url=str(REPO / "repro/trainers/openrlhf/reward_fn.py"),
        dtype="float32", enforce_eager=True, gpu_memory_utilization=0.05, max_model_len=256, seed=0,
        distributed_executor_backend="uni")
    ray.get(actor.get_num_unfinished_requests.remote())  # the engine is up
    try:
        yield folder, actor
    finally:
        ray.kill(actor)
        ray.shutdown()


def _generate(folder, actor, *, max_new_tokens: int, with_rule: bool):
    """One rollout batch (2 prompts x G) through the stock SamplesGenerator; the Experiences and the
    SamplingParams each dispatch sent."""
    import openrlhf.trainer.ppo_utils.samples_generator as sg
    from transformers import AutoTokenizer

    from repro.eval.prompts import build_prompt
    from repro.trainers.openrlhf import stop
    from repro.trainers.openrlhf.local_actor import parse_args

    args = parse_args(["--actor.model_name_or_path", str(folder), "--rollout.batch_size", "2",
                       "--rollout.n_samples_per_prompt", str(G), "--rollout.max_new_tokens", str(max_new_tokens),
                       "--data.max_len", "256", "--algo.advantage.estimator", "group_norm"])
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = [build_prompt("What is 3+4?"), build_prompt("And 5+2?")]
    loader = [(None, prompts, ["7", "7"], [None, None])]
    gen = sg.SamplesGenerator(types.SimpleNamespace(args=args), loader, None, tok, [actor])
    sent = []
    if with_rule:
        stop.install()
    else:
        stop.uninstall()
    make = sg.SamplingParams

    def record(**kw):
        sp = make(**kw)
        sent.append(sp)
        return sp

    sg.SamplingParams = record
    try:
        kwargs = dict(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, max_len=256,
                      skip_special_tokens=False, n_samples_per_prompt=G)  # as train_ppo_ray passes them
        experiences, _, _, _ = gen.generate_samples(**kwargs)
    finally:
        sg.SamplingParams = make
        stop.uninstall()
    return tok, experiences, sent


def _action(exp):
    mask = exp.action_mask[0].bool()
    return exp.sequences[0, 1:][mask].tolist()  # action_mask is aligned with sequences[1:]


def test_as_shipped_the_response_runs_past_im_end(engine):
    import stop_model as M

    folder, actor = engine
    tok, exps, sent = _generate(folder, actor, max_new_tokens=32, with_rule=False)
    assert len(exps) == 2 * G and len(sent) == 1
    assert not sent[0].stop_token_ids  # OpenRLHF 0.11.2 sends no stop
    for e in exps:
        act = _action(e)
        assert tok.decode(act) == M.RESPONSE_TEXT
        assert int(e.action_mask.sum()) == M.RESPONSE_LEN == 12  # the made-up turn counted
        assert float(e.info["reward"][0]) == 1.0  # the reward file grades up to <|im_end|>


def test_with_the_rule_the_action_ends_at_im_end(engine):
    import stop_model as M
    from repro.stop import stop_shares
    from repro.trainers.openrlhf.stop import SHARE_KEYS

    folder, actor = engine
    tok, exps, sent = _generate(folder, actor, max_new_tokens=32, with_rule=True)
    im_end, eot = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert list(sent[0].stop_token_ids) == [im_end, eot] and list(sent[0].stop) == ["</s>"]
    for e in exps:
        act = _action(e)
        assert int(e.action_mask.sum()) == len(act) == M.SCORED_LEN == 6
        assert act[-1] == im_end
        assert tok.decode(act, skip_special_tokens=True) == M.SCORED_TEXT
        assert int(e.response_length[0]) == 6 and not bool(e.truncated[0])
        assert float(e.info["reward"][0]) == 1.0
        assert {k: float(e.info[k][0]) for k in SHARE_KEYS} == stop_shares(["marker"])


def test_with_the_rule_a_capped_response_is_a_length_stop(engine):
    from repro.trainers.openrlhf.stop import SHARE_KEYS

    folder, actor = engine
    tok, exps, _ = _generate(folder, actor, max_new_tokens=3, with_rule=True)
    for e in exps:
        assert int(e.action_mask.sum()) == 3 and bool(e.truncated[0])
        assert tok.decode(_action(e)) == "So\\boxed{"
        assert float(e.info["reward"][0]) == -1.0  # no closed box
        assert {k: float(e.info[k][0]) for k in SHARE_KEYS} == {
            "stop_marker": 0.0, "stop_eos": 0.0, "stop_length": 1.0, "stop_other": 0.0}


def test_eval_vllm_backend_scores_the_same_text(folder):
    """The evaluation's vLLM backend (``repro.eval.backends.VLLMBackend``, a real ``vllm.LLM``):
    its stop strings alone never stopped at ``<|im_end|>`` (vLLM matches them on text decoded
    without special tokens: it returned 'So\\boxed{7}user\\fbox 2'); with the marker ids it scores
    the text the trainers now grade."""
    import stop_model as M
    from repro.eval.backends import VLLMBackend
    from repro.eval.prompts import STOP, build_prompt
    from repro.reward import reward

    be = VLLMBackend(str(folder), seed=0, dtype="float32", gpu_memory_utilization=0.05, max_model_len=256)
    try:
        prompts = [build_prompt("What is 3+4?"), build_prompt("And 5+2?")]
        greedy = be.generate(prompts, n=1, temperature=0.0, max_tokens=32, stop=list(STOP))
        sampled = be.generate(prompts[:1], n=2, temperature=1.0, top_p=0.95, max_tokens=32, stop=list(STOP))
    finally:
        del be
    assert greedy == [[M.SCORED_TEXT], [M.SCORED_TEXT]] and sampled == [[M.SCORED_TEXT] * 2]
    assert reward(greedy[0][0], M.GOLD) == 1.0
