"""Stage 3 of the ``qwen`` grader: is a normalised prediction equal to a normalised gold?

Case-insensitive string match; multiple-choice letters; plain numbers with relative tolerance
1e-4, accepting gold x100 and gold /100 (the percentage rule); bracket-insensitive string match;
element-wise tuples / intervals; pmatrix element-wise; ``lhs=rhs`` handling; symbolic equality
with sympy (``repro.grading.qwen.parse``).
"""
from __future__ import annotations

import math
import re

from repro.grading.qwen.choices import CHOICES, choice_letter
from repro.grading.qwen.parse import parse_math

def plain_number(s) -> float | None:
    """``float`` of a plain number (commas allowed; a trailing ``%`` divides by 100), else None."""
    t = str(s).replace(",", "")
    try:
        return float(t)
    except ValueError:
        pass
    if t.endswith("%"):
        t = t[:-1].rstrip("\\")
        try:
            return float(t) / 100
        except ValueError:
            return None
    return None


REL_TOL = 1e-4  # the original's relative tolerance for numbers


def numbers_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL)


_BRACKETED = re.compile(r"(\(|\[).+(\)|\])")  # not anchored at the end, as in the original
_PMATRIX_OPEN, _PMATRIX_CLOSE = "\\begin{pmatrix}", "\\end{pmatrix}"


def _matrix_rows(s: str) -> list[list[str]] | None:
    for env in ("pmatrix", "bmatrix"):
        o, c = f"\\begin{{{env}}}", f"\\end{{{env}}}"
        if s.startswith(o) and s.endswith(c):
            body = s[len(o):-len(c)]
            return [[x.strip() for x in row.split("&")] for row in body.split("\\\\") if row.strip()]
    return None


def _as_pmatrix(s: str) -> str:
    """Brace groups ``{1,2}`` as column pmatrices (what the original does to a gold when only the
    prediction is a matrix)."""
    groups = re.findall(r"\{.*,.*\}", s.strip())
    if not groups:
        return s
    # a comma becomes ONE backslash, as in the original (not a row break)
    return ", ".join(_PMATRIX_OPEN + g.strip("{}").replace(",", "\\") + _PMATRIX_CLOSE
                     for g in groups)


def math_equal(pred, gold) -> bool:
    """Is the (normalised) ``pred`` equal to the (normalised) ``gold``? May raise on odd input."""
    if pred is None or gold is None:
        return False
    p, g = str(pred).strip(), str(gold).strip()
    if p.lower() == g.lower():
        return True
    if g in CHOICES and choice_letter(p) == g:
        return True
    pv, gv = plain_number(p), plain_number(g)
    if pv is not None and gv is not None:
        return any(numbers_close(pv, t) for t in (gv / 100, gv, gv * 100))  # the percentage rule
    if not p:
        return False
    if "pmatrix" in p and "pmatrix" not in g:
        g = _as_pmatrix(g)
    # bracket-insensitive string match
    ps, gs = p, g
    if (p.startswith("[") and p.endswith("]") and not g.startswith("(")) or \
       (p.startswith("(") and p.endswith(")") and not g.startswith("[")):
        ps, gs = ps.strip("[]()"), gs.strip("[]()")
    drop = str.maketrans("", "", "{}()")
    if ps.translate(drop).lower() == gs.translate(drop).lower():
        return True
    # tuples and intervals, element-wise (bracket type ignored, order kept)
    if _BRACKETED.match(p) and _BRACKETED.match(g):
        pp, gp = p[1:-1].split(","), g[1:-1].split(",")
        if len(pp) == len(gp) and all(math_equal(a, b) for a, b in zip(pp, gp)):
            return True
    # matrices, element-wise
    pm, gm = _matrix_rows(p), _matrix_rows(g)
    if pm is not None and gm is not None and len(pm) == len(gm):
        if all(len(a) == len(b) and all(math_equal(x, y) for x, y in zip(a, b))
               for a, b in zip(pm, gm)):
            return True
    # equations
    if p.count("=") == 1 and g.count("=") == 1:
        pl, pr = p.split("=")
        gl, gr = g.split("=")
        pe, ge = f"{pl.strip()}-({pr.strip()})", f"{gl.strip()}-({gr.strip()})"
        if symbolic_equal(pe, ge) or symbolic_equal(f"-({pe})", ge):
            return True
    elif p.count("=") == 1 and len(p.split("=")[0].strip()) <= 2 and "=" not in g:
        if math_equal(p.split("=")[1], g):
            return True
    elif g.count("=") == 1 and len(g.split("=")[0].strip()) <= 2 and "=" not in p:
        if math_equal(p, g.split("=")[1]):
            return True
    return symbolic_equal(p, g)


_PROBES = (0.7316, 1.4142, 2.3026, 0.5772, 1.6180, 2.7183, 3.1416, 0.3679)


def clearly_unequal(x, y) -> bool:
    """True when the scalar expressions ``x`` and ``y`` differ at two probe points (each free
    symbol set to its own irrational-looking value, complex results allowed).

    A speed-up, not a rule of the original: it only skips the ``equals`` / ``simplify`` steps,
    which cannot succeed for expressions whose difference is numerically non-zero. It answers
    False (inconclusive) for relations, matrices, sets, and wherever evaluation is not finite.
    """
    from sympy import Expr, Float, N

    if not isinstance(x, Expr) or not isinstance(y, Expr):
        return False
    d = x - y
    syms = sorted(d.free_symbols, key=str)
    for shift in (0, 3):
        # substitute Floats and rebuild (xreplace), then evaluate: ``evalf(subs=...)`` recurses
        # through an unevaluated nested product (what sympy's LaTeX parser makes of a word,
        # ``1*(s*(i*(n*...)))``) in time exponential in its depth, seconds for 25 letters
        subs = {s: Float(_PROBES[(k + shift) % len(_PROBES)], 15) for k, s in enumerate(syms)}
        v = complex(N(d.xreplace(subs), 15))
        scale = 1.0 + abs(complex(N(x.xreplace(subs), 15))) + abs(complex(N(y.xreplace(subs), 15)))
        if not (math.isfinite(v.real) and math.isfinite(v.imag) and math.isfinite(scale)):
            return False
        if abs(v) <= 1e-8 * scale:
            return False
    return True


def symbolic_equal(a: str, b: str) -> bool:
    from sympy import N, simplify

    x, y = parse_math(a), parse_math(b)
    try:
        if str(x) == str(y) or x == y:
            return True
    except Exception:
        pass
    try:
        skip = clearly_unequal(x, y)
    except Exception:
        skip = False
    try:
        if not skip and (x.equals(y) or simplify(x - y) == 0):
            return True
    except Exception:
        pass
    try:
        if abs(x.lhs - x.rhs).equals(abs(y.lhs - y.rhs)):
            return True
    except Exception:
        pass
    try:
        if numbers_close(float(N(x)), float(N(y))):
            return True
    except Exception:
        pass
    try:
        if x.shape == y.shape:
            if x.applyfunc(lambda v: round(v, 3)).equals(y.applyfunc(lambda v: round(v, 3))):
                return True
    except Exception:
        pass
    return False


