"""Graders: is a predicted final answer equivalent to the gold answer?

One interface, several implementations behind a registry (``GRADERS``), chosen by name:

* ``simple``: exact string match after light normalisation, else numeric equality (rel. 1e-9).
  Enough for the package's synthetic CPU task, whose answers are integers.

The evaluation pipeline registers its graders here as well. A grader is a callable
``(pred: str, gold: str) -> bool`` that never raises on bad input (it returns False).
"""
from __future__ import annotations

from typing import Callable

from repro.grading.extract import last_boxed

Grader = Callable[[str, str], bool]
GRADERS: dict[str, Grader] = {}


def register_grader(name: str):
    def deco(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return deco


def get_grader(name: str) -> Grader:
    if name not in GRADERS:
        _load_optional()
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; known: {sorted(GRADERS)}")
    return GRADERS[name]


def _load_optional() -> None:
    """Import the heavier graders (sympy, math-verify) only when one is asked for."""
    import importlib

    for mod in ("repro.grading.qwen", "repro.grading.mathverify"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("repro."):
                continue  # that grader is not part of this checkout
            raise


def _normalise(s: str) -> str:
    s = s.strip().strip("$").strip()
    for tok in ("\\!", "\\,", "\\;", "\\ ", "{,}"):
        s = s.replace(tok, "")
    s = s.replace(" ", "")
    if s.endswith("."):
        s = s[:-1]
    return s


def _number(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


@register_grader("simple")
def simple_grade(pred: str, gold: str) -> bool:
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    p, g = _normalise(pred), _normalise(gold)
    if not p:
        return False
    if p == g:
        return True
    a, b = _number(p), _number(g)
    if a is None or b is None:
        return False
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


__all__ = ["GRADERS", "Grader", "get_grader", "register_grader", "last_boxed", "simple_grade"]
