"""Answer extraction: the last ``\\boxed{...}`` (or ``\\fbox{...}``) of a response, brace-matched."""
from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Braces are matched, so nested groups survive (``\\boxed{\\frac{1}{2}}`` gives
    ``\\frac{1}{2}``). ``\\boxed 5`` (a space-separated single token, as LaTeX allows) gives
    ``5``. An unclosed ``\\boxed{`` is not an answer and is skipped for the one before it.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    for m in reversed(list(_BOX_RE.finditer(text))):
        rest = text[m.end():]
        if rest.startswith("{"):
            content = _match_braces(rest)
            if content is not None:
                return content.strip()
        elif rest.startswith(" "):
            token = rest.lstrip(" ").split("$")[0].split()
            if token:
                return token[0].strip()
    return None


def _match_braces(s: str) -> str | None:
    """``s`` starts with '{'; return what lies inside its matching '}', or None if unclosed."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            i += 2  # an escaped brace \{ or \} does not open or close a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[1:i]
        i += 1
    return None
