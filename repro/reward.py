"""The paper's reward rule (Sec. 3): +1 correct, -0.5 wrong but boxed, -1 no ``\\boxed{}``."""
from __future__ import annotations

from repro.grading import get_grader
from repro.grading.extract import last_boxed

CORRECT, WRONG_BOXED, NO_BOX = 1.0, -0.5, -1.0


def reward(response: str, gold: str, grader: str = "simple") -> float:
    """Reward of one response against its gold answer, graded by the named grader on the content
    of the response's last ``\\boxed{}``."""
    box = last_boxed(response)
    if box is None or box == "":
        return NO_BOX
    return CORRECT if get_grader(grader)(box, gold) else WRONG_BOXED


def is_correct(r: float) -> bool:
    return r == CORRECT
