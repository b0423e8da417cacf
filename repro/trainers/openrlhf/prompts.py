"""The training prompts of the paper-scale runs: SimpleRL-Zoo's parquet -> OpenRLHF's JSONL
(``prepare_prompts``), or problems of the package's own task for the ``tiny`` size
(``prepare_task_prompts``).

``python -m repro.trainers.openrlhf.reproduce prepare-prompts ...`` (the first step of each
``make reproduce-*`` run) calls them.
"""
from __future__ import annotations

import json
from pathlib import Path

# the prompt file depends on the cut: a multiple of rollout.batch_size, the dropped rows drawn with the seed
PROMPTS_FILE = "data/openrlhf/simplelr_qwen_level3to5.{template}.b{batch}.seed{seed}.jsonl"
TASK_PROMPTS_FILE = "data/openrlhf/task-{task}.n{n}.b{batch}.seed{seed}.jsonl"


def prepare_prompts(parquet: Path, out: Path, template: str, question_key: str, answer_key: str,
                    multiple_of: int = 1, seed: int = 0) -> int:
    """One JSONL row ``{"prompt": <templated question>, "label": <gold answer>}`` per problem kept.

    The set is cut to a multiple of ``multiple_of`` (``rollout.batch_size``): OpenRLHF 0.11.2
    trains on a last partial rollout batch, which its split hands the ranks unequally (a hang;
    see ``launch.layout_problems``). The ``len % multiple_of`` dropped rows are drawn with
    ``seed``; ``prompt_manifest_path(out)`` records the counts and the dropped row numbers, and
    the run's config.yaml carries them (``data.prompt_set``). Returns the number of rows kept."""
    import random

    import pandas as pd

    from repro.eval.prompts import build_prompt
    from repro.runs import write_json_atomic, write_text_atomic

    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    df = pd.read_parquet(parquet, columns=[question_key, answer_key])
    if df[question_key].isna().any() or df[answer_key].isna().any():
        raise ValueError(f"{parquet}: empty question or answer")
    n = len(df)
    if n < multiple_of:
        raise ValueError(f"{parquet}: {n} prompts, fewer than one rollout batch of {multiple_of}")
    dropped = sorted(random.Random(seed).sample(range(n), n % multiple_of))
    keep = sorted(set(range(n)) - set(dropped))
    lines = [json.dumps({"prompt": build_prompt(df[question_key].iloc[i], template),
                         "label": str(df[answer_key].iloc[i])}, ensure_ascii=False) for i in keep]
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(prompt_manifest_path(out), {
        "source": str(parquet), "source_rows": n, "multiple_of": int(multiple_of), "seed": int(seed),
        "kept": len(keep), "dropped": len(dropped), "dropped_rows": dropped})
    return len(keep)


def prepare_task_prompts(task: str, n: int, out: Path, multiple_of: int = 1, seed: int = 0) -> int:
    """``n`` training problems of the package's task ``task`` (``repro.tasks.arith``: ``sum`` or
    ``budget``), drawn with ``seed`` from its training split, as OpenRLHF rows: the prompt the
    tiny model was pretrained on (``<bos>Q12+34=``, no chat template) and the gold sum as the
    label. Cut to a multiple of ``multiple_of`` like ``prepare_prompts``; same manifest."""
    import random

    from repro.runs import write_json_atomic, write_text_atomic
    from repro.tasks.arith import get_variant, sample_problems

    get_variant(task)  # a clear error for an unknown task
    if multiple_of < 1 or n < multiple_of:
        raise ValueError(f"--task {task}: {n} prompts, fewer than one rollout batch of {multiple_of}")
    probs = sample_problems(n, random.Random(f"openrlhf-{task}-{seed}"), "train")
    dropped = sorted(random.Random(seed).sample(range(n), n % multiple_of))
    keep = [i for i in range(n) if i not in set(dropped)]
    write_text_atomic(out, "".join(json.dumps({"prompt": "<bos>" + probs[i].prompt, "label": str(probs[i].answer)})
                                   + "\n" for i in keep))
    write_json_atomic(prompt_manifest_path(out), {
        "source": f"repro.tasks.arith {task} (train split)", "source_rows": n, "multiple_of": int(multiple_of),
        "seed": int(seed), "kept": len(keep), "dropped": len(dropped), "dropped_rows": dropped})
    return len(keep)


def prompt_manifest_path(prompts_jsonl: Path) -> Path:
    return Path(prompts_jsonl).with_suffix(".manifest.json")
