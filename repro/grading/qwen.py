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
# The two per-benchmark rules, from repro.paper.BENCHMARKS: the sets whose answers keep their
# units (the original skips unit stripping for these), and those whose gold the original extracts
# from a solution's box and normalises three times.
from repro.paper import BOXED_GOLD, UNITS_KEPT

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
    text = response.replace("\u043a\u0438", "")
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
        # the multiple-choice fix of the original's math_eval, on the normalised strings
        skip, boxed = benchmark in UNITS_KEPT, benchmark in BOXED_GOLD
        g = normalise_gold(str(gold), skip, boxed)
        p = normalise_pred(pred, skip)
        if g in CHOICES and p not in CHOICES:
            pred = choice_answer_clean(response)
        elif _is_multi_choice(g) and not _is_multi_choice(p):
            # as in the original, an empty gold also lands here (two gaokao2023en rows)
            pred = "".join(c for c in p if c in CHOICES)
    return pred


def _is_multi_choice(s: str) -> bool:
    return all(c in CHOICES for c in s)


def choice_answer_clean(text: str) -> str:
    """The choice letter of a whole response, as the original's ``math_eval`` finds it: the text
    after the last "answer is" / "choice is" (only the first paragraph when a trigger occurs
    twice), then its first standalone A-E after a trigger, else its last one, else the text."""
    t = text.strip("\n")
    if any(t.count(k) > 1 for k in ("choice is", "answer is")):
        t = t.split("\n\n")[0]
    parts = re.split("choice is|answer is", t)
    flag = len(parts) > 1
    if flag:
        t = parts[-1]
    t = t.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    found = re.findall(r"\b(A|B|C|D|E)\b", t.upper()) or [t.strip().strip(".")]
    t = found[0] if flag else found[-1]
    return t.rstrip(".").rstrip("/")


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
# The unit words the original deletes, in the order in which it tries them (the order matters:
# ``a .`` is tried before ``a``), each also with "s" appended after the whole list. They are
# used as regular expressions *unescaped*, as the original does (so "." matches any character),
# between ``(^|\W)`` and ``($|\W)``; both boundary characters are kept. "|"-separated data.
# This list is data read off the original's ``strip_string`` (Qwen2.5-Math ``evaluation/parser.py``,
# as vendored by simpleRL-reason), reproduced for verdict fidelity, typos included.
_UNITS = ("east|degree|mph|kmph|ft|m sqaure| m east|sq m|deg|mile|q .|monkey|prime|ratio|"
          "profit of rs|rd|o|gm|p . m|lb|tile|per|dm|lt|gain|ab|way|west|a .|b .|c .|d .|e .|f .|"
          "g .|h .|t|a|h|no change|men|soldier|pie|bc|excess|st|inches|noon|percent|by|gal|kmh|c|"
          "acre|rise|a . m|th|π r 2|sq|mark|l|toy|coin|sq . m|gallon|° f|profit|minw|yr|women|"
          "feet|am|pm|hr|cu cm|square|v â € ™|are|rupee|rounds|cubic|cc|mtr|s|ohm|number|kmph|"
          "day|hour|minute|min|second|man|woman|sec|cube|mt|sq inch|mp|∏ cm ³|hectare|more|sec|"
          "unit|cu . m|cm 2|rs .|rs|kg|g|month|km|m|cm|mm|apple|liter|loss|yard|pure|year|"
          "increase|decrease|d|less|Surface|litre|pi sq m|s .|metre|meter|inch").split("|")


@lru_cache(maxsize=1)
def _unit_patterns() -> tuple[tuple[tuple[str, ...], re.Pattern], ...]:
    """(literal fragments, compiled pattern) per unit word; a pattern can only match a string
    that holds all its fragments, which lets most of the ~280 substitutions be skipped."""
    words = _UNITS + [w + "s" for w in _UNITS]
    return tuple((tuple(f for f in w.split(".") if f),
                  re.compile(r"(^|\W)" + w + r"($|\W)")) for w in words)


def strip_units(s: str) -> str:
    """The original's unit deletion: every unit word in turn, twice over; a substitution that
    would leave nothing is not applied."""
    pats = _unit_patterns()
    for _ in range(2):
        for frags, rx in pats:
            if all(f in s for f in frags):
                t = rx.sub(r"\1\2", s)
                if t != "":
                    s = t
    return s


# word2number's vocabulary (the original runs ``w2n.word_to_num`` on every answer)
_W2N = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_W2N.update({"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
             "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
             "billion": 10**9})


def _w2n_group(words: list[str]) -> int:
    v = [_W2N[w] for w in words]
    if len(v) == 4:
        return v[0] * v[1] + v[2] + v[3]
    if len(v) == 3:
        return v[0] * v[1] + v[2]
    if len(v) == 2:
        return v[0] * v[1] if 100 in v else v[0] + v[1]
    return v[0]  # an empty group raises IndexError, as there


def _word_to_num(sentence: str):
    """The behaviour of word2number 1.1's ``word_to_num`` (raises ValueError/IndexError where it
    does): a digit string gives its int; otherwise the number words *anywhere* in the sentence
    are combined, the others ignored (so ``one-to-one`` gives 2)."""
    s = sentence.replace("-", " ").lower()
    if s.isdigit():
        return int(s)
    words = [w for w in s.strip().split() if w in _W2N or w == "point"]
    if not words:
        raise ValueError("no number words")
    if any(words.count(w) > 1 for w in ("thousand", "million", "billion", "point")):
        raise ValueError("redundant number word")
    dec = []
    if "point" in words:
        k = words.index("point")
        words, dec = words[:k], words[k + 1:]
    idx = {w: (words.index(w) if w in words else -1) for w in ("billion", "million", "thousand")}
    bi, mi, th = idx["billion"], idx["million"], idx["thousand"]
    if (th > -1 and (th < mi or th < bi)) or (mi > -1 and mi < bi):
        raise ValueError("malformed number")
    total = 0
    if len(words) == 1:
        total += _W2N[words[0]]
    elif words:
        if bi > -1:
            total += _w2n_group(words[:bi]) * 10**9
        if mi > -1:
            total += _w2n_group(words[bi + 1:mi] if bi > -1 else words[:mi]) * 10**6
        if th > -1:
            lo = mi + 1 if mi > -1 else (bi + 1 if bi > -1 else 0)
            total += _w2n_group(words[lo:th]) * 1000
        if th > -1 and th != len(words) - 1:
            total += _w2n_group(words[th + 1:])
        elif mi > -1 and mi != len(words) - 1:
            total += _w2n_group(words[mi + 1:])
        elif bi > -1 and bi != len(words) - 1:
            total += _w2n_group(words[bi + 1:])
        elif th == -1 and mi == -1 and bi == -1:
            total += _w2n_group(words)
    if dec:
        digits = []
        for w in dec:
            if w not in _W2N or _W2N[w] > 9:
                digits = None
                break
            digits.append(str(_W2N[w]))
        total += float("0." + "".join(digits)) if digits else 0
    return total


def words_to_number(s: str) -> str:
    """``two`` -> ``2``, ``one point five`` -> ``1.5``; the string unchanged where word2number
    would raise (the original calls it on the whole answer and ignores its errors)."""
    try:
        return str(_word_to_num(s))
    except (ValueError, IndexError):
        return s


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


def _fix_slash(s: str) -> str:
    """``a/b`` of two integers (written as ``int`` prints them) -> ``\\frac{a}{b}``; a side
    holding ``sqrt`` is kept as written."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a2 = a if "sqrt" in a else str(int(a))
        b2 = b if "sqrt" in b else str(int(b))
    except ValueError:
        return s
    if f"{a2}/{b2}" != s:
        return s
    return "\\frac{" + a2 + "}{" + b2 + "}"


_TEXT_TAIL = re.compile(r"\\text{.*?}$")
_TEXT = re.compile(r"\\text\{(.*?)\}")
_MBOX = re.compile(r"\\mbox{.*?}")


def normalise(s: str, skip_unit: bool = False) -> str:
    """One pass of the original's ``strip_string`` behaviour (not idempotent, like the original)."""
    return _normalise(str(s), bool(skip_unit))


@lru_cache(maxsize=1 << 15)
def _normalise(s: str, skip_unit: bool) -> str:
    # a pure function of its arguments, so cached: the gold of a problem is normalised once per
    # process, not once per sample (and twice per sample by the multiple-choice fix)
    s = s.strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    t = _TEXT_TAIL.sub("", s).strip()  # a trailing \text{...} (a unit) goes
    if t != "" and t != s:
        s = t
    if not skip_unit:
        s = strip_units(s)
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = words_to_number(s)
    s = _TEXT.sub(r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}")
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = _MBOX.sub("", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0]) <= 2:
        s = halves[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    return _fix_slash(s)


def _trim_extracted(p: str) -> str:
    """What the original's ``extract_answer`` does to the answer string before normalising it."""
    p = re.sub(r"\n\s*", "", str(p))
    if p.startswith(":"):
        p = p[1:]
    if p.endswith("."):
        p = p[:-1]
    if p.endswith("/"):
        p = p[:-1]
    return p


def normalise_pred(pred: str, skip_unit: bool = False) -> str:
    """``extract_answer``'s trimming and normalisation, then ``run_execute``'s second one."""
    return normalise(normalise(_trim_extracted(pred), skip_unit), skip_unit)


# How often the original normalises the gold, per benchmark: math500 extracts it from the
# solution (trim + one pass) and then normalises twice more; minerva_math extracts it (one pass,
# units kept) and never again; the others take the answer field and normalise it twice.
def normalise_gold(gold: str, skip_unit: bool = False, boxed_gold: bool = False) -> str:
    g = str(gold)
    if skip_unit:  # minerva_math
        return normalise(_trim_extracted(g), True)
    if boxed_gold:  # math500
        return normalise(normalise(normalise(_trim_extracted(g))))
    return normalise(normalise(g))


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
    # a comma becomes ONE backslash, as in the original (not a row break)
    return ", ".join(_PMATRIX_OPEN + g.strip("{}").replace(",", "\\") + _PMATRIX_CLOSE
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


@lru_cache(maxsize=1)
def _sympy_latex_parser():
    """sympy's own ANTLR LaTeX parser (the original's first parser), or None.

    sympy refuses to run it unless the antlr runtime is 4.11, the version its generated parser
    was built with; this environment has 4.13 (math-verify needs it). The serialized grammar
    (ATN version 4) is read the same by both runtimes, so this calls the same lexer, parser and
    converter that ``sympy.parsing.latex.parse_latex`` calls, without that version check and
    without the runtime's version-mismatch warning. Checked against the original's verdicts by
    ``tests/test_grader_corpus.py``.
    """
    try:
        import antlr4
        from sympy.parsing.latex import _parse_latex_antlr as m

        if m.LaTeXLexer is None or m.LaTeXParser is None or m.MathErrorListener is None:
            return None
    except ImportError:
        return None

    class Lexer(m.LaTeXLexer):
        def checkVersion(self, toolVersion):
            pass

    class Parser(m.LaTeXParser):
        def checkVersion(self, toolVersion):
            pass

    from antlr4.atn.PredictionMode import PredictionMode

    def parse_mode(text: str, sll: bool):
        listener = m.MathErrorListener(text)
        lex = Lexer(antlr4.InputStream(text))
        lex.removeErrorListeners()
        lex.addErrorListener(listener)
        parser = Parser(antlr4.CommonTokenStream(lex))
        parser.removeErrorListeners()
        parser.addErrorListener(listener)
        if sll:
            parser._interp.predictionMode = PredictionMode.SLL
        return parser.math().relation()

    def parse(text: str):
        # ANTLR's two-stage recipe: SLL prediction first (fast); a parse it accepts is the LL
        # parse. Only when SLL reports an error, parse again in full LL mode.
        text = text.strip()
        try:
            rel = parse_mode(text, True)
        except Exception:
            rel = parse_mode(text, False)
        return m.convert_relation(rel)

    return parse


def _parse_latex_sympy(text: str):
    parse = _sympy_latex_parser()
    if parse is None:
        raise ImportError("sympy's LaTeX parser is unavailable")
    return parse(text)


def _parse_expr(text: str):
    from sympy.parsing.sympy_parser import parse_expr

    return parse_expr(text)


def _parse_latex2sympy(text: str):
    if "boxed" in text or "\\fbox" in text:
        # latex2sympy2_extended understands \boxed, the original's bundled latex2sympy did not
        raise ValueError("boxed")
    return latex_to_sympy(text)


@lru_cache(maxsize=4096)
def _parse_math(s: str):
    """A sympy object for ``s``, or ``s`` itself when nothing parses it: the original's parsers
    in its order (sympy's LaTeX parser, ``parse_expr``, latex2sympy; here latex2sympy2_extended
    stands in for the original's bundled latex2sympy), each tried on ``s`` with ``\\\\`` read as
    ``\\`` first. Cached: the same gold is parsed once per worker, not once per sample. Where
    ``s`` holds no ``\\\\`` both tries are the same call of a deterministic parser, so the second
    is skipped (it would raise the same error)."""
    t = s.replace("\\\\", "\\")
    for f in (_parse_latex_sympy, _parse_expr, _parse_latex2sympy):
        try:
            return f(t)
        except Exception:
            if t == s:
                continue
            try:
                return f(s)
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
