"""``python -m repro.summary RUN``: one run of one's own, its table and its curves, through the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from repro.runs import Run

REPO = Path(__file__).resolve().parents[1]


def _cmd(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "repro.summary", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _run(root: Path) -> Path:
    """A two-run folder written through repro.runs, with an in-training held-out curve."""
    for method, lam_step in (("lambda", 0.05), ("dapo", 0.0)):
        cfg = {"task": "sum", "steps": 10,
               "weighting": {"method": method, "r": 1 / 3, "lambda": {"init": 0.0, "lr": 10.0}}}
        run = Run.create(root / f"sum_{method}_s0", cfg, seed=0, method=method, extra_meta={"task": "sum"})
        for step in range(1, 11):
            run.log({"step": step, "rollout": step, "method": method, "lambda": lam_step * step,
                     "lambda_grad": None, "f_mean": 1.0, "f_std": 0.0, "f_min": 1.0, "f_max": 1.0,
                     "reward_mean": 0.1 * step, "accuracy": 0.05 * step, "response_length_mean": 10.0 + step,
                     "response_length_max": 20.0, "truncated_rate": 0.0, "len_adv_cov": 0.1,
                     "entropy": 0.5, "kl": None, "clip_ratio": 0.0, "grad_norm": 1.0, "time_s": step})
        for step, acc in ((0, 0.25), (5, 0.5), (10, 0.625)):
            run.log_periodic_eval(step=step, benchmark="sum_heldout8",
                                  ev={"n": 8, "accuracy": acc, "response_length_mean": 12.0})
        run.mark_done({"steps": 10})
    return root / "sum_lambda_s0"


def test_summary_of_one_run(tmp_path):
    one = _run(tmp_path / "runs")
    p = _cmd(one, "--out", tmp_path / "s")
    assert p.returncode == 0, p.stderr
    assert "sum_lambda_s0" in p.stdout and "sum_dapo_s0" not in p.stdout  # only the run asked for
    md = (tmp_path / "s" / "summary.md").read_text()
    last = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()][-1]
    # training row: run, task, method, seed, steps, final λ (= the last metrics line's), ...
    assert f"| sum_lambda_s0 | sum | lambda | 0 | 10 | {last['lambda']:.4g} |" in md
    assert "| sum_lambda_s0 | sum | lambda | 0 | 10 | 10 | 0.3333 | True |" in md  # settings: λ lr, r
    assert "| sum_lambda_s0 | sum_heldout8 | 3 | 0 | 25 | 10 | 62.5 |" in md  # the curve's ends, in %
    for name in ("summary_training.png", "summary_eval.png"):
        assert (tmp_path / "s" / name).stat().st_size > 10_000


def test_summary_of_a_folder_and_errors(tmp_path):
    _run(tmp_path / "runs")
    p = _cmd(tmp_path / "runs", "--no-figures")
    assert p.returncode == 0 and "sum_dapo_s0" in p.stdout and "sum_lambda_s0" in p.stdout
    assert (tmp_path / "runs" / "summary" / "summary.md").is_file()
    for bad, says in ((tmp_path / "nope", "no such folder"), (tmp_path / "runs" / "summary", "no run with metrics")):
        p = _cmd(bad)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and says in lines[0], p.stderr
