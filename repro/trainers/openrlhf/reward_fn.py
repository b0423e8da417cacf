"""The reward file for OpenRLHF's ``--reward.remote_url /abs/path/reward_fn.py``.

OpenRLHF loads ``reward_func(queries, prompts, labels)`` inside each vLLM engine actor and calls
it from worker threads (``asyncio.to_thread``), one sample at a time. ``query`` is the decoded
prompt + response. The reward is the paper's rule (``repro.reward``): +1 correct, -0.5 wrong but
boxed, -1 no ``\\boxed{}``, graded by the package's grader (env ``LGRPO_GRADER``, default ``qwen``).

Failure handling (never a silent ``None``, which OpenRLHF would turn into a missing reward):

* the grader runs in a daemon thread with a timeout (``LGRPO_GRADER_TIMEOUT`` seconds, default
  10). Signal-based timeouts (``signal.alarm``, what OpenRLHF's and many sympy helpers use) only
  work on the main thread; a thread join works on any thread. A timed-out answer has a box, so it
  gets the wrong-but-boxed reward -0.5, and a warning is logged. The stuck thread cannot be
  killed; it is a daemon, and the number still running is logged.
* any exception (in extraction, grading, or bad input) gives -1 and a logged warning.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from repro.grading import get_grader
from repro.reward import CORRECT, NO_BOX, reward

log = logging.getLogger("repro.reward_fn")
if not log.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("[reward_fn] %(levelname)s %(message)s"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)

DEFAULT_GRADER = "qwen"
DEFAULT_TIMEOUT_S = 10.0
_stuck_lock = threading.Lock()
_stuck_threads: list[threading.Thread] = []

_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_ASSISTANT = "<|im_start|>assistant"


def response_text(query: str, prompt: str) -> str:
    """The model's response inside OpenRLHF's decoded prompt+response ``query``."""
    if prompt and query.startswith(prompt):
        resp = query[len(prompt):]
    elif _ASSISTANT in query:
        resp = query.rsplit(_ASSISTANT, 1)[1].lstrip("\n")
    else:
        raise ValueError("cannot locate the response in the query (prompt prefix not found)")
    for m in _END_MARKERS:
        resp = resp.replace(m, "")
    return resp


def grade_with_timeout(grader, pred: str, gold: str, timeout_s: float) -> bool | None:
    """``grader(pred, gold)`` in a daemon thread. Returns None on timeout; re-raises its error."""
    out: dict = {}

    def run():
        try:
            out["ok"] = bool(grader(pred, gold))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["err"] = e

    t = threading.Thread(target=run, name="repro-grader", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        with _stuck_lock:
            _stuck_threads[:] = [x for x in _stuck_threads if x.is_alive()] + [t]
            n = len(_stuck_threads)
        log.warning("grader timed out after %.1fs on %r (gold %r); %d grader thread(s) still running",
                    timeout_s, pred[:80], gold[:80], n)
        return None
    if "err" in out:
        raise out["err"]
    return out["ok"]


def score_one(query: str, prompt: str, label, *, grader_name: str | None = None,
              timeout_s: float | None = None) -> tuple[float, str]:
    """Reward of one sample and what happened: ``ok`` | ``no_box`` | ``timeout`` | ``error``."""
    grader_name = grader_name or os.environ.get("LGRPO_GRADER", DEFAULT_GRADER)
    timeout_s = float(timeout_s if timeout_s is not None else os.environ.get("LGRPO_GRADER_TIMEOUT", DEFAULT_TIMEOUT_S))
    try:
        if not isinstance(label, str):
            raise TypeError(f"label must be a string, got {type(label).__name__}")
        grader = get_grader(grader_name)
        timed_out = False

        def grade(pred: str, gold: str) -> bool:
            nonlocal timed_out
            ok = grade_with_timeout(grader, pred, gold, timeout_s)
            timed_out = ok is None
            return bool(ok)  # a timed-out answer is boxed but not shown correct: -0.5

        r = reward(response_text(query, prompt), label, grader=grade)
        return r, ("no_box" if r == NO_BOX else "timeout" if timed_out else "ok")
    except Exception as e:  # noqa: BLE001 - any failure is the -1 reward, logged
        log.warning("reward failed (%s: %s); giving %s", type(e).__name__, e, NO_BOX)
        return NO_BOX, "error"


def reward_func(queries, prompts, labels, **_kw):
    """OpenRLHF's entry point: lists in, ``{"rewards", "scores", "extra_logs"}`` out."""
    if not (len(queries) == len(prompts) == len(labels)):
        raise ValueError("queries, prompts and labels differ in length")
    rewards, status = [], []
    for q, p, lab in zip(queries, prompts, labels):
        r, s = score_one(q, p, lab)
        rewards.append(r)
        status.append(s)
    rewards_t = torch.tensor(rewards, dtype=torch.float32)
    return {
        "rewards": rewards_t,
        "scores": (rewards_t == CORRECT).float(),  # 0/1, what dynamic filtering reads
        "extra_logs": {
            "grader_timeout": torch.tensor([float(s == "timeout") for s in status]),
            "grader_error": torch.tensor([float(s == "error") for s in status]),
        },
    }
