"""Grader ``qwen``: the package's own implementation of the Qwen2.5-Math / SimpleRL-Zoo grader.

The paper scores Table 1 with the evaluation code of Qwen2.5-Math as forked by SimpleRL-Zoo.
This module re-implements its *behaviour* (as read and measured; see
``shared/notes/eval-protocol.md``), written from scratch. Three stages:

1. ``extract_answer(response, benchmark)``: the answer string of a model response. Branches,
   first match wins: the Minerva sentence ``final answer is $X$. I hope``; the text after the last
   ``boxed`` (brace-matched; an unclosed box runs to the end; ``\\boxed 5$`` stops at ``$``);
   ``he answer is``; ``final answer is``; ``答案是``; the last number.
2. ``normalise(s, skip_unit)``: the LaTeX / text / unit rewriting of the original ``strip_string``
   (including its quirks: ``and`` removed as a substring, single-letter units, ``x=`` removed as a
   substring, word numbers). Applied twice to both sides, as the original pipeline does.
3. ``math_equal(pred, gold)``: case-insensitive string match; multiple-choice letters; plain
   numbers with relative tolerance 1e-4, accepting gold x100 and gold /100 (the percentage rule);
   bracket-insensitive string match; element-wise tuples / intervals; pmatrix element-wise;
   ``lhs=rhs`` handling; symbolic equality with sympy, parsing LaTeX with
   ``latex2sympy2_extended`` and plain text with ``sympy.parse_expr``.

Known difference from the original: it tried sympy's own ``parse_latex`` first, which needs the
antlr 4.11 runtime; math-verify needs antlr 4.13, and one environment holds both graders, so
LaTeX is parsed by ``latex2sympy2_extended`` only. sympy's lenient parser accepted some malformed
expressions that this one rejects.

Everything here is pure Python and can be slow on pathological input (``10^{10^{10}}``); the
evaluation runs it in worker processes with a per-item timeout (``repro.grading.pool``).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache

from repro.grading import register_grader

# Benchmarks whose answers keep their units (the original skips unit stripping for these).
STRIP_EXCEPTIONS = frozenset({"minerva_math"})
CHOICES = ("A", "B", "C", "D", "E")

# --------------------------------------------------------------------------------------------
# 1. extraction
# --------------------------------------------------------------------------------------------
_NUMBER_RE = re.compile(r"-?\d*\.?\d+")


def _after_last_boxed(text: str) -> str:
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] != "{":
        return tail.split("$")[0].strip()
    depth, out = 0, []
    for ch in tail:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(ch)
    return "".join(out)  # an unclosed box keeps everything to the end


def extract_answer(response: str, benchmark: str | None = None, gold: str | None = None) -> str:
    """The raw answer string of ``response`` (not yet normalised), as the Qwen evaluation finds it.

    With ``gold`` given and a multiple-choice gold (letters A-E), a non-letter answer is replaced
    by the last choice letter in the response, as the original pipeline does.
    """
    if not isinstance(response, str):
        return ""
    text = response
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _after_last_boxed(text)
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    elif "答案是" in text:
        pred = text.split("答案是")[1].strip().split("\n\n")[0].strip()
    else:
        nums = _NUMBER_RE.findall(text.replace(",", ""))
        pred = nums[-1] if nums else ""
    pred = re.sub(r"\n\s*", "", pred)
    if gold is not None:
        g = _strip_dollars(str(gold))
        if g in CHOICES and pred.strip() not in CHOICES:
            pred = choice_letter(text)
        elif all(c in CHOICES for c in g) and not all(c in CHOICES for c in pred):
            # as in the original, an empty gold also lands here (two gaokao2023en rows)
            pred = "".join(c for c in pred if c in CHOICES)
    return pred


def _strip_dollars(s: str) -> str:
    return s.strip().strip("$").strip()


def choice_letter(text: str) -> str:
    """The last standalone letter A-E of ``text`` (case-insensitive), else the cleaned text."""
    t = text.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    found = re.findall(r"\b(A|B|C|D|E)\b", t.upper())
    t = found[-1] if found else t.strip().strip(".")
    return t.rstrip(".").rstrip("/")


# --------------------------------------------------------------------------------------------
# 2. normalisation
# --------------------------------------------------------------------------------------------
# Words the original treats as units and deletes wherever they stand alone (plural forms added).
# Written for this package; it includes the single letters that cause the original's known
# quirk of deleting variables (a+b -> +b).
_UNIT_WORDS = """
a c d g h l m o s t cm mm km kg gm lb lbs oz ft yd yr hr hrs min sec mph kmph kmh cc ml mtr mt
meter metre meters inch inches foot feet yard mile gallon gal liter litre acre hectare ton
hour minute second day week month year degree deg percent cent cents dollar rupee rs
unit square cubic sq cu ohm apple man men woman women child book page coin mark toy
east west north south way rise loss gain profit increase decrease less more pure number noon am pm
""".split()
_UNIT_PHRASES = ["sq m", "sq ft", "sq units", "square units", "cu cm", "cu m", "sq inch"]


@lru_cache(maxsize=1)
def _unit_regex() -> re.Pattern:
    words = set(_UNIT_WORDS) | {w + "s" for w in _UNIT_WORDS} | set(_UNIT_PHRASES)
    alts = sorted((re.escape(w) for w in words), key=len, reverse=True)
    return re.compile(r"(^|\W)(?:" + "|".join(alts) + r")(?=$|\W)")


_WORD_NUMS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def words_to_number(s: str) -> str:
    """``two`` -> ``2``, ``one point five`` -> ``1.5``, ``twenty one`` -> ``21``; anything that is
    not entirely a number in words is returned unchanged (the original ran word2number on the
    whole string)."""
    toks = s.strip().lower().replace("-", " ").split()
    if not toks or any(t not in _WORD_NUMS and t not in _SCALES and t not in ("point", "and")
                       for t in toks):
        return s
    if "point" in toks:
        i = toks.index("point")
        head, frac = toks[:i], toks[i + 1:]
        if not frac or any(t not in _WORD_NUMS or _WORD_NUMS[t] > 9 for t in frac):
            return s
        whole = words_to_number(" ".join(head)) if head else "0"
        if not whole.isdigit():
            return s
        return whole + "." + "".join(str(_WORD_NUMS[t]) for t in frac)
    total, cur, seen = 0, 0, False
    for t in toks:
        if t == "and":
            continue
        seen = True
        if t in _WORD_NUMS:
            cur += _WORD_NUMS[t]
        elif t == "hundred":
            cur = max(cur, 1) * 100
        else:
            total += max(cur, 1) * _SCALES[t]
            cur = 0
    return str(total + cur) if seen else s


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``; a first argument in
    braces is left alone; a malformed ``\\frac`` leaves the whole string unchanged."""
    parts = s.split("\\frac")
    out = [parts[0]]
    for p in parts[1:]:
        out.append("\\frac")
        if p.startswith("{"):
            out.append(p)
        elif len(p) < 2:
            return s
        elif p[1] == "{":
            out.append("{" + p[0] + "}" + p[1:])
        else:
            out.append("{" + p[0] + "}{" + p[1] + "}" + p[2:])
    return "".join(out)


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s) if "\\sqrt" in s else s


def _fix_slash(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def normalise(s: str, skip_unit: bool = False) -> str:
    """One pass of the original's ``strip_string`` behaviour (not idempotent, like the original)."""
    s = str(s).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "")
    # matrices: every environment becomes pmatrix
    s = re.sub(r"\\begin\{array\}\{[^}]*\}", r"\\begin{pmatrix}", s)
    s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    t = re.sub(r"\\text\{.*?\}$", "", s).strip()  # a trailing \text{...} (a unit) goes
    if t and t != s:
        s = t
    if not skip_unit:
        rx = _unit_regex()
        for _ in range(2):
            t = rx.sub(r"\1", s)
            if t:
                s = t
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = words_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}")
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = re.sub(r"\\mbox\{.*?\}", "", s)
    s = s.replace("'", "").replace('"', "")
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0+([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0+$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0]) <= 2:
        s = halves[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = _fix_slash(s)
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "")
    s = s.replace("\\mathbf", "")
    s = re.sub(r"\\mbox\{(.*?)\}", r"\1", s)
    return s


def normalise_pred(pred: str, skip_unit: bool = False) -> str:
    p = re.sub(r"\n\s*", "", str(pred))
    if p.startswith(":"):
        p = p[1:]
    if p.endswith("."):
        p = p[:-1]
    if p.endswith("/"):
        p = p[:-1]
    return normalise(normalise(p, skip_unit), skip_unit)


def normalise_gold(gold: str, skip_unit: bool = False) -> str:
    return normalise(normalise(_strip_dollars(str(gold)), skip_unit), skip_unit)


# --------------------------------------------------------------------------------------------
# 3. equality
# --------------------------------------------------------------------------------------------
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


def numbers_close(a: float, b: float, rel_tol: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol)


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
    return ", ".join(_PMATRIX_OPEN + g.strip("{}").replace(",", "\\\\") + _PMATRIX_CLOSE
                     for g in groups)


def math_equal(pred, gold, include_percentage: bool = True, rel_tol: float = 1e-4) -> bool:
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
        targets = (gv / 100, gv, gv * 100) if include_percentage else (gv,)
        return any(numbers_close(pv, t, rel_tol) for t in targets)
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
        if len(pp) == len(gp) and all(math_equal(a, b, include_percentage, rel_tol)
                                      for a, b in zip(pp, gp)):
            return True
    # matrices, element-wise
    pm, gm = _matrix_rows(p), _matrix_rows(g)
    if pm is not None and gm is not None and len(pm) == len(gm):
        if all(len(a) == len(b) and all(math_equal(x, y, include_percentage, rel_tol)
                                         for x, y in zip(a, b)) for a, b in zip(pm, gm)):
            return True
    # equations
    if p.count("=") == 1 and g.count("=") == 1:
        pl, pr = p.split("=")
        gl, gr = g.split("=")
        pe, ge = f"{pl.strip()}-({pr.strip()})", f"{gl.strip()}-({gr.strip()})"
        if symbolic_equal(pe, ge) or symbolic_equal(f"-({pe})", ge):
            return True
    elif p.count("=") == 1 and len(p.split("=")[0].strip()) <= 2 and "=" not in g:
        if math_equal(p.split("=")[1], g, include_percentage, rel_tol):
            return True
    elif g.count("=") == 1 and len(g.split("=")[0].strip()) <= 2 and "=" not in p:
        if math_equal(p, g.split("=")[1], include_percentage, rel_tol):
            return True
    return symbolic_equal(p, g, rel_tol)


@lru_cache(maxsize=1)
def _latex_converter_class():
    """latex2sympy2_extended's converter with two-stage ANTLR parsing: the fast SLL prediction
    mode first, the full LL mode only when SLL reports an error (ANTLR's standard recipe; a
    successful SLL parse is the LL parse). This makes LaTeX parsing several times faster. Falls
    back to the library's public function if its internals differ from the pinned version."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    except ImportError:
        return None

    class TwoStage(_Latex2Sympy):
        sll = True

        def create_parser(self, latex_str):
            parser = super().create_parser(latex_str)
            if self.sll:
                parser._interp.predictionMode = PredictionMode.SLL
            return parser

    return TwoStage


def latex_to_sympy(text: str):
    """Parse LaTeX with latex2sympy2_extended, without its own answer normalisation (the qwen
    normalisation has already run, as the original's parser had none)."""
    cls = _latex_converter_class()
    if cls is None:
        from latex2sympy2_extended import latex2sympy

        return latex2sympy(text, normalization_config=None)
    conv = cls()
    try:
        return conv.parse(text)
    except Exception:
        conv = cls()
        conv.sll = False
        return conv.parse(text)


@lru_cache(maxsize=4096)
def _parse_math(s: str):
    """A sympy object for ``s``, or ``s`` itself when nothing parses it (cached: the same gold
    is parsed once per worker, not once per sample)."""
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application,
                                            parse_expr, standard_transformations)

    if "boxed" in s or "\\fbox" in s:
        # latex2sympy2_extended understands \boxed, the original's parsers did not: a pred that
        # still holds a box (the Minerva-sentence branch) stays unparsed, hence wrong, as there
        return s
    candidates = [s.replace("\\\\", "\\"), s] if "\\\\" in s else [s]
    for text in candidates:
        try:
            return latex_to_sympy(text)
        except Exception:
            pass
        try:
            return parse_expr(text, transformations=standard_transformations
                              + (implicit_multiplication_application, convert_xor))
        except Exception:
            pass
    return s


_PROBES = (0.7316, 1.4142, 2.3026, 0.5772, 1.6180, 2.7183, 3.1416, 0.3679)


def clearly_unequal(x, y) -> bool:
    """True when the scalar expressions ``x`` and ``y`` differ at two probe points (each free
    symbol set to its own irrational-looking value, complex results allowed).

    A speed-up, not a rule of the original: it only skips the ``equals`` / ``simplify`` steps,
    which cannot succeed for expressions whose difference is numerically non-zero. It answers
    False (inconclusive) for relations, matrices, sets, and wherever evaluation is not finite.
    """
    from sympy import Expr

    if not isinstance(x, Expr) or not isinstance(y, Expr):
        return False
    d = x - y
    syms = sorted(d.free_symbols, key=str)
    for shift in (0, 3):
        subs = {s: _PROBES[(k + shift) % len(_PROBES)] for k, s in enumerate(syms)}
        v = complex(d.evalf(15, subs=subs))
        scale = 1.0 + abs(complex(x.evalf(15, subs=subs))) + abs(complex(y.evalf(15, subs=subs)))
        if not (math.isfinite(v.real) and math.isfinite(v.imag) and math.isfinite(scale)):
            return False
        if abs(v) <= 1e-8 * scale:
            return False
    return True


def symbolic_equal(a: str, b: str, rel_tol: float = 1e-4) -> bool:
    from sympy import N, simplify

    x, y = _parse_math(a), _parse_math(b)
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
        if numbers_close(float(N(x)), float(N(y)), rel_tol):
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


# --------------------------------------------------------------------------------------------
# the graders
# --------------------------------------------------------------------------------------------
def grade(pred: str, gold: str, skip_unit: bool = False) -> bool:
    """Qwen-style equivalence of an extracted answer and a gold answer; never raises."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    try:
        return bool(math_equal(normalise_pred(pred, skip_unit), normalise_gold(gold, skip_unit)))
    except Exception:
        return False


@register_grader("qwen")
def qwen_grade(pred: str, gold: str) -> bool:
    return grade(pred, gold, skip_unit=False)


@register_grader("qwen-keep-units")
def qwen_grade_keep_units(pred: str, gold: str) -> bool:
    """The ``qwen`` grader as the original runs it on Minerva (no unit stripping)."""
    return grade(pred, gold, skip_unit=True)


def grader_name_for(grader: str, benchmark: str | None) -> str:
    """The registered grader that ``grader`` means on ``benchmark`` (Minerva keeps units)."""
    if grader == "qwen" and benchmark in STRIP_EXCEPTIONS:
        return "qwen-keep-units"
    return grader
