"""The behaviour of word2number 1.1's ``word_to_num``, which the original's ``strip_string`` runs on
every answer (``two`` -> ``2``), reproduced so that the grader needs no extra dependency."""
from __future__ import annotations

# word2number's vocabulary
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

