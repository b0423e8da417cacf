"""Grading throughput on a synthetic set the size of a full evaluation (``make bench``).

6,000 responses with realistic answer styles (a paragraph of reasoning, then the final answer
boxed, in words after "the answer is", or only as a last number; equivalent rewrites such as
decimals for fractions, thousands separators, units, ``\\dfrac``, ``x=``; wrong answers; and a
few pathological ones) are built from the real gold answers of the 8 benchmarks (from DATA_SRC;
a built-in list of golds when the data is absent). Each grader grades the whole set with the
evaluation's own machinery (extraction + worker processes with the per-item timeout) and the
script prints responses per second, the timeouts, and how often the two graders agree.

    python -m repro.speed.grading [--n 6000] [--workers 2] [--timeout 5] [--graders qwen,math-verify]

Target (issue 3): the whole set in under 60 s with the ``qwen`` grader on 2 cores.

``--corpus`` (issue 10; the second half of ``make bench``) grades the committed grader-fidelity
corpus (``tests/data/grader_corpus``; ``--limit N``: a fixed seeded subset of N pairs) side by
side, in one run: (1) the ORIGINAL grader in its own setting (one pebble worker, 3 s wall-clock
timeout, through the harness subprocess), when ``--orig`` / ``--orig-python`` (or
``ORIG_GRADER`` / ``ORIG_PYTHON``) point at it, and (2) the package's ``qwen`` grader through
``grade_many`` as the evaluation runs it (``--workers``, a per-item budget of 3 CPU seconds by
default, so that a pathological item costs it no more CPU than the original's 3 s can).
``--one-worker`` adds the package with one worker. It prints pairs per second, each side's
agreement with the recorded verdicts, and the ratio.

    python -m repro.speed.grading --corpus [--limit 1000] [--orig DIR --orig-python PY]

``--compare-start-methods`` (issue 21): the synthetic set with each grader's workers started by
fork (the pool's old default) and by its default (forkserver), interleaved fork, default, default,
fork in one process; prints the throughput ratio and the number of differing verdicts or flags.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import re
import time

from repro.fidelity.corpus import _num

FALLBACK_GOLDS = [("gsm8k", "18"), ("gsm8k", "70000"), ("math500", "\\frac{14}{3}"),
                  ("math500", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("math500", "p - q"),
                  ("minerva_math", "4.5e33"), ("minerva_math", "1.6"),
                  ("gaokao2023en", "\\{x|-2\\leq x < 1\\}"), ("gaokao2023en", "B"),
                  ("olympiadbench", "2^{1009}"), ("olympiadbench", "\\frac{1}{2 n+2}"),
                  ("college_math", "10-4 n"), ("college_math", "(45,2),(-10,-9)"),
                  ("aime24", "204"), ("amc23", "27.0")]
# how many responses each benchmark contributes to a full evaluation (aime/amc: 32 samples)
WEIGHTS = {"gsm8k": 1319, "math500": 500, "minerva_math": 272, "gaokao2023en": 385,
           "olympiadbench": 675, "college_math": 2818, "aime24": 960, "amc23": 1280}

REASONING = [
    "Let me think step by step. First we write down what is given. ",
    "We have $x + y = 10$ and $xy = 21$, so $x$ and $y$ are roots of $t^2 - 10t + 21 = 0$. ",
    "Multiplying both sides by $2$ gives $4a = 12$, hence $a = 3$. ",
    "The total cost is $3 \\times 4 + 2 \\times 5 = 22$ dollars. ",
    "By the Pythagorean theorem, $c = \\sqrt{3^2 + 4^2} = 5$. ",
    "Substituting back, we check that the equation holds: $2(3) + 1 = 7$. ",
    "Now we simplify the fraction $\\frac{12}{18} = \\frac{2}{3}$. ",
    "There are $\\binom{5}{2} = 10$ ways to choose the pair. ",
]


def golds_from_data() -> list[tuple[str, str]]:
    try:
        from repro.eval.data import BENCHMARKS, load_benchmark
        out = []
        for b in BENCHMARKS:
            out += [(b, r["gold"]) for r in load_benchmark(b) if r["gold"]]
        return out
    except Exception:
        return []


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def styled_answer(gold: str, rng: random.Random, others: list[str]) -> tuple[str, str]:
    """(style, answer text) for one gold: equivalent rewrites and wrong answers."""
    v = _num(gold)
    frac = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", gold)
    options = [("same", gold), ("same", gold), ("same", gold), ("wrong_other", rng.choice(others)),
               ("spaces", gold.replace(",", ", ")), ("dfrac", gold.replace("\\frac", "\\dfrac")),
               ("x_equals", f"x = {gold}"), ("dollars", f"${gold}$")]
    if v is not None:
        options += [("wrong_plus_one", _fmt(v + 1)), ("decimal_zero", _fmt(v) + ".0"),
                    ("unit_text", f"{_fmt(v)} \\text{{ cm}}"), ("wrong_double", _fmt(2 * v))]
        if abs(v) >= 1000 and v == int(v):
            options.append(("thousands", f"{int(v):,}"))
    if frac:
        a, b = int(frac.group(1)), int(frac.group(2))
        options += [("frac_decimal", f"{a / b:.6f}"), ("frac_slash", f"{a}/{b}"),
                    ("wrong_frac", f"\\frac{{{b}}}{{{a if a else 1}}}")]
    return rng.choice(options)


def synthetic_set(n: int = 6000, seed: int = 0, pathological: int = 3
                  ) -> list[tuple[str, str, str, str]]:
    """[(style, response, gold, benchmark)], ``pathological`` of them built to time out."""
    rng = random.Random(seed)
    golds = golds_from_data() or FALLBACK_GOLDS
    by_b: dict[str, list[str]] = {}
    for b, g in golds:
        by_b.setdefault(b, []).append(g)
    benches = [b for b in WEIGHTS if b in by_b]
    weights = [WEIGHTS[b] for b in benches]
    all_golds = [g for _, g in golds]
    out = []
    for i in range(n - pathological):
        b = rng.choices(benches, weights)[0]
        gold = rng.choice(by_b[b])
        style, ans = styled_answer(gold, rng, all_golds)
        body = "".join(rng.choice(REASONING) for _ in range(rng.randint(2, 10)))
        form = rng.random()
        if form < 0.80:
            resp = f"{body}\nTherefore, the final answer is $\\boxed{{{ans}}}$."
        elif form < 0.90:
            resp = f"{body}\nSo the answer is {ans}"
            style += "+answer_is"
        else:
            resp = f"{body}\nAfter all this we get {ans}"
            style += "+last_number"
        out.append((style, resp, gold, b))
    for k in range(pathological):
        resp = "Thus \\boxed{10^{10^{10^{10}}} - 10^{10^{10^{10}}} + " + "x^{99}" * (k + 1) + "}"
        out.append(("pathological", resp, "7", "math500"))
    rng.shuffle(out)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process, its reaped children and the grading workers (children of the
    pool's forkserver, counted through it)."""
    from repro.grading.pool import forkserver_cpu_seconds

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + forkserver_cpu_seconds()


def corpus_subset(rows: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A fixed seeded subset of the corpus (``limit`` rows, in corpus order), or all of it."""
    if not limit or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def corpus_bench(workers: int, timeout: float, orig: str | None, orig_python: str | None,
                 limit: int | None = None, seed: int = 0, one_worker: bool = False) -> int:
    from repro.eval.data import default_src
    from repro.fidelity.differential import agreement, grade_package, load_corpus, run_original

    rows = corpus_subset(load_corpus(), limit, seed)
    n = len(rows)
    print(f"grader corpus: {n} pairs" + (f" (seeded subset, seed {seed})" if limit else "")
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rate, runs = {}, {}
    if orig and orig_python and os.path.isdir(orig) and os.path.exists(orig_python):
        t, c = time.perf_counter(), _cpu_seconds()
        verdicts, pool_s = run_original(rows, orig, orig_python, default_src() / "eval")
        wall, cpu = time.perf_counter() - t, _cpu_seconds() - c
        rate["original"] = n / pool_s
        to = sum(v["verdict"] == "timeout" for v in verdicts.values())
        print(f"{'original (1 worker, 3 s wall)':34s} {pool_s:7.1f} s  {n / pool_s:7.1f} pairs/s  "
              f"timeouts {to}  (subprocess wall {wall:.1f} s, CPU {cpu:.1f} s, incl. imports)")
        if to > 2 * sum(r["orig"] == "timeout" for r in rows) + 5:
            print("  WARNING: the original timed out far more often than when its verdicts were "
                  "recorded: the machine is too loaded for its 3 s wall-clock limit, so this "
                  "run's ratio is not a speed figure")
    else:
        print("original grader not given (--orig/--orig-python or ORIG_GRADER/ORIG_PYTHON): "
              "its column is skipped")
    settings = [(f"package pool ({workers} workers, {timeout:g} s CPU)", workers, timeout)]
    if one_worker:
        settings.insert(0, (f"package (1 worker, {timeout:g} s CPU)", 1, timeout))
    for name, w, to in settings:
        t, c = time.perf_counter(), _cpu_seconds()
        runs[name] = grade_package(rows, "qwen", workers=w, timeout=to)
        dt, cpu = time.perf_counter() - t, _cpu_seconds() - c
        rate[name] = n / dt
        a = agreement(rows, [r.correct for r in runs[name]])
        print(f"{name:34s} {dt:7.1f} s  {n / dt:7.1f} pairs/s  timeouts "
              f"{sum(r.flagged == 'timeout' for r in runs[name])}  CPU {cpu:.1f} s  agrees with "
              f"the recorded original on {a['agree']}/{a['total']} "
              f"(differ: {' '.join(a['differ']) or '-'})")
    pool = rate[settings[-1][0]]
    if one_worker:
        x, y = runs.values()
        print(f"verdicts changed by the pool against 1 worker: "
              f"{sum(u.correct != v.correct for u, v in zip(x, y))}; ratio "
              f"{pool / rate[settings[0][0]]:.2f}x")
    if "original" in rate:
        print(f"ratio package pool / original: {pool / rate['original']:.2f}x  (goal >= 4x; "
              f"both measured in this run, same pairs, same load)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.speed.grading")
    ap.add_argument("--corpus", action="store_true", help="the grader-fidelity corpus, side by side")
    ap.add_argument("--orig", default=os.environ.get("ORIG_GRADER"))
    ap.add_argument("--orig-python", default=os.environ.get("ORIG_PYTHON"))
    ap.add_argument("--limit", type=int, default=None,
                    help="--corpus: a seeded subset of this many pairs (default: all 6,000)")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--one-worker", action="store_true",
                    help="--corpus: also the package with one worker")
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=None,
                    help="per-item CPU seconds (default 5; 3 with --corpus, the original's limit)")
    ap.add_argument("--graders", default="qwen,math-verify")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-start-methods", action="store_true",
                    help="workers started by fork vs the pool's default, A B B A, ratio")
    args = ap.parse_args(argv)
    args.timeout_given = args.timeout is not None
    if args.timeout is None:
        args.timeout = 5.0
    if args.corpus:
        return corpus_bench(args.workers, args.timeout if args.timeout_given else 3.0, args.orig,
                            args.orig_python, args.limit, args.subset_seed, args.one_worker)

    from repro.grading.pool import grade_many
    from repro.grading.qwen import extract_answer

    data = synthetic_set(args.n, args.seed)
    items = [(extract_answer(resp, b, gold), gold, b) for _, resp, gold, b in data]
    print(f"{len(items)} synthetic responses, {args.workers} workers, "
          f"per-item timeout {args.timeout:g} s")
    results = {}
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.compare_start_methods:
        return compare_start_methods(items, args)
    for g in [x for x in args.graders.split(",") if x]:
        cpu0 = _cpu_seconds()
        t = time.perf_counter()
        res = grade_many(g, items, workers=args.workers, timeout=args.timeout)
        dt = time.perf_counter() - t
        cpu = _cpu_seconds() - cpu0
        results[g] = res
        n_ok = sum(r.correct for r in res)
        flags = sum(r.flagged == "timeout" for r in res)
        print(f"{g:12s} {dt:7.1f} s wall  {len(items) / dt:7.1f} responses/s  "
              f"correct {n_ok}/{len(items)}  timeouts {flags}  "
              f"CPU {cpu:.1f} s (parent + workers)")
    if len(results) == 2:
        a, b = results.values()
        agree = sum(x.correct == y.correct for x, y in zip(a, b))
        print(f"agreement between {' and '.join(results)}: {agree}/{len(items)} "
              f"({100 * agree / len(items):.1f} %)")
    return 0


def compare_start_methods(items, args) -> int:
    from repro.grading.pool import grade_many

    for g in [x for x in args.graders.split(",") if x]:
        secs, verdicts = {"fork": 0.0, "default": 0.0}, {}
        for m in ("fork", "default", "default", "fork"):
            t = time.perf_counter()
            res = grade_many(g, items, workers=args.workers, timeout=args.timeout,
                             start_method="fork" if m == "fork" else None)
            dt = time.perf_counter() - t
            secs[m] += dt
            verdicts.setdefault(m, []).append([(r.correct, r.flagged) for r in res])
            print(f"{g:12s} {m:8s} {dt:7.1f} s  {len(items) / dt:7.1f} responses/s  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        runs = verdicts["fork"] + verdicts["default"]
        diff = max(sum(a != b for a, b in zip(runs[0], r)) for r in runs[1:])
        print(f"{g}: throughput default/fork = {secs['fork'] / secs['default']:.3f} "
              f"(fork {secs['fork']:.1f} s, default {secs['default']:.1f} s, 2 runs each); "
              f"items whose verdict or flag differs from the first run: {diff}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
