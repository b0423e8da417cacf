"""Run the ORIGINAL Qwen2.5-Math / SimpleRL-Zoo grader on corpus rows; print verdicts as JSONL.

This file is executed by the original's own interpreter (a separate virtual environment with
sympy 1.12 and antlr4 4.11.1), never imported by the package: it uses only the standard library
plus the modules of the original checkout, which it puts on ``sys.path``. No code of the
original is copied here; this script only calls its functions, in the order in which its
``math_eval.py`` / ``evaluate.py`` call them:

* gold: ``parse_ground_truth(raw_row, data_name)`` on the raw benchmark row, then once more on
  the resulting sample (as ``evaluate`` does);
* prediction: ``run_execute`` (``extract_answer`` then ``strip_string``), then the
  multiple-choice fix of ``math_eval.main`` (``choice_answer_clean`` / ``is_multi_choice``);
* verdict: ``math_equal_process`` mapped in a pebble ``ProcessPool(max_workers=1)`` with
  ``timeout=3`` (a timeout is recorded as ``"timeout"``, an exception as ``"error"``).

    ORIG_PY orig_driver.py --orig CHECKOUT/examples/simplelr_math_eval --data SHARED_DATA \
        --in rows.jsonl --out verdicts.jsonl [--timeout 3]

Input rows: ``{"uid", "benchmark", "id", "response"}``. Output rows: ``{"uid", "verdict"
(true/false/"timeout"/"error"), "pred", "gt"}`` plus a final ``{"_timing": seconds}`` row.
"""
import argparse
import json
import os
import sys
import time


def _function_from(path, name):
    """One top-level function of an original module that cannot be imported here (math_eval.py
    imports vllm and torch), compiled from its own source file."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    ns = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), ns)
    return ns[name]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--orig", required=True, help="folder holding the original's parser.py")
    ap.add_argument("--data", required=True, help="folder with <benchmark>/test.jsonl")
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=3)
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.orig))
    os.chdir(args.orig)
    from concurrent.futures import TimeoutError

    from pebble import ProcessPool

    import grader as og
    import parser as op  # the original's parser.py (the stdlib module is gone since 3.10)

    is_multi_choice = _function_from("math_eval.py", "is_multi_choice")

    rows = [json.loads(x) for x in open(args.inp, encoding="utf-8") if x.strip()]
    raw = {}
    for b in sorted({r["benchmark"] for r in rows}):
        with open(os.path.join(args.data, b, "test.jsonl"), encoding="utf-8") as fh:
            raw[b] = [json.loads(x) for x in fh if x.strip()]

    gts, preds = [], []
    for r in rows:
        b = r["benchmark"]
        ex = dict(raw[b][r["id"]])
        ex.setdefault("idx", r["id"])
        gt_cot, gt = op.parse_ground_truth(ex, b)          # math_eval.prepare / main
        _, gt = op.parse_ground_truth({"gt_cot": gt_cot, "gt": gt}, b)  # evaluate()
        code = r["response"].strip()
        pred, _ = op.run_execute(None, code, "qwen-boxed", b)
        if gt in ["A", "B", "C", "D", "E"] and pred not in ["A", "B", "C", "D", "E"]:
            pred = op.choice_answer_clean(code)
        elif is_multi_choice(gt) and not is_multi_choice(pred):
            pred = "".join([c for c in pred if c in ["A", "B", "C", "D", "E"]])
        gts.append(gt)
        preds.append(pred)

    params = [(i, p, g) for i, (p, g) in enumerate(zip(preds, gts))]
    verdicts = []
    t0 = time.perf_counter()
    with ProcessPool(max_workers=1) as pool:
        it = pool.map(og.math_equal_process, params, timeout=args.timeout).result()
        while True:
            try:
                verdicts.append(bool(next(it)))
            except StopIteration:
                break
            except TimeoutError:
                verdicts.append("timeout")
            except Exception:
                verdicts.append("error")
    dt = time.perf_counter() - t0
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for r, v, p, g in zip(rows, verdicts, preds, gts):
            fh.write(json.dumps({"uid": r["uid"], "verdict": v, "pred": p, "gt": g},
                                ensure_ascii=False) + "\n")
        fh.write(json.dumps({"_timing": dt, "n": len(params)}) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
