"""repro.paper: the benchmarks as the paper describes them, the one Table 1 loader (one clear
error when the file is missing, whoever asks) and the comparison with Table 1 against values
typed here from the paper's Table 1."""
from __future__ import annotations

import pytest

from repro import paper

# Table 1's column order and its two sampled sets (Sec. 4: "avg@32 for AIME24 and AMC23"), typed here
ORDER = ["gsm8k", "math500", "minerva_math", "gaokao2023en", "olympiadbench", "college_math", "aime24", "amc23"]
# Table 1, Qwen2.5-3B, λ-GRPO row, as printed in the paper
LAMBDA_3B = [85.3, 67.4, 32.7, 54.0, 27.7, 37.2, 7.3, 38.7]
LAMBDA_3B_AVG = 43.8


def _scores(acc: dict, grader: str = "qwen") -> dict:
    return {"model": "m", "primary_grader": grader,
            "graders": {grader: {"benchmarks": {b: {"accuracy": v, "n_samples": 1} for b, v in acc.items()},
                                 "average": sum(acc.values()) / len(acc)}}}


def test_benchmarks_as_the_paper_describes_them():
    assert list(paper.BENCHMARK_NAMES) == ORDER
    assert paper.SAMPLED == ("aime24", "amc23") and paper.AVG_N == 32
    assert paper.UNITS_KEPT == {"minerva_math"} and paper.BOXED_GOLD == {"math500"}
    with pytest.raises(KeyError, match="unknown benchmark 'mmlu'"):
        paper.benchmark("mmlu")
    with pytest.raises(ValueError, match="gold rule 'last_line'"):
        paper.Benchmark("x", "X", "last_line")


def test_paper_is_a_leaf():
    """The paper's facts import nothing of the package: every layer can import them."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(paper))
    mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert mods and not [m for m in mods if m.split(".")[0] == "repro"], mods


def gold(name: str, row: dict) -> str:
    from repro.grading.gold import read_gold

    return read_gold(paper.BY_NAME[name].gold, row)


def test_gold_rules_on_hand_made_rows():
    assert gold("gsm8k", {"answer": "3 + 4 = 7\n#### 7 "}) == "7"
    assert gold("math500", {"solution": "so $\\boxed{\\frac{1}{2}}$."}) == "\\frac{1}{2}"
    assert gold("minerva_math", {"solution": "a $\\boxed{1}$, then $\\boxed{5\\text{ cm}}$"}) == "5\\text{ cm}"
    assert gold("olympiadbench", {"final_answer": ["$x=2$", "$3$"]}) == "x=2"
    assert gold("gaokao2023en", {"answer": "$-\\frac{1}{2}$"}) == "-\\frac{1}{2}"
    assert gold("college_math", {"answer": "$3$ or $4$"}) == "3 or 4"
    assert gold("amc23", {"answer": 27.0}) == "27.0"
    from repro.grading.gold import READERS, read_gold

    assert set(READERS) == set(paper.GOLD_RULES)  # every rule the table can name is implemented
    with pytest.raises(KeyError, match="unknown gold rule"):
        read_gold("last_line", {})


def test_the_graders_per_benchmark_rules_follow_the_table():
    """Minerva keeps units (a unit left on the answer makes it wrong there only); MATH-500's gold
    is normalised three times; everywhere else the plain qwen grader."""
    from repro.grading.pool import grade_one, resolve
    from repro.grading.qwen import qwen_grade, qwen_grade_boxed_gold, qwen_grade_keep_units

    for b in paper.BENCHMARKS:
        assert grade_one("qwen", "5 cm", "5", b.name).correct is (not b.units_kept), b.name
        want = (qwen_grade_keep_units if b.units_kept else qwen_grade_boxed_gold if b.boxed_gold
                else qwen_grade)
        assert resolve("qwen", b.name) is want, b.name


def test_one_clear_error_when_table1_is_missing(tmp_path, monkeypatch):
    missing = tmp_path / "table1_paper.csv"
    with pytest.raises(paper.Table1Missing, match="table1_paper.csv") as e:
        paper.load_table1(missing)
    assert isinstance(e.value, FileNotFoundError) and str(missing) in str(e.value)
    monkeypatch.setattr(paper, "TABLE1_CSV", missing)
    # every user of Table 1 gets that error from the one loader
    with pytest.raises(paper.Table1Missing):
        paper.comparison_markdown(_scores({"gsm8k": 80.0}), "3B")
    with pytest.raises(paper.Table1Missing):
        paper.comparison_frame([({"method": "lambda"}, None)], "3B")
    from repro.trainers.openrlhf import reproduce

    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    with pytest.raises(paper.Table1Missing):
        reproduce.comparison_table("3b", {})
    # make artifacts carries on (the objective's figures need no Table 1) and says why not
    from repro import artifacts

    book = artifacts.Book(tmp_path / "out")
    assert artifacts.table1_artifacts(book, [], "none") == []
    assert book.skipped and "table1_paper.csv" in book.skipped[0] and not book.items


def test_comparison_frame_against_the_printed_row():
    t1 = paper.load_table1()
    ours = {b: 50.0 + i for i, b in enumerate(ORDER)}
    f = paper.comparison_frame([({"method": "lambda"}, _scores(ours)), ({"method": "dr_grpo"}, None)], "3b", t1)
    assert list(f["row"]) == ["paper", "this run (qwen)", "this run - paper", "this run"]
    rows = {r: f[f["row"] == r].iloc[0] for r in f["row"]}
    for i, b in enumerate(ORDER):
        assert rows["paper"][b] == LAMBDA_3B[i]
        assert rows["this run - paper"][b] == pytest.approx(50.0 + i - LAMBDA_3B[i])
    assert rows["this run (qwen)"]["avg"] == pytest.approx(53.5)  # mean of 50..57
    assert rows["this run - paper"]["avg"] == pytest.approx(53.5 - LAMBDA_3B_AVG)
    assert rows["this run"]["note"] == "no eval/scores.json"  # dr_grpo: no Table 1 row, no scores


def test_a_subset_has_no_average_to_compare():
    sc = _scores({"gsm8k": 80.0, "aime24": 10.0})
    ours = paper.ours_from_scores(sc)
    assert ours == {"gsm8k": 80.0, "aime24": 10.0}  # no "avg": Table 1's Avg. is over all eight
    f = paper.comparison_frame([({"method": "grpo"}, sc)], "7B")
    diff = f[f["row"] == "this run - paper"].iloc[0]
    assert diff["gsm8k"] == pytest.approx(80.0 - 89.7) and diff["aime24"] == pytest.approx(10.0 - 17.2)
    assert diff.isna()["avg"] and diff.isna()["math500"]
    md = paper.comparison_markdown(sc, "7B")
    assert "| ours (qwen) | 80.0 | - | - | - | - | - | 10.0 | - | 45.0 (subset) |" in md
    assert "| diff vs 7B GRPO | -9.7 | - | - | - | - | - | -7.2 | - | - |" in md
    assert md.count("| paper 7B ") == 4
