"""Stage 1 of the ``qwen`` grader: the answer string of a model response, as the Qwen2.5-Math
evaluation finds it (not yet normalised)."""
from __future__ import annotations

import re

from repro.grading.qwen.choices import CHOICES, choice_answer_clean, is_multi_choice
from repro.grading.qwen.normalise import normalise_gold, normalise_pred
# the two per-benchmark rules, from repro.paper.BENCHMARKS (see normalise_gold)
from repro.paper import BOXED_GOLD, UNITS_KEPT

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

    Branches, first match wins: the Minerva sentence ``final answer is $X$. I hope``; the text
    after the last ``boxed`` (brace-matched; an unclosed box runs to the end; ``\\boxed 5$``
    stops at ``$``); ``he answer is``; ``final answer is``; ``答案是``; the last number.

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
        elif is_multi_choice(g) and not is_multi_choice(p):
            # as in the original, an empty gold also lands here (two gaokao2023en rows)
            pred = "".join(c for c in p if c in CHOICES)
    return pred
