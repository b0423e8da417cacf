"""The reward file for OpenRLHF's ``--reward.remote_url /abs/path/reward_fn.py``.

OpenRLHF loads ``reward_func(queries, prompts, labels)`` inside each vLLM engine actor and calls
it from worker threads (``asyncio.to_thread``), one sample at a time. ``query`` is the decoded
prompt + response; the response is graded up to its first end marker (``repro.stop.cut``, the text
the evaluation scores). The reward is the paper's rule (``repro.reward``): +1 correct, -0.5 wrong
but boxed, -1 no ``\\boxed{}``, graded by the package's grader (env ``LGRPO_GRADER``, default ``qwen``).

Settings, read when OpenRLHF loads this file (once per engine actor, at the start of the run):
``LGRPO_GRADER`` (default ``qwen``), ``LGRPO_GRADER_TIMEOUT`` seconds per answer (default 10),
``LGRPO_GRADER_WORKERS`` grading processes per actor (default 4). A grader that cannot be
resolved, or a bad number, raises here, so the run stops at start instead of giving every sample
-1 (OpenRLHF turns an exception inside ``reward_func`` into a logged line and no reward).

Each answer is graded in a worker process of ``repro.grading.pool.GradingPool``: a stuck sympy
call (``10^{10^{10}}``) is killed at its deadline with its process, and never holds the actor's
GIL. A timed-out answer has a box, so it gets the wrong-but-boxed reward -0.5, flagged
``grader_timeout``; a grader error, a crashed worker or bad input gives -1, flagged
``grader_error``; both are logged as warnings.
"""
from __future__ import annotations

import logging
import os
import threading

import torch

from repro.grading.pool import GradingPool
from repro.reward import CORRECT, NO_BOX, reward
from repro.stop import cut

log = logging.getLogger("repro.reward_fn")
if not log.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("[reward_fn] %(levelname)s %(message)s"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)

DEFAULT_GRADER = "qwen"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_WORKERS = 4

_ASSISTANT = "<|im_start|>assistant"


def settings_from_env(env=os.environ) -> tuple[str, float, int]:
    """(grader, timeout_s, workers) from the environment; a clear error for bad values."""
    grader = env.get("LGRPO_GRADER", DEFAULT_GRADER)
    try:
        timeout_s = float(env.get("LGRPO_GRADER_TIMEOUT", DEFAULT_TIMEOUT_S))
        workers = int(env.get("LGRPO_GRADER_WORKERS", DEFAULT_WORKERS))
    except ValueError as e:
        raise ValueError(f"reward_fn: LGRPO_GRADER_TIMEOUT / LGRPO_GRADER_WORKERS: {e}") from None
    if not timeout_s > 0 or workers < 1:
        raise ValueError(f"reward_fn: need LGRPO_GRADER_TIMEOUT > 0 and LGRPO_GRADER_WORKERS >= 1, "
                         f"got {timeout_s} and {workers}")
    return grader, timeout_s, workers


_pools: dict[tuple[str, float], GradingPool] = {}
_pools_lock = threading.Lock()


def pool_for(grader: str, timeout_s: float, workers: int = DEFAULT_WORKERS) -> GradingPool:
    """The process pool for ``grader`` (one per grader and timeout, started on first use)."""
    key = (grader, float(timeout_s))
    with _pools_lock:
        if key not in _pools:
            # training rewards keep the wall-clock rule: a step waits on them, and a grader
            # that stalls without using CPU must not hold it for the CPU budget's wall cap
            try:
                _pools[key] = GradingPool(grader, workers=workers, timeout=timeout_s, clock="wall")
            except ValueError as e:
                raise ValueError(f"reward_fn: LGRPO_GRADER={grader!r}: {e}") from None
        return _pools[key]


# At load: resolve the grader and start its workers (an unknown grader stops the run here).
GRADER, TIMEOUT_S, WORKERS = settings_from_env()
pool_for(GRADER, TIMEOUT_S, WORKERS).start()


def response_text(query: str, prompt: str) -> str:
    """The model's response inside OpenRLHF's decoded prompt+response ``query``, up to its first
    end marker (``repro.stop.cut``): the text the evaluation would score."""
    if prompt and query.startswith(prompt):
        resp = query[len(prompt):]
    elif _ASSISTANT in query:
        # the prompt's own assistant header is the first one; a made-up next turn may add more
        resp = query.split(_ASSISTANT, 1)[1].lstrip("\n")
    else:
        raise ValueError("cannot locate the response in the query (prompt prefix not found)")
    return cut(resp)


def score_one(query: str, prompt: str, label, *, grader_name: str | None = None,
              timeout_s: float | None = None) -> tuple[float, str]:
    """Reward of one sample and what happened: ``ok`` | ``no_box`` | ``timeout`` | ``error``."""
    try:
        pool = pool_for(grader_name or GRADER, TIMEOUT_S if timeout_s is None else timeout_s, WORKERS)
        if not isinstance(label, str):
            raise TypeError(f"label must be a string, got {type(label).__name__}")
        flags = []

        def grade(pred: str, gold: str) -> bool:
            res = pool.grade(pred, gold)
            flags.append(res.flagged)
            if res.flagged == "timeout":
                log.warning("grader %r timed out after %.1fs on %r (gold %r); its worker was killed",
                            pool.grader, pool.timeout, pred[:80], gold[:80])
            elif res.flagged:
                raise RuntimeError(f"grading {res.flagged} on {pred[:80]!r}")
            return res.correct  # a timed-out answer is boxed but not shown correct: -0.5

        r = reward(response_text(query, prompt), label, grader=grade)
        return r, ("no_box" if r == NO_BOX else "timeout" if "timeout" in flags else "ok")
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
