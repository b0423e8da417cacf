"""The paper's reward as a TRL reward function: +1 correct, -0.5 wrong but boxed, -1 no box.

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)`` once per
generation batch with the dataset's other columns as lists (here ``label``, the gold answer) and
wants one float per completion. A completion ends at the evaluation's first end marker
(``run.apply_stop_rule``), and ``repro.reward.reward`` grades the text up to the first end marker
too (``repro.stop.cut``). Each answer is graded by the package's grader
(``repro.reward.reward`` with ``repro.grading``) in a worker process of
``repro.grading.pool.GradingPool``, so a stuck sympy call is killed at its deadline: a timed-out
answer is boxed but not shown correct (-0.5), a grader error or crash gives -1, as in the OpenRLHF
reward file. ``workers=0`` grades in this process without a timeout (trusted, small inputs only).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from repro.reward import NO_BOX, reward

log = logging.getLogger("repro.trainers.trl.reward")


class PaperReward:
    __name__ = "paper_reward"  # TRL names each reward function's metrics by ``__name__``

    def __init__(self, grader: str = "qwen", *, timeout_s: float = 10.0, workers: int = 4,
                 label_key: str = "label"):
        from repro.grading.pool import GradingPool, resolve

        resolve(grader, None)  # an unknown grader fails here, before training starts
        self.grader, self.label_key, self.workers = grader, label_key, int(workers)
        self.pool = GradingPool(grader, workers=workers, timeout=timeout_s, clock="wall").start() if workers > 0 else None
        self.flags = {"timeout": 0, "error": 0}

    def _grade(self, pred: str, gold: str) -> bool:
        if self.pool is None:
            from repro.grading.pool import grade_one

            res = grade_one(self.grader, pred, gold)
        else:
            res = self.pool.grade(pred, gold)
        if res.flagged == "timeout":
            self.flags["timeout"] += 1
            log.warning("grader %r timed out on %r (gold %r)", self.grader, pred[:80], gold[:80])
            return False
        if res.flagged:
            raise RuntimeError(f"grading {res.flagged} on {pred[:80]!r}")
        return res.correct

    def score(self, completion: str, gold) -> float:
        try:
            if not isinstance(gold, str):
                raise TypeError(f"gold answer must be a string, got {type(gold).__name__}")
            return reward(completion, gold, grader=self._grade)
        except Exception as e:  # noqa: BLE001 - any failure is the -1 reward, counted and logged
            self.flags["error"] += 1
            log.warning("reward failed (%s: %s); giving %s", type(e).__name__, e, NO_BOX)
            return NO_BOX

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        if self.label_key not in kwargs:
            raise KeyError(f"the dataset has no {self.label_key!r} column (the gold answers)")
        golds = kwargs[self.label_key]
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        if len(texts) != len(golds):
            raise ValueError(f"{len(texts)} completions, {len(golds)} gold answers")
        if self.pool is None or len(texts) == 1:
            return [self.score(t, g) for t, g in zip(texts, golds)]
        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            return list(ex.map(self.score, texts, golds))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
