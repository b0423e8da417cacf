"""Grader ``math-verify``: the maintained ``math-verify`` library (Hugging Face), a second column.

Both strings are wrapped in ``\\boxed{}`` (the prediction has already been extracted from the
response by ``repro.grading.qwen.extract_answer``; surrounding ``$`` are removed first) and parsed
with the library's default LaTeX + expression extraction; ``verify(gold, pred)`` is called with
the gold first, as the library requires (it is asymmetric on purpose).

The library's own timeouts use SIGALRM, which only works in a process's main thread; this
grader turns them off and relies on the caller's per-item timeout (``repro.grading.pool``) instead.
"""
from __future__ import annotations

import logging
from functools import lru_cache

from repro.grading import register_grader

# The library warns on every call that its own timeout is off; the caller's timeout replaces it.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _boxed(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    return "\\boxed{" + s + "}"


@lru_cache(maxsize=4096)
def _parse(text: str):
    """The library's parse of ``\\boxed{text}`` (cached: a gold is parsed once per worker).
    A tuple, so that a cached value cannot be changed by a caller."""
    from math_verify import parse

    return tuple(parse(_boxed(text), parsing_timeout=None))


@register_grader("math-verify")
def math_verify_grade(pred: str, gold: str) -> bool:
    if not isinstance(pred, str) or not isinstance(gold, str) or not pred.strip():
        return False
    try:
        from math_verify import verify

        g, p = list(_parse(gold)), list(_parse(pred))
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=None))
    except Exception:
        return False
