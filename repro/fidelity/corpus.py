"""The grader-fidelity corpus: realistic (response, gold) pairs built from the 8 benchmarks' golds.

``build_corpus(n, seed)`` returns rows ``{"uid", "benchmark", "id", "kind", "shape",
"response", "gold"}``: ``gold`` is the gold string of ``repro.eval.data`` for item ``id`` of
``benchmark`` (the answer the evaluation grades against), ``kind`` the answer variant (an
equivalent rewrite, a near miss, a wrong answer or a pathological input) and ``shape`` how the
response states it (boxed, "the answer is ... because ...", several boxes, the Minerva sentence,
only a last number, ...). Row ``i`` depends only on ``(seed, i)`` and the golds, so any slice can
be regenerated on its own (``tests/test_grader_corpus.py`` checks the committed file that way).

Golds are drawn weighted toward non-integer answers. Responses avoid the generation stop strings
of the qwen prompt types (``assistant``, ``user``, ``_end``, ``_start``), since such text never
reaches the grader in a real evaluation.

Used by ``python -m repro.fidelity.differential`` (which records the original grader's verdicts),
by its test and by ``make bench``; not used by the evaluation itself.
"""
from __future__ import annotations

import random
import re

# share of the corpus per benchmark (all 8; College Math, the hardest to grade, the most)
BENCH_WEIGHTS = {"gsm8k": 8, "math500": 15, "minerva_math": 10, "gaokao2023en": 12,
                 "olympiadbench": 14, "college_math": 28, "aime24": 2, "amc23": 3}
STOP_STRINGS = ("assistant", "user", "_end", "_start")
REASONING = [
    "Let me think step by step. First we write down what is given. ",
    "We have $x + y = 10$ and $xy = 21$, so $x$ and $y$ are roots of $t^2 - 10t + 21 = 0$. ",
    "Multiplying both sides by $2$ gives $4a = 12$, hence $a = 3$. ",
    "By the Pythagorean theorem, $c = \\sqrt{3^2 + 4^2} = 5$. ",
    "Substituting back, we check that the equation holds: $2(3) + 1 = 7$. ",
    "Now we simplify the fraction $\\frac{12}{18} = \\frac{2}{3}$. ",
    "There are $\\binom{5}{2} = 10$ ways to choose the pair. ",
    "Taking the derivative and setting it to zero gives the critical point. ",
    "Combining the two cases, we collect the solutions. ",
]
TRAILERS = [" because the other case is impossible.", ". Done.", " since it satisfies the equation.",
            ", which is the final result.", " (as required).", ". This completes the proof."]


def _num(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")


def _is_integer(g: str) -> bool:
    v = _num(g)
    return v is not None and v == int(v) and "." not in g


def _split_top(s: str) -> list[str]:
    """Split on commas outside brackets/braces."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [x.strip() for x in out]


# --------------------------------------------------------------------------------------------
# answer variants: (kind, answer text) or None when the kind does not apply to this gold
# --------------------------------------------------------------------------------------------
def _equivalents(g: str, rng: random.Random) -> list[tuple[str, str]]:
    out = [("same", g), ("same", g), ("spaces", " ".join(g.replace(",", ", ").split())),
           ("x_equals", f"x = {g}"), ("dollar_math", f"${g}$")]
    v = _num(g)
    m = _FRAC.match(g.replace(" ", ""))
    if "\\frac" in g:
        out += [("dfrac", g.replace("\\frac", "\\dfrac")), ("tfrac", g.replace("\\frac", "\\tfrac")),
                ("frac_space", g.replace("\\frac{", "\\frac {").replace("}{", "} {")),
                ("frac_inner_space", re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}",
                                            r"\\frac{ \1 }{ \2 }", g))]
    if m:
        sgn, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        val = (-1 if sgn else 1) * a / b
        out += [("frac_decimal", f"{val:.6f}"), ("frac_decimal_short", f"{val:.2f}"),
                ("frac_slash", f"{sgn}{a}/{b}"), ("frac_percent", f"{_fmt(val * 100)}\\%")]
    if v is not None:
        out += [("decimal_zero", _fmt(v) + ".0"), ("decimal_zeros", _fmt(v) + ".00"),
                ("unit_dollars", f"{g} dollars"), ("unit_text", f"{g} \\text{{ cm}}"),
                ("unit_word", f"{g} {rng.choice(['meters', 'hours', 'students', 'apples', 'units', 'mph'])}"),
                ("money", f"\\${g}"), ("percent", f"{g}\\%"), ("times100", _fmt(v * 100)),
                ("div100", _fmt(v / 100)), ("degrees", f"{g}^\\circ"), ("degrees_unicode", f"{g}°"),
                ("sci", f"{v:.4e}"), ("text_num", f"\\text{{{g}}}")]
        if abs(v) >= 1000 and v == int(v):
            out.append(("thousands", f"{int(v):,}"))
        if 0 <= v <= 20 and v == int(v):
            words = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                     "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
            out.append(("word_number", words[int(v)]))
    if "," in g:
        parts = _split_top(g.strip("()[]\\{}"))
        if len(parts) > 1:
            body = ", ".join(reversed(parts))
            out += [("reorder", body if g[:1] not in "([" else g[0] + body + g[-1]),
                    ("and_join", " and ".join(parts)), ("set_braces", "\\{" + ", ".join(parts) + "\\}"),
                    ("bare_list", ", ".join(parts))]
    if re.match(r"^[\(\[].*[\)\]]$", g):
        swap = {"(": "[", "[": "(", ")": "]", "]": ")"}
        out += [("interval_brackets", swap[g[0]] + g[1:-1] + swap[g[-1]]),
                ("left_right", "\\left" + g[0] + g[1:-1] + "\\right" + g[-1])]
    if "\\{" in g or g.startswith("{"):
        out.append(("set_unbraced", g.replace("\\{", "").replace("\\}", "").strip("{}")))
    if "matrix" in g:
        out += [("bmatrix", g.replace("pmatrix", "bmatrix")), ("pmatrix", g.replace("bmatrix", "pmatrix"))]
    if "=" in g:
        lhs, _, rhs = g.partition("=")
        out += [("equation_swap", f"{rhs.strip()} = {lhs.strip()}"), ("equation_rhs", rhs.strip())]
    if "^\\circ" in g or "^{\\circ}" in g or "'" in g:
        out += [("degree_plain", g.replace("^\\circ", "").replace("^{\\circ}", "")),
                ("degree_unicode", g.replace("^\\circ", "°").replace("^{\\circ}", "°"))]
    if "\\sqrt{" in g:
        out.append(("sqrt_nobrace", re.sub(r"\\sqrt\{(\w)\}", r"\\sqrt\1", g)))
    if re.search(r"[a-zA-Z]{4,}", g.replace("\\", " ")) and "\\text" not in g:
        out += [("text_wrap", f"\\text{{{g}}}"), ("text_lower", g.lower())]
    if g in ("A", "B", "C", "D", "E"):
        out += [("mc_paren", f"({g})"), ("mc_text", f"\\text{{({g})}}"), ("mc_lower", g.lower()),
                ("mc_option", f"Option {g}")]
    return out


def _near_misses(g: str, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    v = _num(g)
    if v is not None:
        out += [("near_plus_one", _fmt(v + 1)), ("near_neg", _fmt(-v) if v else "1"),
                ("near_rel1e-3", f"{v * 1.001:.8g}"), ("near_rel1e-5", f"{v * (1 + 1e-5):.10g}"),
                ("near_double", _fmt(2 * v))]
    digits = [i for i, c in enumerate(g) if c.isdigit()]
    if digits:
        i = rng.choice(digits)
        out.append(("near_digit", g[:i] + str((int(g[i]) + rng.randint(1, 8)) % 10) + g[i + 1:]))
    if "," in g:
        parts = _split_top(g.strip("()[]\\{}"))
        if len(parts) > 1:
            out.append(("near_drop_element", ", ".join(parts[:-1])))
    if "-" in g:
        out.append(("near_sign", g.replace("-", "+", 1)))
    elif "+" in g:
        out.append(("near_sign", g.replace("+", "-", 1)))
    letters = [i for i, c in enumerate(g) if c in "xyznab" and (i == 0 or not g[i - 1].isalpha())]
    if letters:
        i = rng.choice(letters)
        out.append(("near_variable", g[:i] + {"x": "y", "y": "x", "z": "x", "n": "m", "a": "b",
                                              "b": "a"}[g[i]] + g[i + 1:]))
    if g in ("A", "B", "C", "D", "E"):
        out.append(("near_mc", rng.choice([c for c in "ABCD" if c != g])))
    return out


PATHOLOGICAL = [
    ("path_deep_nesting", lambda g, r: "(" * 300 + g + ")" * 300),
    ("path_deep_frac", lambda g, r: "\\frac{1}{" * 60 + "2" + "}" * 60),
    ("path_huge_exponent", lambda g, r: "10^{10^{10^{10}}}"),
    ("path_huge_power", lambda g, r: f"{r.randint(2, 9)}^{{{r.randint(10**6, 10**9)}}}"),
    ("path_huge_diff", lambda g, r: "10^{10^{10}} - 10^{10^{10}} + " + g),
    ("path_unbalanced", lambda g, r: "\\frac{" + g + "}{2"),
    ("path_unbalanced_close", lambda g, r: g + "}}"),
    ("path_long_sum", lambda g, r: "+".join(f"x^{{{k}}}" for k in range(r.randint(60, 150)))),
    ("path_long_string", lambda g, r: "1" * r.randint(2000, 6000)),
    ("path_long_text", lambda g, r: " ".join(r.choice(["the", "value", "is", "so", "we", "get"])
                                               for _ in range(400))),
    ("path_empty_box", lambda g, r: ""),
    ("path_only_symbols", lambda g, r: r.choice(["\\\\", "{}", "^_^", "$$", "\\frac{}{}"])),
]


def _wrong(g: str, rng: random.Random, pool: list[str]) -> tuple[str, str]:
    other = rng.choice(pool)
    return ("wrong_other", other)


# --------------------------------------------------------------------------------------------
# response shapes
# --------------------------------------------------------------------------------------------
def _shape(ans: str, rng: random.Random, decoy: str) -> tuple[str, str]:
    body = "".join(rng.choice(REASONING) for _ in range(rng.randint(1, 5)))
    u = rng.random()
    if u < 0.55:
        return "boxed", f"{body}\nTherefore, the final answer is $\\boxed{{{ans}}}$."
    if u < 0.62:
        return "answer_is", f"{body}\nSo the answer is {ans}."
    if u < 0.69:
        return "answer_is_trailing", f"{body}\nThe answer is {ans}{rng.choice(TRAILERS)}"
    if u < 0.74:
        return "boxed_trailing", f"{body}\nThe answer is $\\boxed{{{ans}}}${rng.choice(TRAILERS)}"
    if u < 0.80:
        return "multibox_last_differs", (f"{body}\nFirst I got $\\boxed{{{ans}}}$, but on checking "
                                         f"the final answer is $\\boxed{{{decoy}}}$.")
    if u < 0.85:
        return "multibox_last_same", (f"{body}\nA first guess was $\\boxed{{{decoy}}}$; correcting "
                                      f"it, the final answer is $\\boxed{{{ans}}}$.")
    if u < 0.88:
        return "multibox_list", f"{body}\nThe answers are $\\boxed{{{ans}}}$ and $\\boxed{{{decoy}}}$."
    if u < 0.92:
        return "minerva", f"{body}\nFinal Answer: The final answer is ${ans}$. I hope it is correct."
    if u < 0.96:
        return "last_number", f"{body}\nAfter all this we get {ans}"
    if u < 0.98:
        return "final_answer_is", f"{body}\nMy final answer is {ans}"
    return "boxed_no_dollars", f"{body}\n\\boxed{{{ans}}}"


def gold_pool(src=None) -> dict[str, list[tuple[int, str]]]:
    """{benchmark: [(id, gold), ...]} from ``repro.eval.data`` (the evaluation's own golds)."""
    from repro.eval.data import load_benchmark
    from repro.paper import BENCHMARK_NAMES as BENCHMARKS

    return {b: [(r["id"], r["gold"]) for r in load_benchmark(b, src)] for b in BENCHMARKS}


def build_row(i: int, seed: int, golds: dict[str, list[tuple[int, str]]]) -> dict:
    rng = random.Random(f"grader-corpus/{seed}/{i}")
    benches = sorted(golds)
    b = rng.choices(benches, [BENCH_WEIGHTS[x] for x in benches])[0]
    items = golds[b]
    weights = [1 if _is_integer(g) else 4 for _, g in items]
    item_id, g = rng.choices(items, weights)[0]
    pool = [x for _, x in items]
    u = rng.random()
    if u < 0.04:
        kind, fn = rng.choice(PATHOLOGICAL)
        ans = fn(g, rng)
    elif u < 0.60:
        kind, ans = rng.choice(_equivalents(g, rng))
    elif u < 0.85:
        kind, ans = rng.choice(_near_misses(g, rng) or [_wrong(g, rng, pool)])
    else:
        kind, ans = _wrong(g, rng, pool)
    decoy = rng.choice(pool)
    shape, resp = _shape(ans, rng, decoy)
    for s in STOP_STRINGS:
        resp = resp.replace(s, s.upper())
    return {"uid": f"{seed}-{i}", "benchmark": b, "id": item_id, "kind": kind, "shape": shape,
            "response": resp.strip(), "gold": g}


def build_corpus(n: int = 6000, seed: int = 0, src=None, golds=None) -> list[dict]:
    golds = golds if golds is not None else gold_pool(src)
    return [build_row(i, seed, golds) for i in range(n)]
