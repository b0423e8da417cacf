"""The paper's reward rule (Sec. 3): +1 correct, -0.5 wrong but boxed, -1 no ``\\boxed{}``,
on the text the evaluation scores: the response up to its first end marker (``repro.stop.cut``)."""
from __future__ import annotations

from typing import Callable

from repro.grading import get_grader
from repro.grading.extract import last_boxed
from repro.stop import cut

CORRECT, WRONG_BOXED, NO_BOX = 1.0, -0.5, -1.0


def reward(response: str, gold: str, grader: str | Callable[[str, str], bool] = "simple") -> float:
    """Reward of one response against its gold answer, graded on the content of the last
    ``\\boxed{}`` before the response's first end marker (``repro.stop.cut``: what the
    evaluation scores; a made-up next turn after ``<|im_end|>`` does not count) by ``grader``: a
    registered grader's name, or any ``(pred, gold) -> bool`` (the OpenRLHF reward file passes
    one that runs the grader under a timeout)."""
    box = last_boxed(cut(response))
    if box is None or box == "":
        return NO_BOX
    grade = get_grader(grader) if isinstance(grader, str) else grader
    return CORRECT if grade(box, gold) else WRONG_BOXED


def is_correct(r: float) -> bool:
    return r == CORRECT
