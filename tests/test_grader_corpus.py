"""The ``qwen`` grader against the ORIGINAL Qwen2.5-Math / SimpleRL-Zoo grader, by difference.

The reference is ``tests/data/grader_corpus/corpus.jsonl.gz``: pairs built by
``repro.fidelity.corpus`` from the 8 benchmarks' golds, each with the verdict of the original
evaluation code, run as its ``math_eval.py`` runs it (``make grader-corpus`` re-records it; the
original is not needed here). Every pair where the package differs on purpose is listed, with
its reason, in ``intended_differences.json``; the set of differing pairs must equal that list
exactly, so a new difference and a fixed one both fail.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter

import pytest

from repro.fidelity.differential import (CORPUS, INTENDED, META, agreement, grade_package,
                                        load_corpus, load_intended)

GOAL = 0.998


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_corpus_shape(corpus):
    meta = json.loads(META.read_text())
    assert len(corpus) == meta["n"] >= 5000
    assert len({r["uid"] for r in corpus}) == len(corpus)
    by_b = Counter(r["benchmark"] for r in corpus)
    assert set(by_b) == {"gsm8k", "math500", "minerva_math", "gaokao2023en", "olympiadbench",
                         "college_math", "aime24", "amc23"}
    assert min(by_b.values()) >= 50
    # weighted toward non-integer golds
    def is_int(g):
        try:
            return float(g.replace(",", "")) == int(float(g.replace(",", ""))) and "." not in g
        except ValueError:
            return False
    assert sum(not is_int(r["gold"]) for r in corpus) > 0.5 * len(corpus)
    kinds = Counter(r["kind"].split("_")[0] for r in corpus)
    assert kinds["near"] > 500 and kinds["wrong"] > 300 and kinds["path"] > 100
    shapes = Counter(r["shape"] for r in corpus)
    assert {"boxed", "answer_is_trailing", "multibox_last_differs", "minerva",
            "last_number"} <= set(shapes)
    # the original's verdicts: booleans, or "timeout" for the few it could not grade in 3 s
    assert {type(r["orig"]) for r in corpus if r["orig"] not in ("timeout",)} == {bool}
    assert sum(r["orig"] is True for r in corpus) > 0.25 * len(corpus)


def _data_available():
    try:
        from repro.eval.data import default_src, locate, manifest

        src = default_src()
        return all(locate(e, src).exists() for e in manifest().values() if e["kind"] == "eval")
    except Exception:
        return False


@pytest.mark.skipif(not _data_available(), reason="benchmark files (DATA_SRC) not available")
def test_corpus_is_what_the_generator_makes(corpus):
    """A seeded slice regenerated from the benchmark files reproduces the committed rows, so the
    corpus cannot drift from its generator (or the golds from repro.eval.data) silently."""
    from repro.fidelity.corpus import build_row, gold_pool

    meta = json.loads(META.read_text())
    golds = gold_pool()
    idx = list(range(40)) + random.Random(1).sample(range(len(corpus)), 160)
    keys = ("uid", "benchmark", "id", "kind", "shape", "response", "gold")
    for i in idx:
        want = build_row(i, meta["seed"], golds)
        assert {k: corpus[i][k] for k in keys} == {k: want[k] for k in keys}, i


def test_intended_differences_are_documented():
    doc = json.loads(INTENDED.read_text())
    for d in doc["differences"]:
        assert d["uid"] and len(d["reason"]) > 20
        assert d["category"] in doc["categories"]


# The whole corpus is graded (about 3 minutes on 2 cores). The per-item budget
# (GRADER_CORPUS_TIMEOUT, default 3, the original's limit) is CPU seconds (grade_many's default
# clock), so a loaded machine makes the test slower, not its verdicts different.


def test_qwen_agrees_with_the_original(corpus):
    """The evaluation's own path (extract_answer with the gold, grade_many with worker
    processes) against the original's verdicts, on every pair the original graded in 3 s."""
    intended = load_intended()
    rows = corpus
    res = grade_package(rows, "qwen", workers=2, timeout=float(os.environ.get(
        "GRADER_CORPUS_TIMEOUT", "3")))
    a = agreement(rows, [r.correct for r in res])
    per = ", ".join(f"{b} {100 * d['rate']:.2f}" for b, d in a["per_benchmark"].items())
    print(f"\n[qwen vs original] {a['agree']}/{a['total']} = {100 * a['rate']:.2f} %; {per}")
    uids = {r["uid"] for r in rows}
    differ = set(a["differ"])
    expected = set(intended) & uids
    # a pair listed as 'timeout' is slow in both graders: its verdict depends on the budget
    either = {d["uid"] for d in json.loads(INTENDED.read_text())["differences"]
              if d["category"] == "timeout"}
    assert differ - expected == set(), "new differences from the original"
    assert expected - either - differ == set(), "listed differences that no longer occur"
    assert a["rate"] >= GOAL, a
    timeouts = [r["uid"] for r, x in zip(rows, res) if x.flagged == "timeout"]
    # a package timeout scores False: it may only meet a pair the original also failed (or a
    # listed difference, such as 0-3080)
    assert all(r["orig"] in (False, "timeout") for r in rows
               if r["uid"] in timeouts and r["uid"] not in intended)


def test_compare_command_writes_the_agreement_table(corpus, tmp_path, monkeypatch):
    """``make grader-agreement`` on a slice: the table's counts are those of an independent
    in-process grading of the same pairs, and a listed difference is reported with its reason."""
    import repro.fidelity.differential as d
    from repro.grading.pool import grade_one

    rows = [r for r in corpus if r["uid"] == "0-693"] + \
        [r for r in corpus[:60] if isinstance(r["orig"], bool)][:20]
    monkeypatch.setattr(d, "load_corpus", lambda: rows)
    monkeypatch.setattr(d, "ARTIFACT", tmp_path / "grader_agreement")
    assert d.main(["compare", "--graders", "qwen", "--workers", "1"]) == 0
    md = (tmp_path / "grader_agreement.md").read_text()
    out = json.loads((tmp_path / "grader_agreement.json").read_text())
    agree = sum(grade_one("qwen", p, g, b).correct == r["orig"]
                for r, (p, g, b) in zip(rows, d.package_items(rows)))
    assert out["qwen"]["total"] == len(rows) and out["qwen"]["agree"] == agree
    assert f"| all | {len(rows)} |" in md
    assert "`0-693` (parser; differs in this run)" in md
    assert load_intended()["0-693"] in md


def test_agreement_counts_each_direction():
    """``agreement`` on hand-made rows: timeouts left out, extra / missing / net by hand."""
    rows = [{"uid": f"0-{i}", "benchmark": b, "orig": o} for i, (b, o) in enumerate(
        [("a", True), ("a", False), ("a", False), ("a", "timeout"), ("b", True), ("b", True)])]
    a = agreement(rows, [True, True, False, True, False, True])
    assert (a["agree"], a["total"], a["extra"], a["missing"]) == (3, 5, 1, 1)
    assert a["differ"] == ["0-1", "0-4"] and a["net_pp"] == 0.0
    pa, pb = a["per_benchmark"]["a"], a["per_benchmark"]["b"]
    assert (pa["total"], pa["extra"], pa["missing"]) == (3, 1, 0) and pa["net_pp"] == 100 / 3
    assert (pb["total"], pb["extra"], pb["missing"]) == (2, 0, 1) and pb["net_pp"] == -50.0
