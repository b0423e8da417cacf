"""OpenRLHF's reward file, loaded and called the way OpenRLHF 0.11.2 does it: the file is executed
with ``spec_from_file_location`` (``SingleTurnAgentExecutor.__init__``) and ``reward_func`` is
called with one sample per call from ``asyncio.to_thread`` worker threads."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from repro.grading import get_grader, register_grader
from repro.reward import reward as paper_reward

REPO = Path(__file__).resolve().parents[1]
REWARD_FILE = REPO / "repro" / "trainers" / "openrlhf" / "reward_fn.py"

PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 6*7?\n"
          "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
          "<|im_start|>assistant\n")
STUCK = "10^{10^{10}}"  # the qwen grader's sympy call on this runs for minutes inside C code


_loaded = []


@pytest.fixture(autouse=True)
def _close_pools():
    yield
    while _loaded:  # stop the workers each loaded copy of the file started
        for pool in _loaded.pop()._pools.values():
            pool.close()


def load_reward_file(monkeypatch, **env):
    for k in ("LGRPO_GRADER", "LGRPO_GRADER_TIMEOUT", "LGRPO_GRADER_WORKERS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("reward_func", REWARD_FILE)  # as OpenRLHF does
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _loaded.append(mod)
    return mod


def call_as_openrlhf(mod, queries, prompts, labels):
    """One ``asyncio.to_thread(reward_func, [q], [p], [l])`` per sample, gathered (agent.py)."""
    async def run():
        return await asyncio.gather(*[asyncio.to_thread(mod.reward_func, [q], [p], [lab])
                                      for q, p, lab in zip(queries, prompts, labels)])
    return asyncio.run(run())


# Misbehave on "42" only: the pool warms a grader up on other answers (repro.grading.pool).
# Registered when this module is imported, as graders must be: the grading workers are started by
# the forkserver, which imports this module to find them (a registration made inside a fixture
# would exist in this process only, and the worker would answer "unknown grader").
@register_grader("test-slow")
def _slow(pred, gold):
    if pred == "42":
        time.sleep(30.0)
    return True


@register_grader("test-spin")
def _spin(pred, gold):  # holds the GIL: a thread running this could never be stopped
    while pred == "42":
        pass
    return False


@register_grader("test-boom")
def _boom(pred, gold):
    if pred == "42":
        raise RuntimeError("grader exploded")
    return False


TABLE = [  # response, label, grader, reward, status
    ("6*7 = 42, so \\boxed{42}.<|im_end|>", "42", "simple", 1.0, "ok"),
    ("It is \\boxed{41}<|im_end|>", "42", "simple", -0.5, "ok"),
    ("The answer is 42.<|im_end|>", "42", "simple", -1.0, "no_box"),  # the prompt's \boxed{} is not counted
    ("\\boxed{}<|endoftext|>", "42", "simple", -1.0, "no_box"),
    ("first \\boxed{1} then \\boxed{42}", "42", "simple", 1.0, "ok"),  # the last box counts
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "simple", 1.0, "ok"),  # nested braces
    ("\\boxed{42}", "42", "test-slow", -0.5, "timeout"),
    ("\\boxed{42}", "42", "test-spin", -0.5, "timeout"),
    ("\\boxed{42}", "42", "test-boom", -1.0, "error"),
    ("\\boxed{42}", None, "simple", -1.0, "error"),  # no label
]


@pytest.mark.parametrize("resp,label,grader,reward,status", TABLE)
def test_reward_table(monkeypatch, caplog, resp, label, grader, reward, status):
    mod = load_reward_file(monkeypatch, LGRPO_GRADER="simple", LGRPO_GRADER_TIMEOUT="0.5", LGRPO_GRADER_WORKERS="1")
    with caplog.at_level(logging.WARNING, logger="repro.reward_fn"):
        got = mod.score_one(PROMPT + resp, PROMPT, label, grader_name=grader, timeout_s=0.5)
    assert got == (reward, status)
    if isinstance(label, str) and grader == "simple":  # the paper's rule computed directly
        assert got[0] == paper_reward(mod.response_text(PROMPT + resp, PROMPT), label, "simple")
    if status in ("timeout", "error"):
        assert any(("timed out" if status == "timeout" else "reward failed") in r.getMessage()
                   for r in caplog.records)


def test_stuck_sympy_times_out_through_reward_func_and_the_worker_dies(monkeypatch):
    """The real qwen grader on a pathological answer, through the path the rollout actor calls.
    The stuck item is killed with its worker process at the deadline, the other samples are
    graded, and afterwards this process is not burning CPU (a daemon thread would be)."""
    assert get_grader("qwen")("42", "42")
    mod = load_reward_file(monkeypatch, LGRPO_GRADER="qwen", LGRPO_GRADER_TIMEOUT="1.5", LGRPO_GRADER_WORKERS="2")
    pool = mod.pool_for("qwen", 1.5)
    workers_before = {p.pid for p in mp.active_children()}
    resp = [f"\\boxed{{{STUCK}}}", "\\boxed{42}", "\\boxed{\\frac{84}{2}}", "\\boxed{41}", "no box"]
    t = time.perf_counter()
    outs = call_as_openrlhf(mod, [PROMPT + r for r in resp], [PROMPT] * len(resp), ["42"] * len(resp))
    elapsed = time.perf_counter() - t
    assert [o["rewards"].tolist() for o in outs] == [[-0.5], [1.0], [1.0], [-0.5], [-1.0]]
    assert [o["scores"].tolist() for o in outs] == [[0.0], [1.0], [1.0], [0.0], [0.0]]
    assert [o["extra_logs"]["grader_timeout"].tolist() for o in outs] == [[1.0], [0.0], [0.0], [0.0], [0.0]]
    assert elapsed < 1.5 + 20  # one deadline, plus a worker restart on a loaded 2-core machine
    # the worker that held the stuck item is gone; no grading process is left running it
    alive = {p.pid for p in mp.active_children()}
    assert workers_before - alive, "the stuck worker was not killed"
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(1.0)
    assert time.process_time() - cpu0 < 0.5 * (time.perf_counter() - wall0)
    # the pool still grades after the kill
    assert mod.reward_func([PROMPT + "\\boxed{42}"], [PROMPT], ["42"])["rewards"].tolist() == [1.0]
    assert pool is mod.pool_for("qwen", 1.5)


def test_many_threads_share_the_pool(monkeypatch):
    """More concurrent samples than workers: each waits for a worker, none loses its deadline."""
    mod = load_reward_file(monkeypatch, LGRPO_GRADER="simple", LGRPO_GRADER_TIMEOUT="5", LGRPO_GRADER_WORKERS="2")
    labels = [str(i) for i in range(24)]
    queries = [PROMPT + f"\\boxed{{{i if i % 3 else i + 1}}}" for i in range(24)]
    outs = call_as_openrlhf(mod, queries, [PROMPT] * 24, labels)
    assert [o["rewards"].item() for o in outs] == [1.0 if i % 3 else -0.5 for i in range(24)]
    with pytest.raises(ValueError):
        mod.reward_func(["a"], [], [])


@pytest.mark.parametrize("env,msg", [
    ({"LGRPO_GRADER": "no-such-grader"}, "LGRPO_GRADER='no-such-grader': unknown grader"),
    ({"LGRPO_GRADER": "simple", "LGRPO_GRADER_TIMEOUT": "ten"}, "LGRPO_GRADER_TIMEOUT"),
    ({"LGRPO_GRADER": "simple", "LGRPO_GRADER_TIMEOUT": "0"}, "LGRPO_GRADER_TIMEOUT > 0"),
    ({"LGRPO_GRADER": "simple", "LGRPO_GRADER_WORKERS": "0"}, "LGRPO_GRADER_WORKERS >= 1"),
])
def test_a_bad_grader_setting_fails_when_openrlhf_loads_the_file(monkeypatch, env, msg):
    """Raised from exec_module, i.e. from SingleTurnAgentExecutor.__init__ at the start of the
    run, not per sample (where OpenRLHF would log it and drop the reward)."""
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(">", ">")):
        load_reward_file(monkeypatch, **env)
