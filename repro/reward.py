"""The paper's reward rule (Sec. 3): +1 correct, -0.5 wrong but boxed, -1 no ``\\boxed{}``."""
from __future__ import annotations

from typing import Callable

from repro.grading import get_grader
from repro.grading.extract import last_boxed

CORRECT, WRONG_BOXED, NO_BOX = 1.0, -0.5, -1.0


def reward(response: str, gold: str, grader: str | Callable[[str, str], bool] = "simple") -> float:
    """Reward of one response against its gold answer, graded on the content of the response's
    last ``\\boxed{}`` by ``grader``: a registered grader's name, or any ``(pred, gold) -> bool``
    (the OpenRLHF reward file passes one that runs the grader under a timeout)."""
    box = last_boxed(response)
    if box is None or box == "":
        return NO_BOX
    grade = get_grader(grader) if isinstance(grader, str) else grader
    return CORRECT if grade(box, gold) else WRONG_BOXED


def is_correct(r: float) -> bool:
    return r == CORRECT
