"""Score a checkpoint on the paper's 8 benchmarks as Table 1 does.

    python -m repro.eval --model PATH --benchmarks all --out DIR      (make eval MODEL=.. OUT=..)

Protocol (pinned defaults, recorded in ``OUT/config.json``, overridable by flags):
* prompt ``qwen-boxed``, zero-shot; stop strings ``<|im_end|>``, ``<|endoftext|>``, ``</s>``;
* the benchmarks and their decoding are ``repro.paper.BENCHMARKS``: gsm8k, math500,
  minerva_math, gaokao2023en, olympiadbench, college_math: one greedy sample, pass@1;
* aime24, amc23 (``sampled``): 32 samples at temperature 1.0, top-p 0.95 (SimpleRL-Zoo's settings),
  Average@32, plus unbiased pass@k;
* max_tokens 16000 (SimpleRL-Zoo's evaluation script default; the paper does not state it);
* graders ``qwen`` (primary, the paper's) and ``math-verify`` (second column), each answer graded
  in a worker process with a per-item budget of CPU time (a timeout counts as wrong and is
  flagged).

Outputs in ``OUT``: ``generations/<benchmark>.jsonl`` (the resumable cache), ``records.jsonl``
(one line per item, sample and grader), ``scores.json``, ``scores.csv`` and ``comparison.md``
(the scores beside the paper's Table 1, ``repro.paper.comparison_markdown``, with differences).
Re-running the same command resumes: only missing generations are produced, and the model is
not even loaded when none are missing.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from repro import paper
from repro.eval.data import REPO, default_src, load_benchmark, load_normalised
from repro.eval.prompts import build_prompt, stop_strings
from repro.eval.scoring import benchmark_scores, unweighted_average

DEFAULTS = dict(template="qwen-boxed", max_tokens=16000, avg_n=paper.AVG_N, temperature=1.0, top_p=0.95,
                graders=("qwen", "math-verify"), grade_timeout=5.0, grade_workers=2, seed=0)


def protocol(benchmark: str, *, avg_n: int, temperature: float, top_p: float) -> dict:
    """Sampling settings of one benchmark (``repro.paper``: sampled, or one greedy sample)."""
    if paper.benchmark(benchmark).sampled:
        return dict(n=avg_n, temperature=temperature, top_p=top_p)
    return dict(n=1, temperature=0.0, top_p=1.0)


def parse_benchmarks(spec: str) -> list[str]:
    if spec == "all":
        return list(paper.BENCHMARK_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in paper.BY_NAME]
    if bad:
        raise SystemExit(f"unknown benchmark(s) {bad}; known: {', '.join(paper.BENCHMARK_NAMES)}")
    return names


def load_rows(benchmarks, data_dir: Path | None, data_src: Path | None,
              college_math_subset: int | None, limit: int | None) -> dict[str, list[dict]]:
    out = {}
    for b in benchmarks:
        cached = data_dir / f"{b}.jsonl" if data_dir else None
        if cached is not None and cached.exists() and not college_math_subset:
            rows = load_normalised(b, data_dir)
        else:
            rows = load_benchmark(b, data_src, college_math_subset_size=college_math_subset)
        out[b] = rows[:limit] if limit else rows
    return out


# ---------------------------------------------------------------------------------------------
# the pipeline (programmatic; the CLI below fills in its arguments)
# ---------------------------------------------------------------------------------------------
def evaluate(rows: dict[str, list[dict]], out: str | Path, *,
             backend_factory: Callable[[], object], model_id: str,
             settings: dict | None = None, progress: bool = True,
             paper_size: str | None = None) -> dict:
    """Generate (resuming from ``out/generations``), grade, score and write all outputs."""
    from repro.eval.backends import CachedGenerator
    from repro.grading.pool import grade_many
    from repro.grading.qwen import extract_answer
    from repro.runs import git_commit, library_versions, write_json_atomic, write_text_atomic

    cfg = {**DEFAULTS, **(settings or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop_strings(extra=bool(cfg.get("qwen_extra_stops")))
    graders = list(cfg["graders"])
    per_bench = {b: protocol(b, avg_n=cfg["avg_n"], temperature=cfg["temperature"],
                             top_p=cfg["top_p"]) for b in rows}
    config = {
        "model": model_id, "benchmarks": {b: {**per_bench[b], "n_items": len(r)}
                                          for b, r in rows.items()},
        "template": cfg["template"], "stop": stop, "max_tokens": cfg["max_tokens"],
        "graders": graders, "primary_grader": graders[0], "grade_timeout_s": cfg["grade_timeout"],
        "grade_timeout_clock": "cpu",
        "seed": cfg["seed"], "backend": cfg.get("backend"),
        "college_math_subset": cfg.get("college_math_subset"), "limit": cfg.get("limit"),
        "versions": library_versions(), "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "config.json", config)

    # 1. generation, resumable
    caches, prompts = {}, {}
    for b, rs in rows.items():
        settings_b = {"model": model_id, "template": cfg["template"], "stop": stop,
                      "stop_token_ids": "end markers (repro.stop)",  # generations before the rule are refused
                      "max_tokens": cfg["max_tokens"], "seed": cfg["seed"], **per_bench[b]}
        caches[b] = CachedGenerator(out / "generations" / f"{b}.jsonl", settings_b)
        prompts[b] = [build_prompt(r["question"], cfg["template"]) for r in rs]
    missing = sum(len(caches[b].missing([str(r["id"]) for r in rs])) for b, rs in rows.items())
    outputs: dict[str, dict[str, list[str]]] = {}
    backend = None
    bar = None
    if missing:
        backend = backend_factory()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=missing, desc="generating", unit="prompt")
    t0 = time.time()
    for b, rs in rows.items():
        keys = [str(r["id"]) for r in rs]
        outputs[b] = caches[b].run(  # generates only what the cache lacks
            backend, keys, prompts[b], chunk=int(cfg.get("chunk", 64)),
            on_chunk=(bar.update if bar is not None else None),
            max_tokens=cfg["max_tokens"], stop=stop, **per_bench[b])
    if bar is not None:
        bar.close()
    gen_seconds = time.time() - t0
    del backend  # free the model (GPU memory) before the grading workers start

    # 2. extraction and grading
    items, where = [], []
    for b, rs in rows.items():
        for r in rs:
            for j, text in enumerate(outputs[b][str(r["id"])]):
                items.append((extract_answer(text, b, r["gold"]), r["gold"], b))
                where.append((b, r, j, text))
    graded = {}
    for g in graders:
        graded[g] = grade_many(g, items, workers=cfg["grade_workers"],
                               timeout=cfg["grade_timeout"], progress=progress,
                               desc=f"grading ({g})")

    # 3. records
    buf = io.StringIO()
    for k, ((b, r, j, text), (pred, gold, _)) in enumerate(zip(where, items)):
        for g in graders:
            res = graded[g][k]
            rec = {"benchmark": b, "id": r["id"], "sample": j, "output": text, "extracted": pred,
                   "gold": gold, "grader": g, "correct": res.correct, "flagged": res.flagged,
                   "time_s": round(res.seconds, 6)}
            if r.get("gold_missing"):
                rec["gold_missing"] = True
            buf.write(json.dumps(rec, ensure_ascii=False) + "\n")
    write_text_atomic(out / "records.jsonl", buf.getvalue())

    # 4. scores
    scores = {"model": model_id, "primary_grader": graders[0], "graders": {},
              "generation_seconds": round(gen_seconds, 1), "config": "config.json"}
    for g in graders:
        per = {}
        k = 0
        for b, rs in rows.items():
            matrix, flagged = [], 0
            for r in rs:
                n = len(outputs[b][str(r["id"])])
                row = [graded[g][k + j].correct for j in range(n)]
                flagged += sum(graded[g][k + j].flagged is not None for j in range(n))
                matrix.append(row)
                k += n
            s = benchmark_scores(matrix)
            s["n_flagged"] = flagged
            s["n_gold_missing"] = sum(bool(r.get("gold_missing")) for r in rs)
            per[b] = s
        avg = unweighted_average({b: s["accuracy"] for b, s in per.items()})
        scores["graders"][g] = {"benchmarks": per, "average": avg,
                                "average_over": list(per)}
    write_json_atomic(out / "scores.json", scores)
    write_text_atomic(out / "scores.csv", scores_csv(scores))
    # the paper's Table 1 (repro.paper.load_table1: a missing file raises Table1Missing, after
    # scores.json is written; a rerun reuses the generations)
    write_text_atomic(out / "comparison.md",
                      paper.comparison_markdown(scores, paper_size or paper.size_of(str(model_id))))
    return scores


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.eval",
                                 description="Score a checkpoint on the paper's 8 benchmarks.")
    ap.add_argument("--model", required=True, help="model folder (or HF id already on disk)")
    ap.add_argument("--benchmarks", default="all", help="'all' or a comma list")
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    ap.add_argument("--graders", default=",".join(DEFAULTS["graders"]),
                    help="comma list; the first is primary (default: qwen,math-verify)")
    ap.add_argument("--data", default=str(REPO / "data" / "cache"),
                    help="normalised data from `make data` (used when present)")
    ap.add_argument("--data-src", default=None, help="raw data folder (default: $DATA_SRC or "
                    "../shared/data)")
    ap.add_argument("--college-math-subset", type=int, default=None, metavar="N")
    ap.add_argument("--max-tokens", type=int, default=DEFAULTS["max_tokens"])
    ap.add_argument("--avg-n", type=int, default=DEFAULTS["avg_n"],
                    help="samples per problem for aime24 and amc23")
    ap.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                    help="for the sampled sets (the others are greedy)")
    ap.add_argument("--top-p", type=float, default=DEFAULTS["top_p"])
    ap.add_argument("--qwen-extra-stops", action="store_true",
                    help="also stop at 'assistant', 'user', '_end', '_start' as the original did")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--batch-size", type=int, default=8, help="hf backend batch")
    ap.add_argument("--device", default="cpu", help="hf backend device")
    ap.add_argument("--chunk", type=int, default=None,
                    help="prompts per backend call between cache writes (default 64 hf, 1024 vllm)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--grade-timeout", type=float, default=DEFAULTS["grade_timeout"],
                    help="per-item budget of the graders' workers, in CPU seconds")
    ap.add_argument("--grade-workers", type=int, default=DEFAULTS["grade_workers"])
    ap.add_argument("--limit", type=int, default=None, help="first N items per benchmark (smoke)")
    ap.add_argument("--paper-size", default=None, choices=["1.5B", "3B", "7B"],
                    help="which Table 1 block to compare with (default: guessed from --model)")
    ap.add_argument("--overwrite", action="store_true", help="discard cached generations")
    args = ap.parse_args(argv)

    from repro.eval.backends import make_backend, vllm_available

    benches = parse_benchmarks(args.benchmarks)
    data_src = Path(args.data_src) if args.data_src else default_src()
    rows = load_rows(benches, Path(args.data) if args.data else None, data_src,
                     args.college_math_subset, args.limit)
    out = Path(args.out)
    if args.overwrite and (out / "generations").exists():
        import shutil

        shutil.rmtree(out / "generations")
    backend = args.backend if args.backend != "auto" else ("vllm" if vllm_available() else "hf")
    chunk = args.chunk or (1024 if backend == "vllm" else 64)
    settings = dict(max_tokens=args.max_tokens, avg_n=args.avg_n, temperature=args.temperature,
                    top_p=args.top_p, graders=[g for g in args.graders.split(",") if g],
                    grade_timeout=args.grade_timeout, grade_workers=args.grade_workers,
                    seed=args.seed, backend=backend, chunk=chunk,
                    qwen_extra_stops=args.qwen_extra_stops,
                    college_math_subset=args.college_math_subset, limit=args.limit)

    def factory():
        return make_backend(args.model, backend, seed=args.seed, batch_size=args.batch_size,
                            device=args.device, tensor_parallel_size=args.tensor_parallel_size,
                            gpu_memory_utilization=args.gpu_memory_utilization,
                            max_model_len=args.max_model_len, progress=False)

    scores = evaluate(rows, out, backend_factory=factory, model_id=str(args.model),
                      settings=settings, paper_size=args.paper_size)
    print((out / "comparison.md").read_text())
    for g, res in scores["graders"].items():
        print(f"{g}: average {res['average']:.1f} over {len(res['benchmarks'])} benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
