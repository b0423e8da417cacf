"""Gold answers read from raw benchmark rows, as the Qwen2.5-Math / SimpleRL-Zoo evaluation reads
them (its ``parse_ground_truth``). Which rule a benchmark uses is ``repro.paper.BENCHMARKS``'s
``gold`` (a key of ``repro.paper.GOLD_RULES``); the rules themselves live here, beside the
extraction that MATH-500's and Minerva's golds go through."""
from __future__ import annotations

from typing import Callable

from repro.grading.qwen import extract_answer


def _after_hashes(row: dict) -> str:
    return row["answer"].split("####")[-1].strip()


def _boxed_in_solution(row: dict) -> str:
    return extract_answer(row["solution"]).strip()


def _first_final_answer(row: dict) -> str:
    return str(row["final_answer"][0]).strip("$").strip()


def _answer_without_dollars(row: dict) -> str:
    return str(row["answer"]).replace("$", "").strip()


def _answer_field(row: dict) -> str:
    return str(row["answer"]).strip()


READERS: dict[str, Callable[[dict], str]] = {
    "after_hashes": _after_hashes,
    "boxed_in_solution": _boxed_in_solution,
    "first_final_answer": _first_final_answer,
    "answer_without_dollars": _answer_without_dollars,
    "answer_field": _answer_field,
}


def read_gold(rule: str, row: dict) -> str:
    """The gold answer string of the raw ``row`` by ``rule`` (a ``repro.paper.GOLD_RULES`` key)."""
    if rule not in READERS:
        raise KeyError(f"unknown gold rule {rule!r}; known: {', '.join(READERS)}")
    return READERS[rule](row)
