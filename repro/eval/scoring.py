"""Scores of Table 1: per-benchmark accuracy (Avg@n), unbiased pass@k, the unweighted average.

``correct`` for one benchmark is a list over items of lists over samples (booleans). With one
sample per item, accuracy is pass@1; with n samples it is Average@n: the mean over items of the
per-item fraction correct (with the same n for every item this equals the mean of all entries,
which is what SimpleRL-Zoo reports). Scores are percentages (0-100), unrounded.
"""
from __future__ import annotations

import csv
import io
from math import comb
from typing import Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples, c correct."""
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def default_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n, plus n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != n:
        ks.append(n)
    return ks


def benchmark_scores(correct: Sequence[Sequence[bool]], ks: Sequence[int] | None = None) -> dict:
    """``{"accuracy", "n_items", "n_samples", "pass@k"...}`` for one benchmark."""
    if not correct:
        raise ValueError("no items to score")
    ns = {len(row) for row in correct}
    if len(ns) != 1 or 0 in ns:
        raise ValueError(f"every item needs the same, non-zero number of samples; got {sorted(ns)}")
    n = ns.pop()
    per_item = [sum(bool(x) for x in row) / n for row in correct]
    out = {"accuracy": 100.0 * sum(per_item) / len(per_item), "n_items": len(correct),
           "n_samples": n}
    if n > 1:
        for k in (ks or default_ks(n)):
            vals = [pass_at_k(n, sum(bool(x) for x in row), k) for row in correct]
            out[f"pass@{k}"] = 100.0 * sum(vals) / len(vals)
    return out


def unweighted_average(accuracies: Mapping[str, float]) -> float:
    """The mean of the per-benchmark accuracies, each benchmark counting once (Table 1's Avg.)."""
    if not accuracies:
        raise ValueError("no benchmarks to average")
    return sum(accuracies.values()) / len(accuracies)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def scores_markdown(scores: dict, title: str | None = None) -> str:
    """Every set scored, one row per set, one accuracy column per grader; a slice says so."""
    graders = list(scores["graders"])
    benches = list(scores["graders"][graders[0]]["benchmarks"])
    lines = [(title or f"# {scores['model']}: scores") + "\n\n"]
    sl = scores.get("slice")
    if sl:
        lines.append(f"**Slice** (`--limit {sl['limit']}`): the first {sl['limit']} items of each set, "
                     "not the full sets; the paper's Table 1 scores the full benchmarks, so no paper "
                     "row or difference is shown.\n\n")
    lines.append("Accuracy in % (pass@1 greedy; Average@n for sampled sets); primary grader: "
                 f"`{scores['primary_grader']}`.\n\n")
    lines.append("| set | items | samples | " + " | ".join(graders) + " |\n|---|---|---|"
                 + "---|" * len(graders) + "\n")
    for b in benches:
        s0 = scores["graders"][graders[0]]["benchmarks"][b]
        accs = " | ".join(f"{scores['graders'][g]['benchmarks'][b]['accuracy']:.1f}" for g in graders)
        lines.append(f"| {b} | {s0['n_items']} | {s0['n_samples']} | {accs} |\n")
    if len(benches) > 1:
        lines.append("| unweighted mean | | | " + " | ".join(f"{scores['graders'][g]['average']:.1f}"
                                                       for g in graders) + " |\n")
    return "".join(lines)


def scores_csv(scores: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["grader", "benchmark", "accuracy", "n_items", "n_samples", "n_flagged",
                "pass@k"])
    for g, res in scores["graders"].items():
        for b, s in res["benchmarks"].items():
            pk = ";".join(f"{k}={v:.4f}" for k, v in s.items() if k.startswith("pass@"))
            w.writerow([g, b, f"{s['accuracy']:.4f}", s["n_items"], s["n_samples"],
                        s["n_flagged"], pk])
        w.writerow([g, "avg", f"{res['average']:.4f}", "", "", "", ""])
    return buf.getvalue()
