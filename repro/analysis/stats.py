"""Statistics across seeds, and the package's one rule for "beyond seed noise".

A mean across seeds is reported with its 95% t-interval (df = n − 1). A difference between
two sets of runs is reported as a ``Difference``: the difference of means and the half-width of
its 95% t-interval, either

* ``paired_difference``: the same seeds on both sides (same training problems and sampling
  seeds), the t-interval of the per-seed differences (df = n − 1), or
* ``welch_difference``: unpaired, Welch's standard error sqrt(s_a²/n_a + s_b²/n_b) with the t
  quantile at the smaller sample's df, min(n_a, n_b) − 1 (Hsu's conservative choice: never
  narrower than the Welch–Satterthwaite interval).

The rule (``beyond_noise``): a difference is beyond seed noise when its 95% interval excludes
0, ``|diff| > half-width``; with fewer than 2 seeds on a side there is no interval and no
verdict (None). ``repro.demo``'s tables, ``repro.artifacts`` and the notebooks all call it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (``scipy.stats.t``)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def _sd(xs: Sequence[float], m: float) -> float:
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def mean_ci(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of ``xs``; the half-width is nan for one value."""
    xs = list(xs)
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    return m, t975(n - 1) * _sd(xs, m) / math.sqrt(n)


def aggregate(rows: Iterable[dict], cols) -> dict:
    """``{col: mean, col_ci95: 95% t-interval half-width}`` across ``rows`` (one per seed) for
    each column; a row without the column (missing key or None) is left out, and a column no
    row has is nan."""
    rows = list(rows)
    out = {}
    for c in cols:
        vals = [float(r[c]) for r in rows if r.get(c) is not None]
        out[c], out[c + "_ci95"] = mean_ci(vals) if vals else (float("nan"), float("nan"))
    return out


def beyond_noise(diff: float, half: float) -> bool | None:
    """The rule: beyond seed noise when the 95% interval ``diff ± half`` excludes 0; None when
    there is no interval (nan: fewer than 2 seeds)."""
    if math.isnan(diff) or math.isnan(half):
        return None
    return abs(diff) > half


@dataclass(frozen=True)
class Difference:
    """A difference of means with the half-width of its 95% t-interval."""
    diff: float
    half: float

    @property
    def beyond_noise(self) -> bool | None:
        return beyond_noise(self.diff, self.half)

    def verdict(self) -> str:
        """'yes', 'no', or '–' (no interval)."""
        b = self.beyond_noise
        return "–" if b is None else ("yes" if b else "no")


def paired_difference(diffs: Sequence[float]) -> Difference:
    """Per-seed differences (a_s − b_s at the same seed s): their mean and 95% t-interval."""
    if not len(diffs):
        return Difference(float("nan"), float("nan"))
    return Difference(*mean_ci(diffs))


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """mean(a) − mean(b), unpaired: Welch's standard error, t at df = min(n_a, n_b) − 1."""
    a, b = list(a), list(b)
    if not a or not b:
        return Difference(float("nan"), float("nan"))
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    if min(len(a), len(b)) < 2:
        return Difference(ma - mb, float("nan"))
    se = math.sqrt(_sd(a, ma) ** 2 / len(a) + _sd(b, mb) ** 2 / len(b))
    return Difference(ma - mb, t975(min(len(a), len(b)) - 1) * se)
