"""Grader ``qwen``: the package's own implementation of the Qwen2.5-Math / SimpleRL-Zoo grader.

The paper scores Table 1 with the evaluation code of Qwen2.5-Math as forked by SimpleRL-Zoo.
This package re-implements its *behaviour* (as read and measured; see
``shared/notes/eval-protocol.md``), written from scratch, in three stages of one module each:

1. ``extract.extract_answer(response, benchmark)``: the answer string of a model response
   (multiple-choice letters in ``choices``).
2. ``normalise.normalise(s, skip_unit)``: the original's ``strip_string`` (word numbers in
   ``words``), applied as often as the original does per benchmark.
3. ``equal.math_equal(pred, gold)``: string, number, tuple, matrix and symbolic equality
   (the sympy parsers in ``parse``).

This module is the entry point: it registers the graders and re-exports what callers use.

Known difference from the original: its last LaTeX parser, the latex2sympy it bundles, is
replaced by ``latex2sympy2_extended`` (see ``parse``), which rejects some malformed expressions
that the bundled one accepted.

Everything here is pure Python and can be slow on pathological input (``10^{10^{10}}``); the
evaluation runs it in worker processes with a per-item timeout (``repro.grading.pool``).
"""
from __future__ import annotations

from repro.grading import register_grader
from repro.grading.qwen.equal import math_equal
from repro.grading.qwen.extract import extract_answer
from repro.grading.qwen.normalise import normalise, normalise_gold, normalise_pred
from repro.grading.qwen.words import words_to_number
# the two per-benchmark rules, from repro.paper.BENCHMARKS: the sets whose answers keep their
# units (the original skips unit stripping for these), and those whose gold the original extracts
# from a solution's box and normalises three times
from repro.paper import BOXED_GOLD, UNITS_KEPT

__all__ = ["extract_answer", "normalise", "normalise_pred", "normalise_gold", "words_to_number",
           "math_equal", "grade", "qwen_grade", "qwen_grade_keep_units", "qwen_grade_boxed_gold",
           "grader_name_for"]


def grade(pred: str, gold: str, skip_unit: bool = False, boxed_gold: bool = False) -> bool:
    """Qwen-style equivalence of an extracted answer and a gold answer; never raises.

    ``skip_unit``: Minerva's regime (units kept; the gold normalised once). ``boxed_gold``:
    MATH-500's (the gold, a solution's box content, normalised three times)."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    try:
        return bool(math_equal(normalise_pred(pred, skip_unit),
                               normalise_gold(gold, skip_unit, boxed_gold)))
    except Exception:
        return False


@register_grader("qwen")
def qwen_grade(pred: str, gold: str) -> bool:
    return grade(pred, gold)


@register_grader("qwen-keep-units")
def qwen_grade_keep_units(pred: str, gold: str) -> bool:
    """The ``qwen`` grader as the original runs it on Minerva (no unit stripping)."""
    return grade(pred, gold, skip_unit=True)


@register_grader("qwen-boxed-gold")
def qwen_grade_boxed_gold(pred: str, gold: str) -> bool:
    """The ``qwen`` grader as the original runs it on MATH-500 (gold normalised three times)."""
    return grade(pred, gold, boxed_gold=True)


def grader_name_for(grader: str, benchmark: str | None) -> str:
    """The registered grader that ``grader`` means on ``benchmark`` (Minerva keeps units;
    MATH-500's gold is normalised once more)."""
    if grader == "qwen" and benchmark in UNITS_KEPT:
        return "qwen-keep-units"
    if grader == "qwen" and benchmark in BOXED_GOLD:
        return "qwen-boxed-gold"
    return grader
