"""The paper's Table 1 as entered in paper_artifacts/table1_paper.csv: every row's average
recomputed from its 8 cells, independently of the package (exact decimal arithmetic)."""
import csv
from fractions import Fraction
from pathlib import Path

import pytest

CSV = Path(__file__).resolve().parents[1] / "paper_artifacts" / "table1_paper.csv"
BENCH = ["gsm8k", "math500", "minerva_math", "gaokao2023en", "olympiadbench", "college_math",
         "aime24", "amc23"]
# Rounding each printed cell (±0.05 on their mean) and the printed average (±0.05) explains a
# difference of at most 0.1. Rows of the paper beyond that (found by this test, kept as printed):
BEYOND_ROUNDING = {("1.5B", "Base")}  # printed Avg. 1.9; its eight cells average 2.1625
# Rows whose cell mean does not round to the printed Avg. but is within the 0.1 rounding bound:
NOT_ROUNDING_TO_PRINTED = {("1.5B", "DAPO"), ("3B", "GRPO"), ("7B", "DAPO"), ("7B", "GRPO"),
                           ("7B", "λ-GRPO")}


def _rows():
    if not CSV.exists():
        pytest.fail(f"{CSV} is missing (entered by the evaluation issue)")
    with open(CSV, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_shape_and_range():
    rows = _rows()
    assert [(r["size"], r["method"]) for r in rows] == [
        (s, m) for s in ("1.5B", "3B", "7B") for m in ("Base", "DAPO", "GRPO", "λ-GRPO")]
    for r in rows:
        for b in BENCH + ["avg"]:
            assert 0 <= float(r[b]) <= 100, (r["size"], r["method"], b)


def test_each_average_recomputed_from_its_cells():
    beyond, not_rounding = set(), set()
    for r in _rows():
        mean = sum(Fraction(r[b]) for b in BENCH) / 8
        diff = abs(Fraction(r["avg"]) - mean)
        key = (r["size"], r["method"])
        if diff > Fraction(1, 10):
            beyond.add(key)
        if diff > Fraction(1, 20):
            not_rounding.add(key)
    assert beyond == BEYOND_ROUNDING
    assert not_rounding - beyond == NOT_ROUNDING_TO_PRINTED


def test_gains_quoted_in_the_abstract():
    # "λ-GRPO improves average accuracy by +1.9%, +1.0%, and +1.7% compared to GRPO"
    avg = {(r["size"], r["method"]): Fraction(r["avg"]) for r in _rows()}
    for size, gain in (("1.5B", "1.9"), ("3B", "1.0"), ("7B", "1.7")):
        assert avg[(size, "λ-GRPO")] - avg[(size, "GRPO")] == Fraction(gain)
    # Section 4.1 on 3B: "+1% over DAPO and +1.2% over GRPO" -- the table says the reverse
    assert avg[("3B", "λ-GRPO")] - avg[("3B", "DAPO")] == Fraction("1.2")
    assert avg[("3B", "λ-GRPO")] - avg[("3B", "GRPO")] == Fraction("1.0")


def test_package_check_agrees_with_this_one():
    from repro import paper

    chk = paper.table1_average_check(paper.load_table1(CSV))
    for (_, row), r in zip(chk.iterrows(), _rows()):
        mean = float(sum(Fraction(r[b]) for b in BENCH) / 8)
        assert row["recomputed avg"] == pytest.approx(mean, abs=1e-12)
        assert bool(row["matches"]) == ((r["size"], r["method"]) not in BEYOND_ROUNDING)
