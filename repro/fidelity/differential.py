"""Differential check of the package's graders against the ORIGINAL Qwen2.5-Math grader.

Two commands (``python -m repro.fidelity.differential ...``):

``record --orig DIR --orig-python PY [--n 6000 --seed 0]`` (``make grader-corpus``)
    builds the corpus (``repro.fidelity.corpus``), runs the original grader on it in a
    subprocess (``orig_driver.py``, executed by ``PY``, the original's own environment) and
    writes ``tests/data/grader_corpus/corpus.jsonl.gz`` (every pair with the original's verdict,
    its extracted prediction and its gold) and ``meta.json`` (seed, size, versions, the
    original's commit, its timing). Nothing of the original is copied into the project; only
    its verdicts are recorded.

``compare [--graders qwen,math-verify]`` (``make grader-agreement``)
    grades the committed corpus through the evaluation's own path (``extract_answer`` with the
    gold, then ``grade_many``) and writes the agreement with the original, overall and per
    benchmark, to ``paper_artifacts/grader_agreement.{md,json}``.

The original's environment (sympy 1.12 and antlr 4.11.1, the versions it was written for; it
bundles its own latex2sympy), created outside the project::

    git clone https://github.com/hkust-nlp/simpleRL-reason ORIG      # commit cf1c785 was used
    python3.11 -m venv ORIG/venv
    ORIG/venv/bin/pip install sympy==1.12 antlr4-python3-runtime==4.11.1 pebble regex \
        word2number numpy tqdm
    ORIG/venv/bin/pip install --no-deps -e ORIG/examples/simplelr_math_eval/latex2sympy

and then ``--orig ORIG/examples/simplelr_math_eval --orig-python ORIG/venv/bin/python``.
Not imported by the evaluation: only by its tests, ``make bench`` and these commands.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = REPO / "tests" / "data" / "grader_corpus"
CORPUS = CORPUS_DIR / "corpus.jsonl.gz"
META = CORPUS_DIR / "meta.json"
INTENDED = CORPUS_DIR / "intended_differences.json"
ARTIFACT = REPO / "paper_artifacts" / "grader_agreement"
DRIVER = Path(__file__).with_name("orig_driver.py")
DEFAULT_N, DEFAULT_SEED = 6000, 0


def load_corpus(path: Path = CORPUS) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def load_intended(path: Path = INTENDED) -> dict[str, str]:
    """{uid: reason} of the pairs where the ``qwen`` grader differs from the original on purpose."""
    return {d["uid"]: d["reason"] for d in json.loads(path.read_text())["differences"]}


def run_original(rows: list[dict], orig: str | Path, orig_python: str | Path,
                 data: str | Path, timeout: float = 3.0) -> tuple[dict[str, dict], float]:
    """Verdicts of the original grader for ``rows`` ({uid: {verdict, pred, gt}}) and the seconds
    its one-worker pool took."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with open(inp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({k: r[k] for k in ("uid", "benchmark", "id", "response")},
                                    ensure_ascii=False) + "\n")
        cmd = [str(orig_python), str(DRIVER), "--orig", str(orig), "--data", str(data),
               "--in", str(inp), "--out", str(out), "--timeout", str(timeout)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": ""})
        res = [json.loads(x) for x in open(out, encoding="utf-8") if x.strip()]
    timing = res.pop()["_timing"]
    return {r["uid"]: r for r in res}, timing


def package_items(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(pred, gold, benchmark) exactly as ``repro.eval.run`` builds them."""
    from repro.grading.qwen import extract_answer

    return [(extract_answer(r["response"], r["benchmark"], r["gold"]), r["gold"], r["benchmark"])
            for r in rows]


def grade_package(rows: list[dict], grader: str = "qwen", workers: int = 2,
                  timeout: float = 5.0) -> list:
    from repro.grading.pool import grade_many

    return grade_many(grader, package_items(rows), workers=workers, timeout=timeout)


def agreement(rows: list[dict], verdicts: list[bool]) -> dict:
    """Agreement with the original on the pairs where it did not time out, overall and per
    benchmark, plus the uids that differ. ``extra``: pairs this grader accepts and the original
    rejects; ``missing``: the reverse; ``net_pp``: (extra - missing) / pairs in points, how much
    the measured accuracy on these pairs moves with the grader."""
    per = defaultdict(lambda: [0, 0, 0, 0])  # agree, total, extra, missing
    differ = []
    for r, v in zip(rows, verdicts):
        o = r["orig"]
        if not isinstance(o, bool):
            continue
        c = per[r["benchmark"]]
        c[1] += 1
        if bool(v) == o:
            c[0] += 1
        else:
            differ.append(r["uid"])
            c[2 if v else 3] += 1

    def block(a, t, x, m):
        return {"agree": a, "total": t, "rate": a / t if t else float("nan"), "extra": x,
                "missing": m, "net_pp": 100 * (x - m) / t if t else float("nan")}

    tot = [sum(c[k] for c in per.values()) for k in range(4)]
    return {**block(*tot),
            "per_benchmark": {b: block(*c) for b, c in sorted(per.items())},
            "differ": differ}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for p in ("sympy", "latex2sympy2_extended", "math-verify", "antlr4-python3-runtime"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


def _write_atomic(path: Path, text: str) -> None:
    from repro.runs import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def cmd_record(args) -> int:
    from repro.eval.data import default_src
    from repro.fidelity.corpus import build_corpus

    src = Path(args.data) if args.data else default_src()
    rows = build_corpus(args.n, args.seed, src=src)
    print(f"corpus: {len(rows)} pairs (seed {args.seed}); running the original grader ...",
          flush=True)
    orig, secs = run_original(rows, args.orig, args.orig_python, src / "eval", args.timeout)
    for r in rows:
        o = orig[r["uid"]]
        r["orig"], r["orig_pred"], r["orig_gt"] = o["verdict"], o["pred"], o["gt"]
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CORPUS.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as fh:
        for r in rows:
            fh.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())
    os.replace(tmp, CORPUS)
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(args.orig), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    ov = subprocess.run([str(args.orig_python), "-c",
                         "import sympy, antlr4, sys; from importlib.metadata import version; "
                         "print(sys.version.split()[0], sympy.__version__, "
                         "version('antlr4-python3-runtime'))"],
                        capture_output=True, text=True).stdout.split()
    n_to = sum(r["orig"] == "timeout" for r in rows)
    meta = {"n": len(rows), "seed": args.seed, "generator": "repro.fidelity.corpus.build_corpus",
            "original": {"repository": "hkust-nlp/simpleRL-reason",
                         "folder": "examples/simplelr_math_eval", "commit": commit or args.commit,
                         "python": ov[0] if ov else None, "sympy": ov[1] if len(ov) > 1 else None,
                         "antlr4": ov[2] if len(ov) > 2 else None,
                         "setting": f"ProcessPool(max_workers=1), timeout={args.timeout:g} s"},
            "original_seconds": round(secs, 1), "original_pairs_per_s": round(len(rows) / secs, 1),
            "timeouts": n_to, "errors": sum(r["orig"] == "error" for r in rows),
            "load_average": os.getloadavg()[0], "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime())}
    _write_atomic(META, json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))
    return 0


def _bench_rows(report: dict, benches: list[str], cell, pairs: bool = False) -> list[str]:
    """Markdown rows, one per benchmark and one for all: ``cell(d)`` of each grader's agreement
    block ``d``; with ``pairs``, the number of compared pairs (the first grader's) after the name."""
    out = []
    for b in benches + ["all"]:
        ds = [a if b == "all" else a["per_benchmark"][b] for a in report.values()]
        n = f" {ds[0]['total']} |" if pairs else ""
        out.append(f"| {b} |{n} " + " | ".join(cell(d) for d in ds) + " |")
    return out


def cmd_compare(args) -> int:
    rows = load_corpus()
    report = {}
    for g in [x for x in args.graders.split(",") if x]:
        t = time.perf_counter()
        res = grade_package(rows, g, workers=args.workers, timeout=args.timeout)
        dt = time.perf_counter() - t
        a = agreement(rows, [r.correct for r in res])
        a["seconds"] = round(dt, 1)
        a["timeouts"] = sum(r.flagged == "timeout" for r in res)
        report[g] = a
        print(f"{g}: {a['agree']}/{a['total']} = {100 * a['rate']:.2f} % agree with the original "
              f"({dt:.0f} s, {a['timeouts']} timeouts)")
    benches = sorted({r["benchmark"] for r in rows})
    meta = json.loads(META.read_text()) if META.exists() else {}
    o = meta.get("original", {})
    lines = ["# Agreement of the package's graders with the original Qwen2.5-Math grader\n",
             f"Corpus: `{CORPUS.relative_to(REPO)}` ({len(rows)} seeded pairs, generated by "
             "`repro.fidelity.corpus`), with the verdicts of the original SimpleRL-Zoo evaluation "
             f"code ({o.get('repository', '?')} {o.get('commit', '?')[:7]}, sympy "
             f"{o.get('sympy', '?')}, antlr {o.get('antlr4', '?')}, run as `math_eval.py` runs "
             f"it: {o.get('setting', '?')}). Pairs where the original timed out are left out.\n",
             f"Command: `make grader-agreement` (= `python -m repro.fidelity.differential compare "
             f"--workers {args.workers} --timeout {args.timeout:g}`), run "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}; the package grades through the "
             "evaluation's own path (`extract_answer` with the gold, then `grade_many`, a budget "
             f"of {args.timeout:g} CPU seconds per pair).\n",
             "| benchmark | pairs | " + " | ".join(f"{g} agrees" for g in report) + " |",
             "|---|---|" + "---|" * len(report)]
    lines += _bench_rows(report, benches, lambda d: f"{100 * d['rate']:.2f} %", pairs=True)
    lines.append("")
    for g, a in report.items():
        lines.append(f"{g}: {a['agree']}/{a['total']} agree, {len(a['differ'])} differ, "
                     f"{a['timeouts']} pairs over the budget, {a['seconds']:.0f} s.")
    lines += ["", "Direction of the differences: pairs the grader accepts and the original rejects "
              "(+), pairs the original accepts and the grader rejects (−), and the net change of "
              "the accuracy measured on these pairs (points). The corpus is weighted toward "
              "non-integer answers and hard shapes, so this shows the direction and size of the "
              "grader effect, not Table 1's shift itself.\n",
              "| benchmark | " + " | ".join(f"{g} + / − / net (pp)" for g in report) + " |",
              "|---|" + "---|" * len(report)]
    lines += _bench_rows(report, benches,
                         lambda d: f"{d['extra']} / {d['missing']} / {d['net_pp']:+.2f}")
    if "qwen" in report and INTENDED.exists():
        intended = json.loads(INTENDED.read_text())
        cats = intended["categories"]
        lines += ["", "## Where `qwen` differs from the original, and why\n",
                  f"From `{INTENDED.relative_to(REPO)}` (checked exactly by "
                  "`tests/test_grader_corpus.py`). Categories:\n"]
        lines += [f"- **{k}**: {v}" for k, v in cats.items()]
        lines.append("")
        differ = set(report["qwen"]["differ"])
        for d in intended["differences"]:
            now = "differs in this run" if d["uid"] in differ else "agrees in this run"
            lines.append(f"- `{d['uid']}` ({d['category']}; {now}): {d['reason']}")
        unlisted = sorted(differ - {d["uid"] for d in intended["differences"]})
        if unlisted:
            lines.append(f"\n**Not listed (new differences)**: {', '.join(unlisted)}")
    out = {g: {k: v for k, v in a.items() if k != "differ"} | {"n_differ": len(a["differ"])}
           for g, a in report.items()}
    _write_atomic(ARTIFACT.with_suffix(".md"), "\n".join(lines) + "\n")
    _write_atomic(ARTIFACT.with_suffix(".json"), json.dumps(out, indent=1) + "\n")
    if args.show_differ:
        by_uid = {r["uid"]: r for r in rows}
        items = dict(zip((r["uid"] for r in rows), package_items(rows)))
        for g, a in report.items():
            for u in a["differ"]:
                r = by_uid[u]
                print(json.dumps({"grader": g, "uid": u, "b": r["benchmark"], "kind": r["kind"],
                                  "shape": r["shape"], "orig": r["orig"], "orig_pred": r["orig_pred"],
                                  "orig_gt": r["orig_gt"], "pkg_pred": items[u][0],
                                  "gold": r["gold"]}, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.fidelity.differential")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="build the corpus and record the original's verdicts")
    r.add_argument("--orig", required=True, help="ORIG/examples/simplelr_math_eval")
    r.add_argument("--orig-python", required=True, help="python of the original's venv")
    r.add_argument("--data", default=None, help="shared data folder (default: DATA_SRC)")
    r.add_argument("--n", type=int, default=DEFAULT_N)
    r.add_argument("--seed", type=int, default=DEFAULT_SEED)
    r.add_argument("--timeout", type=float, default=3.0)
    r.add_argument("--commit", default="", help="the original's commit, when DIR is no git checkout")
    c = sub.add_parser("compare", help="agreement of the package's graders with the original")
    c.add_argument("--graders", default="qwen,math-verify")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--timeout", type=float, default=3.0,
                   help="per-item budget in CPU seconds (grade_many's default clock)")
    c.add_argument("--show-differ", action="store_true")
    args = ap.parse_args(argv)
    return cmd_record(args) if args.cmd == "record" else cmd_compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
