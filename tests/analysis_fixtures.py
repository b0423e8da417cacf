"""Small run folders for the notebook and artifact tests.

``synthetic_runs`` writes schema-valid runs through ``repro.runs`` (no training): it exercises
every code path of the notebooks (several tasks, methods, seeds, recorded groups, evaluation
scores) in well under a second. ``tiny_run`` trains one small real run with the reference
trainer; ``tiny_runs`` uses it when the trainer and its committed checkpoint are present, and
falls back to ``synthetic_runs``. (``tests/conftest.py`` offers ``tiny_run`` as a fixture.)
"""
from __future__ import annotations

import math
import random
from pathlib import Path

from repro.runs import Run, write_json_atomic


def synthetic_runs(root: str | Path, *, tasks=("sum", "budget"), methods=("grpo", "dapo", "lambda"),
                   seeds=(0, 1), steps: int = 24, G: int = 4, r: float = 0.3) -> list[Run]:
    root = Path(root)
    out = []
    for task in tasks:
        sign = 1.0 if task == "sum" else -1.0
        for method in methods:
            for seed in seeds:
                rng = random.Random(f"{task}-{method}-{seed}")
                cfg = {"task": task, "method": method, "seed": seed, "steps": steps, "r": r,
                       "group_size": G, "synthetic": True}
                run = Run.create(root / f"{task}_{method}_s{seed}", cfg, seed=seed, method=method,
                                 extra_meta={"task": task, "trainer": "tests.analysis_fixtures"})
                lam = 0.0
                for step in range(1, steps + 1):
                    cov = sign * (2.0 + rng.gauss(0, 1.0))
                    grad = -0.05 * cov + rng.gauss(0, 0.01) if method == "lambda" else None
                    if grad is not None:
                        lam -= 0.1 * grad
                    length = 20 + 10 * (1 - math.exp(-step / 5)) * sign + rng.gauss(0, 0.5)
                    spread = abs(lam) * r
                    run.log({
                        "step": step, "rollout": (step + 1) // 2, "method": method, "lambda": lam,
                        "lambda_grad": grad, "f_mean": 1.0, "f_std": spread,
                        "f_min": 1 - spread, "f_max": 1 + 1.5 * spread,
                        "reward_mean": -0.5 + step / steps + rng.gauss(0, 0.05),
                        "accuracy": min(1.0, 0.3 + 0.4 * step / steps + rng.gauss(0, 0.03)),
                        "response_length_mean": length, "response_length_max": length + 8,
                        "truncated_rate": max(0.0, 0.05 + rng.gauss(0, 0.02)),
                        "len_adv_cov": cov, "entropy": 0.4 * math.exp(-step / 10) + 0.05,
                        "kl": None, "clip_ratio": 0.02, "grad_norm": 1.0, "time_s": 0.5 * step,
                        "task": task,
                        **({"eval_accuracy": 0.3 + 0.01 * step} if step % 8 == 0 else {}),
                    })
                    if method == "lambda" and step % 6 == 0:
                        lengths = [rng.randint(10, 40) for _ in range(G)]
                        L = [n * rng.choice([1.0, -0.8]) * (1 + 0.1 * rng.gauss(0, 1)) for n in lengths]
                        run.log_group(step=step, lam=lam, r=r, lengths=lengths, L=L)
                write_json_atomic(run.eval_dir / "scores.json",
                                  {"benchmarks": {f"{task}_heldout": {"accuracy": 0.4 + 0.01 * seed,
                                                                      "n": 64}}})
                run.mark_done({"steps": steps})
                out.append(run)
    return out


def tiny_run(out_dir: str | Path, method: str = "lambda", steps: int = 4, seed: int = 0,
             task: str = "sum", **params) -> Run:
    """A small but valid run folder in a few seconds: P=2, G=4, 16 new tokens, a checkpoint at
    the end, 16-problem held-out evaluation, and an in-training evaluation of 8 of those
    problems at step 0 and every 2 steps; every other setting as the demo trains it
    (``repro/configs/cpu/``). λ-GRPO uses r = 0.3 (visible λ movement); ``params`` are the
    method's own parameters (``repro.objective.METHODS[method].params``)."""
    from repro.trainers.reference import load_cpu_config, train

    if method == "lambda":
        params = {"r": 0.3, **params}
    # the CPU config of (task, method) as the demo composes it, with tiny sizes set on top
    cfg = load_cpu_config(task, method, {
        "seed": seed, "steps": steps, "prompts_per_rollout": 2, "group_size": 4, "max_new_tokens": 16,
        "lr": 1e-3, "checkpoint_every": 0, "eval_problems": 16, "eval_every": 2, "eval_every_problems": 8,
        **{f"weighting.{k}": v for k, v in params.items()}})
    return train(cfg, out_dir, progress=False)


def tiny_runs(root: str | Path, *, methods=("grpo", "dapo", "lambda"), seeds=(0, 1), steps: int = 4
              ) -> tuple[list[Run], str]:
    """Real tiny runs from the reference trainer if it can run here, else synthetic ones.
    Returns the runs and which kind was made ('reference' or 'synthetic')."""
    import torch

    try:
        import repro.trainers.reference  # noqa: F401
    except ImportError:
        return synthetic_runs(root, methods=methods, seeds=seeds), "synthetic"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and 2 shared cores stay usable
    try:
        runs = [tiny_run(Path(root) / f"sum_{m}_s{s}", method=m, steps=steps, seed=s)
                for m in methods for s in seeds]
        return runs, "reference"
    except FileNotFoundError:  # the trainer is here but its committed checkpoint is not
        return synthetic_runs(root, methods=methods, seeds=seeds), "synthetic"
    finally:
        torch.set_num_threads(threads)


_SHARED: dict = {}


def shared_tiny_runs() -> tuple[Path, str]:
    """One run folder per test process (made once, removed at exit), shared by the notebook and
    artifact tests so the trainer runs only once: ``(folder, 'reference' | 'synthetic')``."""
    if "path" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="lgrpo-runs-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _, kind = tiny_runs(root)
        _SHARED.update(path=root, kind=kind)
    return _SHARED["path"], _SHARED["kind"]
