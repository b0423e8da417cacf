"""Multiple-choice answers (letters A-E), as the original's ``math_eval`` reads them."""
from __future__ import annotations

import re

CHOICES = ("A", "B", "C", "D", "E")


def is_multi_choice(s: str) -> bool:
    """Every character of ``s`` a choice letter (true of the empty string, as in the original)."""
    return all(c in CHOICES for c in s)


def choice_letter(text: str, first: bool = False) -> str:
    """The last (``first``: the first) standalone letter A-E of ``text`` (case-insensitive),
    else the cleaned text."""
    t = text.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    found = re.findall(r"\b(A|B|C|D|E)\b", t.upper()) or [t.strip().strip(".")]
    t = found[0] if first else found[-1]
    return t.rstrip(".").rstrip("/")


def choice_answer_clean(text: str) -> str:
    """The choice letter of a whole response, as the original's ``math_eval`` finds it: the text
    after the last "answer is" / "choice is" (only the first paragraph when a trigger occurs
    twice), then its first standalone A-E after a trigger, else its last one, else the text."""
    t = text.strip("\n")
    if any(t.count(k) > 1 for k in ("choice is", "answer is")):
        t = t.split("\n\n")[0]
    parts = re.split("choice is|answer is", t)
    after_trigger = len(parts) > 1
    return choice_letter(parts[-1] if after_trigger else t, first=after_trigger)
