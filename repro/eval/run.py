"""Score a checkpoint on the paper's 8 benchmarks as Table 1 does.

    python -m repro.eval --model PATH --benchmarks all --out DIR      (make eval MODEL=.. OUT=..)
    python -m repro.eval --model RUN/checkpoints/step_200 --benchmarks sum_heldout --out DIR

The second form scores a checkpoint of the CPU task (``repro/tasks/arith.py``) on the reference
trainer's held-out problems (``repro.eval.data.CPU_SETS``: ``sum_heldout``, ``budget_heldout``;
seed, count and token budget from ``repro/configs/cpu``), greedy, with the same generation,
grading and scoring code as the paper's benchmarks (template ``arith``: the bare prompt).

Protocol (pinned defaults, recorded in ``OUT/config.json``, overridable by flags):
* prompt ``qwen-boxed``, zero-shot; stop strings ``<|im_end|>``, ``<|endoftext|>``, ``</s>``;
* the benchmarks and their decoding are ``repro.paper.BENCHMARKS``: gsm8k, math500,
  minerva_math, gaokao2023en, olympiadbench, college_math: one greedy sample, pass@1;
* aime24, amc23 (``sampled``): 32 samples at temperature 1.0, top-p 0.95 (SimpleRL-Zoo's settings),
  Average@32, plus unbiased pass@k;
* max_tokens 16000 (SimpleRL-Zoo's evaluation script default; the paper does not state it);
  refused before anything runs when the longest prompt plus max_tokens exceeds the model's
  context (its config's ``max_position_embeddings``, or ``--max-model-len``);
* graders ``qwen`` (primary, the paper's) and ``math-verify`` (second column), each answer graded
  in a worker process with a per-item budget of CPU time (a timeout counts as wrong and is
  flagged).

Outputs in ``OUT``: ``generations/<benchmark>.jsonl`` (the resumable cache), ``records.jsonl``
(one line per item, sample and grader), ``scores.json``, ``scores.csv`` and ``comparison.md``
(the scores beside the paper's Table 1, ``repro.paper.comparison_markdown``, with differences;
for a slice, ``--limit N``, our scores only, marked as a slice: Table 1 scores the full sets),
``scores.md`` (every set scored, per grader). Command-line errors are one line and exit code 2.
Re-running the same command resumes: only missing generations are produced, and the model is
not even loaded when none are missing.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from repro import paper
from repro.eval.data import (CPU_SETS, REPO, DataError, cpu_set_settings, default_src, load_benchmark,
                             load_cpu_set, load_normalised)
from repro.eval.model_check import UsageError, check_model, model_context
from repro.eval.prompts import build_prompt, stop_strings
from repro.eval.scoring import benchmark_scores, scores_csv, scores_markdown, unweighted_average

DEFAULTS = dict(template="qwen-boxed", max_tokens=16000, avg_n=paper.AVG_N, temperature=1.0, top_p=0.95,
                graders=("qwen", "math-verify"), grade_timeout=5.0, grade_workers=2, seed=0)


def protocol(benchmark: str, *, avg_n: int, temperature: float, top_p: float) -> dict:
    """Sampling settings of one benchmark (``repro.paper``: sampled, or one greedy sample; the
    CPU task's held-out sets: greedy, as the reference trainer evaluates)."""
    if benchmark not in CPU_SETS and paper.benchmark(benchmark).sampled:
        return dict(n=avg_n, temperature=temperature, top_p=top_p)
    return dict(n=1, temperature=0.0, top_p=1.0)


def template_of(benchmark: str, template: str) -> str:
    return "arith" if benchmark in CPU_SETS else template


def max_tokens_of(benchmark: str, max_tokens: int) -> int:
    """The paper's sets: ``max_tokens``; the CPU task's: its token budget (the task's definition)."""
    return cpu_set_settings(benchmark)["max_tokens"] if benchmark in CPU_SETS else int(max_tokens)


def parse_benchmarks(spec: str) -> list[str]:
    if spec == "all":
        return list(paper.BENCHMARK_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in paper.BY_NAME and n not in CPU_SETS]
    if bad or not names:
        raise UsageError(f"--benchmarks: unknown {bad or spec!r}; known: all, "
                         f"{', '.join(paper.BENCHMARK_NAMES)}, and the CPU task's {', '.join(CPU_SETS)}")
    if any(n in CPU_SETS for n in names) and any(n not in CPU_SETS for n in names):
        raise UsageError("--benchmarks: the CPU task's sets and the paper's benchmarks need different "
                         "models: evaluate them in separate runs")
    return names


def load_rows(benchmarks, data_dir: Path | None, data_src: Path | None,
              college_math_subset: int | None, limit: int | None,
              heldout_problems: int | None = None) -> dict[str, list[dict]]:
    out = {}
    for b in benchmarks:
        if b in CPU_SETS:
            rows = load_cpu_set(b, heldout_problems)
            out[b] = rows[:limit] if limit else rows
            continue
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
        "template": {b: template_of(b, cfg["template"]) for b in rows}, "stop": stop,
        "max_tokens": {b: max_tokens_of(b, cfg["max_tokens"]) for b in rows},
        "graders": graders, "primary_grader": graders[0], "grade_timeout_s": cfg["grade_timeout"],
        "grade_timeout_clock": "cpu",
        "seed": cfg["seed"], "backend": cfg.get("backend"),
        "college_math_subset": cfg.get("college_math_subset"), "limit": cfg.get("limit"),
        "heldout_problems": cfg.get("heldout_problems"),
        "versions": library_versions(), "git_commit": git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "config.json", config)

    # 1. generation, resumable
    caches, prompts = {}, {}
    for b, rs in rows.items():
        settings_b = {"model": model_id, "template": template_of(b, cfg["template"]), "stop": stop,
                      "stop_token_ids": "end markers (repro.stop)",  # generations before the rule are refused
                      "max_tokens": max_tokens_of(b, cfg["max_tokens"]), "seed": cfg["seed"],
                      **per_bench[b]}
        caches[b] = CachedGenerator(out / "generations" / f"{b}.jsonl", settings_b)
        prompts[b] = [build_prompt(r["question"], settings_b["template"]) for r in rs]
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
            max_tokens=max_tokens_of(b, cfg["max_tokens"]), stop=stop, **per_bench[b])
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
    if cfg.get("limit"):
        scores["slice"] = {"limit": int(cfg["limit"]), "n_items": {b: len(r) for b, r in rows.items()}}
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
    write_text_atomic(out / "scores.md", scores_markdown(scores))
    if any(b in paper.BY_NAME for b in rows):
        if scores.get("slice"):  # a slice is not set against Table 1's full-benchmark numbers
            text = scores_markdown(scores, title=f"# {model_id}: a slice, not compared with the paper's Table 1")
        else:
            # the paper's Table 1 (repro.paper.load_table1: a missing file raises Table1Missing,
            # after scores.json is written; a rerun reuses the generations)
            text = paper.comparison_markdown(scores, paper_size or paper.size_of(str(model_id)))
        write_text_atomic(out / "comparison.md", text)
    return scores


# ---------------------------------------------------------------------------------------------
# checks before anything runs: the model, its context, the options
# ---------------------------------------------------------------------------------------------
def check_context(spec: str, rows: dict[str, list[dict]], template: str, max_tokens: int,
                  max_model_len: int | None) -> None:
    """Refuse when a set's longest prompt plus its token budget exceeds the model's context: the
    generation would run past the end of the position table (or hang for minutes on CPU).
    A budget that alone fills the context is refused at once; otherwise the prompts are counted
    with the model's tokenizer, as the backends encode them."""
    ctx = model_context(spec, max_model_len)
    if ctx is None:
        return
    where = f"{spec}'s context of {ctx} tokens" + (" (--max-model-len)" if max_model_len else
                                                    " (max_position_embeddings in its config.json)")

    def hint(b):
        return (f"; a CPU-task checkpoint is scored with --benchmarks {','.join(CPU_SETS)}"
                if b not in CPU_SETS and ctx < 1024 else "")

    for b in rows:
        mt = max_tokens_of(b, max_tokens)
        if mt >= ctx:
            raise UsageError(f"--max-tokens {mt} does not fit {where} with any {b} prompt: "
                             f"pass --max-tokens below {ctx} minus the prompt's length{hint(b)}")
    if not any(rows.values()):  # the quick check only (before the data are read)
        return
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001 - any failure to read it is the user's to fix
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"--model {spec}: cannot read its tokenizer ({first})") from None
    for b, rs in rows.items():
        if not rs:
            continue
        prompts = [build_prompt(r["question"], template_of(b, template)) for r in rs]
        longest = max(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])
        mt = max_tokens_of(b, max_tokens)
        if longest >= ctx:
            raise UsageError(f"the longest {b} prompt ({longest} tokens) does not fit {where}{hint(b)}")
        if longest + mt > ctx:
            raise UsageError(f"--max-tokens {mt} + the longest {b} prompt ({longest} tokens) exceeds "
                             f"{where}: pass --max-tokens {ctx - longest} or less{hint(b)}")


def check_options(args) -> None:
    bad = [(args.max_tokens is not None and args.max_tokens < 1, "--max-tokens must be >= 1"),
           (args.avg_n < 1, "--avg-n must be >= 1"),
           (not args.temperature >= 0, "--temperature must be >= 0"),
           (not 0 < args.top_p <= 1, "--top-p must be in (0, 1]"),
           (args.limit is not None and args.limit < 1, "--limit must be >= 1"),
           (args.heldout_problems is not None and args.heldout_problems < 1, "--heldout-problems must be >= 1"),
           (args.batch_size is not None and args.batch_size < 1, "--batch-size must be >= 1"),
           (args.chunk is not None and args.chunk < 1, "--chunk must be >= 1"),
           (not args.grade_timeout > 0, "--grade-timeout must be > 0 (CPU seconds per item)"),
           (args.grade_workers < 0, "--grade-workers must be >= 0"),
           (args.tensor_parallel_size < 1, "--tensor-parallel-size must be >= 1"),
           (not 0 < args.gpu_memory_utilization <= 1, "--gpu-memory-utilization must be in (0, 1]"),
           (args.max_model_len is not None and args.max_model_len < 1, "--max-model-len must be >= 1")]
    for is_bad, msg in bad:
        if is_bad:
            raise UsageError(msg)
    graders = [g for g in args.graders.split(",") if g]
    if not graders:
        raise UsageError("--graders: give at least one grader (e.g. qwen,math-verify)")
    from repro.grading import get_grader

    for g in graders:
        try:
            get_grader("qwen" if g.startswith("qwen") else g)
        except ValueError as e:
            raise UsageError(f"--graders: {e}") from None


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m repro.eval",
                                 description="Score a checkpoint on the paper's 8 benchmarks, or a CPU-task "
                                             "checkpoint on the task's held-out set.")
    ap.add_argument("--model", required=True, help="checkpoint folder (with config.json) or a Hugging Face id")
    ap.add_argument("--benchmarks", default="all",
                    help="'all' (the paper's 8) or a comma list; the CPU task's sets: "
                         + ", ".join(CPU_SETS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    ap.add_argument("--graders", default=",".join(DEFAULTS["graders"]),
                    help="comma list; the first is primary (default: qwen,math-verify)")
    ap.add_argument("--data", default=str(REPO / "data" / "cache"),
                    help="normalised data from `make data` (used when present)")
    ap.add_argument("--data-src", default=None, help="raw data folder (default: $DATA_SRC or "
                    "../shared/data)")
    ap.add_argument("--college-math-subset", type=int, default=None, metavar="N")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help=f"new tokens per answer on the paper's sets (default {DEFAULTS['max_tokens']}); "
                         "the CPU task's sets use their task's budget")
    ap.add_argument("--avg-n", type=int, default=DEFAULTS["avg_n"],
                    help="samples per problem for aime24 and amc23")
    ap.add_argument("--temperature", type=float, default=DEFAULTS["temperature"],
                    help="for the sampled sets (the others are greedy)")
    ap.add_argument("--top-p", type=float, default=DEFAULTS["top_p"])
    ap.add_argument("--qwen-extra-stops", action="store_true",
                    help="also stop at 'assistant', 'user', '_end', '_start' as the original did")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--batch-size", type=int, default=None,
                    help="hf backend batch (default 8; 250 on the CPU task's sets, as the trainer)")
    ap.add_argument("--device", default="cpu", help="hf backend device")
    ap.add_argument("--chunk", type=int, default=None,
                    help="prompts per backend call between cache writes (default 64 hf, 1024 vllm)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--grade-timeout", type=float, default=DEFAULTS["grade_timeout"],
                    help="per-item budget of the graders' workers, in CPU seconds")
    ap.add_argument("--grade-workers", type=int, default=DEFAULTS["grade_workers"])
    ap.add_argument("--limit", type=int, default=None,
                    help="first N items per set (a smoke test; marked as a slice, not compared with Table 1)")
    ap.add_argument("--heldout-problems", type=int, default=None, metavar="N",
                    help="the CPU task's sets: N held-out problems (default: eval_problems of "
                         "repro/configs/cpu, 500; the full demo evaluates 1000)")
    ap.add_argument("--paper-size", default=None, choices=["1.5B", "3B", "7B"],
                    help="which Table 1 block to compare with (default: guessed from --model)")
    ap.add_argument("--overwrite", action="store_true", help="discard cached generations")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except UsageError as e:
        print(f"python -m repro.eval: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    from repro.eval.backends import SettingsMismatch, make_backend, vllm_available

    check_options(args)
    benches = parse_benchmarks(args.benchmarks)
    cpu = benches[0] in CPU_SETS
    if cpu and args.max_tokens is not None and any(args.max_tokens != max_tokens_of(b, 0) for b in benches):
        raise UsageError(f"--max-tokens: the CPU task's sets use their task's budget ("
                         + ", ".join(f"{b} {max_tokens_of(b, 0)}" for b in benches) + " tokens); leave it out")
    if not cpu and args.heldout_problems is not None:
        raise UsageError("--heldout-problems applies to the CPU task's sets only (use --limit for a slice)")
    model = check_model(args.model)
    max_tokens = args.max_tokens if args.max_tokens is not None else DEFAULTS["max_tokens"]
    check_context(model, {b: [] for b in benches}, DEFAULTS["template"], max_tokens, args.max_model_len)
    data_src = Path(args.data_src) if args.data_src else default_src()
    try:
        rows = load_rows(benches, Path(args.data) if args.data else None, data_src,
                         args.college_math_subset, args.limit, args.heldout_problems)
    except DataError as e:
        raise UsageError(f"{e}: run `make data` (DATA_SRC=<folder of the raw files>) or pass "
                         f"--data-src DIR") from None
    check_context(model, rows, DEFAULTS["template"], max_tokens, args.max_model_len)
    out = Path(args.out)
    if args.overwrite and (out / "generations").exists():
        import shutil

        shutil.rmtree(out / "generations")
    backend = args.backend if args.backend != "auto" else ("vllm" if vllm_available() else "hf")
    chunk = args.chunk or (1024 if backend == "vllm" else 64)
    settings = dict(max_tokens=max_tokens, avg_n=args.avg_n, temperature=args.temperature,
                    top_p=args.top_p, graders=[g for g in args.graders.split(",") if g],
                    grade_timeout=args.grade_timeout, grade_workers=args.grade_workers,
                    seed=args.seed, backend=backend, chunk=chunk,
                    qwen_extra_stops=args.qwen_extra_stops,
                    college_math_subset=args.college_math_subset, limit=args.limit,
                    heldout_problems=args.heldout_problems)

    batch_size = args.batch_size or (250 if cpu else 8)

    def factory():
        return make_backend(model, backend, seed=args.seed, batch_size=batch_size,
                            device=args.device, tensor_parallel_size=args.tensor_parallel_size,
                            gpu_memory_utilization=args.gpu_memory_utilization,
                            max_model_len=args.max_model_len, progress=False)

    try:
        scores = evaluate(rows, out, backend_factory=factory, model_id=str(model),
                          settings=settings, paper_size=args.paper_size)
    except (SettingsMismatch, paper.Table1Missing) as e:
        raise UsageError(str(e)) from None
    report = out / "comparison.md" if (out / "comparison.md").exists() and not cpu else out / "scores.md"
    print(report.read_text())
    for g, res in scores["graders"].items():
        print(f"{g}: average {res['average']:.1f} over {len(res['benchmarks'])} set(s); outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
