"""The paper's facts, each written once: its eight benchmarks, its Table 1 and the comparison of
a reproduction's scores with that table.

* ``BENCHMARKS``: the evaluation sets of Table 1, in its column order; every per-benchmark rule
  is here, once. Each ``Benchmark`` says its name (the key in ``data/manifest.json``, in
  ``scores.json`` and in Table 1's CSV), its column header, which rule reads its gold answer from
  a raw row (``GOLD_RULES``), whether it is sampled (Average@32, AIME24 and AMC23) or greedy
  (pass@1), the qwen grader's two per-benchmark rules (units kept: Minerva; the gold normalised
  three times: MATH-500), and which raw fields the normalised rows keep. ``repro.eval.data``
  normalises by it (the gold rules run in ``repro.grading.gold``), ``repro.eval.run`` sets each
  benchmark's decoding by it, ``repro.grading.qwen`` takes its two rules from it.
* ``load_table1``: the paper's Table 1 as entered in ``paper_artifacts/table1_paper.csv`` (the
  numbers live there as data, with their provenance in ``table1_paper.md``); the one loader of
  that file. A missing file raises ``Table1Missing`` (one message, whoever asks).
* ``table1_average_check``: each row's printed average against the mean of its cells.
* ``ours_from_scores``, ``difference``, ``comparison_frame``, ``comparison_markdown``: a
  reproduction's scores beside the paper's row for the same size and method, cell by cell.

Adding a benchmark: one ``Benchmark`` entry below (with its gold rule), its file in
``data/manifest.json``, and, for Table 1, its column in ``table1_paper.csv``.

This module imports nothing of the package, so every layer can import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
TABLE1_CSV = REPO / "paper_artifacts" / "table1_paper.csv"


# ----------------------------------------------------------------------------------------------
# the benchmarks
# ----------------------------------------------------------------------------------------------
# How each set's gold answer is read from a raw row (as the Qwen2.5-Math / SimpleRL-Zoo evaluation
# reads it): rule name -> what it does. ``repro.grading.gold`` implements each rule.
GOLD_RULES: dict[str, str] = {
    "after_hashes": "the text after '####' of 'answer' (GSM8K)",
    "boxed_in_solution": "what the Qwen extraction finds in 'solution', its last \\boxed{} (MATH-500, Minerva)",
    "first_final_answer": "'final_answer'[0] without its '$' (OlympiadBench)",
    "answer_without_dollars": "'answer' with every '$' removed (Gaokao 2023 En, College Math)",
    "answer_field": "'answer' as a string; AMC23 stores floats: '27.0' (AIME24, AMC23, the training set)",
}


@dataclass(frozen=True)
class Benchmark:
    name: str                                # manifest / scores.json / Table 1 CSV column
    header: str                              # Table 1's column header
    gold: str                                # how the gold is read from a raw row: a GOLD_RULES key
    sampled: bool = False                    # True: Average@n of samples; False: one greedy sample
    units_kept: bool = False                 # the qwen grader skips its unit stripping
    boxed_gold: bool = False                 # the qwen grader normalises the gold three times
    source_id: str | None = None             # raw field kept as the row's ``source_id``
    fields: tuple[str, ...] = ()             # raw fields copied into the normalised row
    extra: Callable[[dict], dict] | None = None  # further normalised fields from the raw row

    def __post_init__(self):
        if self.gold not in GOLD_RULES:
            raise ValueError(f"benchmark {self.name!r}: gold rule {self.gold!r} is not one of "
                             f"{sorted(GOLD_RULES)}")


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("gsm8k", "GSM8K", "after_hashes", source_id="idx"),
    Benchmark("math500", "MATH500", "boxed_in_solution", boxed_gold=True, source_id="unique_id",
              fields=("subject", "level", "unique_id"),
              extra=lambda row: {"answer_field": row.get("answer")}),
    Benchmark("minerva_math", "Minerva", "boxed_in_solution", units_kept=True, source_id="idx",
              fields=("type",)),
    Benchmark("gaokao2023en", "Gaokao", "answer_without_dollars", fields=("source",)),
    Benchmark("olympiadbench", "Olympiad", "first_final_answer", source_id="id",
              fields=("subfield", "answer_type", "is_multiple_answer", "unit"),
              extra=lambda row: {"answers": [str(a).strip("$").strip() for a in row["final_answer"]]}),
    Benchmark("college_math", "College Math", "answer_without_dollars", source_id="question_number",
              fields=("data_source", "data_topic", "license")),
    Benchmark("aime24", "AIME", "answer_field", sampled=True, source_id="id", fields=("url",)),
    Benchmark("amc23", "AMC", "answer_field", sampled=True, source_id="id", fields=("url",)),
)
BY_NAME: dict[str, Benchmark] = {b.name: b for b in BENCHMARKS}
BENCHMARK_NAMES: tuple[str, ...] = tuple(BY_NAME)
SAMPLED: tuple[str, ...] = tuple(b.name for b in BENCHMARKS if b.sampled)
UNITS_KEPT: frozenset[str] = frozenset(b.name for b in BENCHMARKS if b.units_kept)
BOXED_GOLD: frozenset[str] = frozenset(b.name for b in BENCHMARKS if b.boxed_gold)
AVG_N = 32  # the paper's Average@32 on the sampled benchmarks


def benchmark(name: str) -> Benchmark:
    if name not in BY_NAME:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}")
    return BY_NAME[name]


# ----------------------------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------------------------
TABLE1_SIZES = ("1.5B", "3B", "7B")
# Table 1's row name for each of the package's method names ("base": the starting model)
TABLE1_ROWS = {"grpo": "GRPO", "dapo": "DAPO", "lambda": "λ-GRPO", "base": "Base"}
TABLE1_METHODS = ("grpo", "dapo", "lambda")  # the methods Table 1 trains
FIG2_R = (1 / 30, 1 / 15, 1 / 9)  # the r values of Figure 2 (the paper trains with the last)


class Table1Missing(FileNotFoundError):
    """``paper_artifacts/table1_paper.csv`` (or the path given) is not there."""


def load_table1(path: str | Path | None = None):
    """The paper's Table 1 as a DataFrame: columns size ('1.5B', '3B', '7B'), method (Table 1's
    row name: 'Base', 'DAPO', 'GRPO', 'λ-GRPO'), the eight benchmarks (floats, %) and avg (the
    printed average). Raises ``Table1Missing`` if the file is absent, ``ValueError`` if a column
    is missing."""
    import pandas as pd

    p = Path(path) if path is not None else TABLE1_CSV
    if not p.exists():
        raise Table1Missing(f"the paper's Table 1 is not at {p}: it is committed as "
                            f"paper_artifacts/table1_paper.csv (restore it with `git checkout -- "
                            f"paper_artifacts/table1_paper.csv`); see paper_artifacts/table1_paper.md")
    t = pd.read_csv(p)
    missing = [c for c in ("size", "method", *BENCHMARK_NAMES, "avg") if c not in t.columns]
    if missing:
        raise ValueError(f"{p}: columns {missing} missing (have {list(t.columns)})")
    return t.astype({c: float for c in (*BENCHMARK_NAMES, "avg")})


def table1_row(table, size: str, method: str) -> dict | None:
    """``{benchmark: %, ..., "avg": %}`` of Table 1's row for ``size`` ('3B' or '3b') and
    ``method`` (the package's name, e.g. 'lambda', or Table 1's row name); None if it has none."""
    name = TABLE1_ROWS.get(method, method)
    hit = table[(table["size"].str.lower() == str(size).lower()) & (table["method"] == name)]
    if not len(hit):
        return None
    return {c: float(hit.iloc[0][c]) for c in (*BENCHMARK_NAMES, "avg")}


def table1_average_check(t1, benchmarks: Sequence[str] = BENCHMARK_NAMES, avg_col: str = "avg"):
    """Each row's average recomputed from its benchmark cells (unweighted mean), against the
    paper's printed average. ``rounds_to_printed``: the recomputed mean rounds to the printed
    value at 0.1. ``matches``: within 0.1, the most that rounding the cells (±0.05 on their
    mean) and the average (±0.05) can explain; a row outside it is a real inconsistency."""
    if len(benchmarks) != 8:
        raise ValueError(f"Table 1 has 8 benchmarks, got {list(benchmarks)}")
    cells = t1[list(benchmarks)].astype(float)
    out = t1[[c for c in t1.columns if c not in benchmarks and c != avg_col]].copy()
    out["paper avg"] = t1[avg_col].astype(float)
    out["recomputed avg"] = cells.mean(axis=1)
    out["difference"] = out["paper avg"] - out["recomputed avg"]
    out["rounds_to_printed"] = (out["difference"].abs() <= 0.05 + 1e-9)
    out["matches"] = out["difference"].abs() <= 0.1 + 1e-9
    return out


def size_of(text) -> str | None:
    """'1.5B', '3B' or '7B' if ``text`` (a model id or path, or any nesting of dicts and lists
    of strings, e.g. a run's config) names a Qwen2.5 base model ('qwen2.5-3b')."""
    if isinstance(text, dict):
        text = list(text.values())
    if isinstance(text, (list, tuple)):
        return next((s for s in map(size_of, text) if s), None)
    if isinstance(text, str):
        m = re.search(r"qwen2\.5-(1\.5|3|7)b", text.lower())
        return m.group(1) + "B" if m else None
    return None


# ----------------------------------------------------------------------------------------------
# the comparison with Table 1
# ----------------------------------------------------------------------------------------------
def ours_from_scores(scores: dict, grader: str | None = None) -> dict:
    """``{benchmark: %}`` of one ``repro.eval`` ``scores.json`` (its primary grader unless
    ``grader``), for the Table 1 benchmarks it scored, plus ``avg`` (the unweighted mean of
    the eight, as Table 1's Avg.) only when it scored all eight."""
    res = scores["graders"][grader or scores["primary_grader"]]
    ours = {b: float(res["benchmarks"][b]["accuracy"]) for b in BENCHMARK_NAMES if b in res["benchmarks"]}
    if len(ours) == len(BENCHMARK_NAMES):
        ours["avg"] = sum(ours.values()) / len(ours)
    return ours


def difference(ours: Mapping[str, float], paper: Mapping[str, float]) -> dict:
    """ours − paper on every Table 1 column (the eight and avg) that both have."""
    return {c: ours[c] - paper[c] for c in (*BENCHMARK_NAMES, "avg") if c in ours and c in paper}


def comparison_frame(entries: Iterable[tuple[dict, dict | None]], size: str, table=None, *,
                     ours_row: str = "this run"):
    """The comparison table: for each ``(keys, scores)`` entry (``keys``: the columns naming it,
    with its package ``method``; ``scores``: a ``scores.json`` dict or None), Table 1's row for
    ``size`` and that method (if it has one), the entry's scores (primary grader) and the
    difference per cell. An entry without scores gets one row saying so. Columns: the keys,
    ``row``, the eight benchmarks, ``avg`` (and ``note``)."""
    import pandas as pd

    table = load_table1() if table is None else table
    rows = []
    for keys, scores in entries:
        ref = table1_row(table, size, keys["method"]) if keys["method"] in TABLE1_ROWS else None
        if ref is not None:
            rows.append({**keys, "row": "paper", **ref})
        if scores is None:
            rows.append({**keys, "row": ours_row, "note": "no eval/scores.json"})
            continue
        ours = ours_from_scores(scores)
        rows.append({**keys, "row": f"{ours_row} ({scores['primary_grader']})", **ours})
        if ref is not None:
            rows.append({**keys, "row": f"{ours_row} - paper", **difference(ours, ref)})
    return pd.DataFrame(rows)


def comparison_markdown(scores: dict, size: str | None, table=None) -> str:
    """One ``repro.eval`` result beside Table 1: our row per grader, then the paper's rows (of
    ``size`` when known, else all twelve), each followed by our (primary grader) difference."""
    def fmt(v):
        return f"{v:.1f}"

    table = load_table1() if table is None else table
    head = ("| row | " + " | ".join(b.header for b in BENCHMARKS) + " | Avg. |\n|---|"
            + "---|" * (len(BENCHMARKS) + 1) + "\n")
    ns = sorted({s["n_samples"] for res in scores["graders"].values()
                 for b, s in res["benchmarks"].items() if b in SAMPLED})
    avg_n = "/".join(map(str, ns)) if ns else str(AVG_N)
    lines = [f"# {scores['model']} vs the paper's Table 1\n\n",
             f"Accuracy in %: pass@1 (greedy) for the first six sets, Average@{avg_n} for AIME and "
             f"AMC (the paper: Average@{AVG_N}); "
             "Avg. is the unweighted mean of the 8. `diff` = ours (primary grader) - paper.\n\n",
             head]
    for g, res in scores["graders"].items():
        vals = [res["benchmarks"][b]["accuracy"] if b in res["benchmarks"] else None
                for b in BENCHMARK_NAMES]
        avg = fmt(res["average"]) + ("" if all(v is not None for v in vals) else " (subset)")
        lines.append(f"| ours ({g}) | " + " | ".join("-" if v is None else fmt(v) for v in vals)
                     + f" | {avg} |\n")
    ours = ours_from_scores(scores)
    sel = table if size is None else table[table["size"] == size]
    for _, r in sel.iterrows():
        ref = {c: float(r[c]) for c in (*BENCHMARK_NAMES, "avg")}
        lines.append(f"| paper {r['size']} {r['method']} | "
                     + " | ".join(fmt(ref[c]) for c in BENCHMARK_NAMES) + f" | {fmt(ref['avg'])} |\n")
        d = difference(ours, ref)
        lines.append(f"| diff vs {r['size']} {r['method']} | "
                     + " | ".join("-" if c not in d else f"{d[c]:+.1f}" for c in (*BENCHMARK_NAMES, "avg"))
                     + " |\n")
    return "".join(lines)
