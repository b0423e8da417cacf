"""Stage 2 of the ``qwen`` grader: the LaTeX / text / unit rewriting of the original's
``strip_string`` (Qwen2.5-Math ``evaluation/parser.py``), including its quirks: ``and`` removed
as a substring, single-letter units, ``x=`` removed as a substring, word numbers. Applied twice
to both sides, as the original pipeline does; how often to the gold depends on the benchmark."""
from __future__ import annotations

import re
from functools import lru_cache

from repro.grading.qwen.words import words_to_number

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


