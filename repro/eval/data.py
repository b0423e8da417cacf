"""The evaluation data: check the raw files against ``data/manifest.json`` and normalise them.

``python -m repro.eval.data --src DIR --out DIR`` (``make data``) takes every file of the
manifest from ``--src`` (default: ``$DATA_SRC``, else ``../shared/data`` beside the repository),
or, when a file is not there and ``--offline`` is not given, downloads it from its public source
into ``OUT/raw/``. Every file is checked for its sha256 and row count; then one normalised JSONL
per benchmark is written to ``OUT/<benchmark>.jsonl`` (plus ``OUT/train.jsonl``), each atomically,
so a failure never leaves a half-written file. Failures are listed by file and reason.

A normalised row: ``id`` (position in the source file), ``question`` (as the Qwen2.5-Math /
SimpleRL-Zoo evaluation reads it, with its " (Yes or No)" / " (True or False)" suffix for
yes/no golds), ``gold`` (the gold answer string as that evaluation takes it, before its
normalisation), ``source_id`` where the file has one, and per-benchmark fields (e.g.
OlympiadBench's ``answers`` list for multi-answer problems, CollegeMath's per-row ``license``).

Gold answers, source ids and kept fields: per benchmark in ``repro.paper.BENCHMARKS`` (gsm8k,
the text after ``####``; math500 and minerva_math, the answer the Qwen extraction finds in the
``solution``, its last ``\\boxed{}``; olympiadbench, ``final_answer[0]`` without ``$``;
gaokao2023en and college_math, ``answer`` without ``$``; aime24 and amc23, ``answer`` as a
string, amc23 storing floats: ``27.0``).

College Math: the paper says 500 problems drawn with ``random.seed(42)``, but no such subset is
published. The default is all 2818 rows; ``--college-math-subset 500`` keeps the rows at
``sorted(random.Random(42).sample(range(2818), 500))``, which is this package's reading of the
paper, not a published index list.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import urllib.request
from pathlib import Path

from repro import paper
from repro.grading.gold import read_gold

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "data" / "manifest.json"
TRAIN = "simplelr_qwen_level3to5_train"
# The benchmark names are repro.paper's; this alias is kept only for repro/speed/grading.py
# (edited on another branch), to be dropped when it imports repro.paper.BENCHMARK_NAMES.
BENCHMARKS = paper.BENCHMARK_NAMES


class DataError(RuntimeError):
    """A data file is missing, has the wrong sha256 or the wrong number of rows."""


def default_src() -> Path:
    """``$DATA_SRC`` if set, else ``../shared/data`` relative to the repository."""
    env = os.environ.get("DATA_SRC")
    return Path(env) if env else (REPO.parent / "shared" / "data")


def manifest() -> dict[str, dict]:
    if not MANIFEST.exists():
        raise DataError(f"manifest not found: {MANIFEST}")
    entries = json.loads(MANIFEST.read_text())["entries"]
    return {e["name"]: e for e in entries}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_rows(path: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
        return rows
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataError(f"unknown format {fmt!r}")


def check_file(entry: dict, path: Path) -> list[dict]:
    """The rows of ``path``, after checking it against its manifest entry; raises DataError."""
    if not path.is_file():
        raise DataError(f"{entry['name']}: missing file {path}")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise DataError(f"{entry['name']}: bad sha256 for {path}: {got}, expected {entry['sha256']}")
    rows = read_rows(path, entry["format"])
    if len(rows) != entry["rows"]:
        raise DataError(f"{entry['name']}: wrong row count in {path}: {len(rows)}, "
                        f"expected {entry['rows']}")
    return rows


def download(entry: dict, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``entry['url']`` to ``dest`` atomically (a temp file, checked, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry["url"], timeout=timeout) as r:
            for block in iter(lambda: r.read(1 << 20), b""):
                out.write(block)
        check_file(entry, Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def locate(entry: dict, src: Path, out: Path | None = None, offline: bool = True) -> Path:
    """Where the file of ``entry`` is: in ``src``, else in ``out/raw``, else downloaded there."""
    for base in [src] + ([out / "raw"] if out is not None else []):
        p = base / entry["file"]
        if p.is_file():
            return p
    if offline or out is None:
        raise DataError(f"{entry['name']}: missing file {src / entry['file']}"
                        + ("" if offline else " and no download folder given"))
    try:
        return download(entry, out / "raw" / entry["file"])
    except DataError:
        raise
    except Exception as e:  # network errors
        raise DataError(f"{entry['name']}: download from {entry['url']} failed: {e}") from None


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------
def _question(row: dict) -> str:
    for key in ("question", "problem", "Question", "input"):
        if key in row and row[key] is not None:
            return str(row[key])
    raise DataError(f"row without a question field: keys {sorted(row)}")


def gold_answer(name: str, row: dict) -> str:
    """The gold answer of one raw row, as the Qwen2.5-Math / SimpleRL-Zoo evaluation takes it
    (the benchmark's rule in ``repro.paper``; the training set's ``answer`` field)."""
    if name == TRAIN:
        return read_gold("answer_field", row)
    if name not in paper.BY_NAME:
        raise DataError(f"unknown benchmark {name!r}")
    return read_gold(paper.BY_NAME[name].gold, row)


_TRAIN_FIELDS = ("level", "subject")


def normalise_row(name: str, i: int, row: dict) -> dict:
    gold = gold_answer(name, row)
    question = _question(row)
    low = gold.lower()
    if low in ("true", "false"):
        question += " (True or False)"
    elif low in ("yes", "no"):
        question += " (Yes or No)"
    out = {"id": i, "benchmark": name, "question": question.strip(), "gold": gold}
    if not gold:
        # Two gaokao2023en rows have an empty answer. They are kept (the set has 385 rows) and
        # flagged; the qwen grader treats them as the original does (see repro.grading.qwen).
        out["gold_missing"] = True
    b = paper.BY_NAME.get(name)
    if b is not None and b.source_id in row:
        out["source_id"] = row[b.source_id]
    for k in (b.fields if b is not None else _TRAIN_FIELDS):
        if k in row:
            out[k] = row[k]
    if b is not None and b.extra is not None:
        out.update(b.extra(row))
    return out


def college_math_subset(n_rows: int, k: int, seed: int = 42) -> list[int]:
    """The package's reading of "500 problems selected with random.seed(42)"."""
    rng = random.Random(seed)
    return sorted(rng.sample(range(n_rows), k))


def load_benchmark(name: str, src: str | Path | None = None, *,
                   college_math_subset_size: int | None = None) -> list[dict]:
    """Normalised rows of one benchmark (or ``TRAIN``), read from the raw file under ``src`` after
    checking its sha256 and row count."""
    entries = manifest()
    if name not in entries:
        raise DataError(f"unknown data set {name!r}; known: {sorted(entries)}")
    entry = entries[name]
    src = Path(src) if src is not None else default_src()
    rows = check_file(entry, locate(entry, src))
    out = [normalise_row(name, i, r) for i, r in enumerate(rows)]
    if name == "college_math" and college_math_subset_size:
        out = [out[i] for i in college_math_subset(len(out), college_math_subset_size)]
    return out


# ---------------------------------------------------------------------------------------------
# the CPU task's held-out sets (repro/tasks/arith.py), evaluated by the same pipeline
# ---------------------------------------------------------------------------------------------
CPU_SETS = {"sum_heldout": "sum", "budget_heldout": "budget"}  # set name -> CPU task


def cpu_set_settings(name: str) -> dict:
    """The held-out set of the reference trainer's final evaluation for ``name``'s task, read from
    the CPU configs (``repro/configs/cpu/base.yaml`` + ``tasks/<task>.yaml``): ``eval_seed``,
    ``eval_problems`` (how many) and ``max_tokens`` (the task's token budget)."""
    from repro.config import CPU_DIR, compose
    from repro.tasks.arith import get_variant

    task = CPU_SETS[name]
    cfg = compose([CPU_DIR / "base.yaml", CPU_DIR / "tasks" / f"{task}.yaml"])
    budget = int(cfg.get("max_new_tokens") or 0) or get_variant(task).max_new_tokens
    return {"task": task, "eval_seed": int(cfg["eval_seed"]), "eval_problems": int(cfg["eval_problems"]),
            "max_tokens": budget}


def load_cpu_set(name: str, n: int | None = None) -> list[dict]:
    """The first ``n`` (default: the configs' ``eval_problems``) held-out problems of the reference
    trainer's evaluation (``sample_problems(n, Random(eval_seed), "test")``, whose first k are the
    same for every n), as rows: ``id``, ``question`` (the bare prompt ``Q97+53=``), ``gold``, ``k``."""
    import random

    from repro.tasks.arith import sample_problems

    st = cpu_set_settings(name)
    n = st["eval_problems"] if n is None else int(n)
    if n < 1:
        raise DataError(f"{name}: the number of held-out problems must be >= 1, got {n}")
    probs = sample_problems(n, random.Random(st["eval_seed"]), "test")
    return [{"id": i, "benchmark": name, "question": p.prompt, "gold": p.answer, "k": p.k}
            for i, p in enumerate(probs)]


def load_normalised(name: str, cache: str | Path) -> list[dict]:
    """Rows of ``cache/<name>.jsonl`` as written by ``main``."""
    p = Path(cache) / f"{name}.jsonl"
    with open(p, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    from repro.runs import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                    for r in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.eval.data", description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=None, help="folder with the raw files (default: $DATA_SRC or "
                    "../shared/data beside the repository)")
    ap.add_argument("--out", default=str(REPO / "data" / "cache"))
    ap.add_argument("--offline", action="store_true", help="never download a missing file")
    ap.add_argument("--only", nargs="*", default=None, help="names from data/manifest.json")
    ap.add_argument("--college-math-subset", type=int, default=None, metavar="N",
                    help="keep N College Math rows drawn with random.seed(42) (default: all 2818)")
    args = ap.parse_args(argv)
    src = Path(args.src) if args.src else default_src()
    out = Path(args.out)
    entries = manifest()
    names = args.only or list(entries)
    failures = []
    from tqdm import tqdm

    for name in tqdm(names, desc="data", unit="file"):
        if name not in entries:
            failures.append(f"{name}: not in the manifest")
            continue
        entry = entries[name]
        try:
            path = locate(entry, src, out, offline=args.offline)
            rows = check_file(entry, path)
            if entry["kind"] == "eval":
                norm = [normalise_row(name, i, r) for i, r in enumerate(rows)]
                if name == "college_math" and args.college_math_subset:
                    norm = [norm[i] for i in college_math_subset(len(norm), args.college_math_subset)]
                write_jsonl_atomic(out / f"{name}.jsonl", norm)
            elif name == TRAIN:
                write_jsonl_atomic(out / "train.jsonl",
                                   [normalise_row(name, i, r) for i, r in enumerate(rows)])
            tqdm.write(f"ok      {name:32s} {len(rows):5d} rows  {path}")
        except DataError as e:
            failures.append(str(e))
            tqdm.write(f"FAILED  {e}")
    if failures:
        print(f"\n{len(failures)} of {len(names)} data files failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"all {len(names)} data files ok; normalised JSONL in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
