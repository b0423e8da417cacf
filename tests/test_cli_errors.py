"""Every command-line mistake is one line naming the cause and the fix, with a non-zero exit code,
tested through the commands themselves (subprocess), as a user meets them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.config import ConfigError, check_types, parse_overrides

REPO = Path(__file__).resolve().parents[1]
TINY = "repro/assets/tiny-sum"


def run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line(p, prog: str) -> str:
    """The single stderr line of a refused command (exit code non-zero, no traceback)."""
    assert p.returncode != 0, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(prog + ": "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# python -m repro.eval
# ---------------------------------------------------------------------------------------------
def test_eval_tiny_model_default_max_tokens_refused_at_once(tmp_path):
    # the hang: 16,000 new tokens asked of a model whose context is 128; no data needed
    p = run("repro.eval", "--model", TINY, "--benchmarks", "gsm8k", "--limit", "20",
            "--data", str(tmp_path / "none"), "--data-src", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    line = one_line(p, "python -m repro.eval")
    assert "--max-tokens 16000" in line and "context of 128" in line and "sum_heldout" in line
    assert p.returncode == 2 and not (tmp_path / "o").exists()


def test_eval_missing_model_folder(tmp_path):
    p = run("repro.eval", "--model", "/nonexistent/model", "--benchmarks", "gsm8k", "--out", str(tmp_path / "o"))
    assert "no such folder" in one_line(p, "python -m repro.eval")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_2").mkdir(parents=True)
    p = run("repro.eval", "--model", str(run_dir), "--benchmarks", "sum_heldout", "--out", str(tmp_path / "o"))
    line = one_line(p, "python -m repro.eval")
    assert "no config.json" in line and str(run_dir / "checkpoints") in line


def test_eval_hub_id_not_downloaded(tmp_path):
    p = run("repro.eval", "--model", "no-such-owner/no-such-model", "--benchmarks", "gsm8k",
            "--out", str(tmp_path / "o"))
    assert "hf download no-such-owner/no-such-model" in one_line(p, "python -m repro.eval")


def test_eval_missing_data_names_make_data(tmp_path):
    p = run("repro.eval", "--model", TINY, "--benchmarks", "gsm8k", "--max-tokens", "64",
            "--data", str(tmp_path / "none"), "--data-src", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    line = one_line(p, "python -m repro.eval")
    assert "gsm8k: missing file" in line and "make data" in line


@pytest.mark.parametrize("args, says", [
    (["--benchmarks", "nope"], "--benchmarks: unknown"),
    (["--benchmarks", "sum_heldout,gsm8k"], "separate runs"),
    (["--benchmarks", "sum_heldout", "--max-tokens", "100"], "task's budget"),
    (["--benchmarks", "sum_heldout", "--limit", "0"], "--limit must be >= 1"),
    (["--benchmarks", "sum_heldout", "--top-p", "0"], "--top-p"),
    (["--benchmarks", "sum_heldout", "--graders", "nope"], "unknown grader"),
    (["--benchmarks", "gsm8k", "--heldout-problems", "5"], "CPU task's sets only"),
])
def test_eval_bad_options(tmp_path, args, says):
    p = run("repro.eval", "--model", TINY, *args, "--out", str(tmp_path / "o"))
    assert says in one_line(p, "python -m repro.eval")


# ---------------------------------------------------------------------------------------------
# python -m repro.demo: options of the other mode are refused, not ignored
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["--rs", "0.5"], "--ablation"),
    (["--lambda-lrs", "1"], "--ablation"),
    (["--ablation", "--methods", "grpo"], "drop --full / --methods"),
    (["--ablation", "--full"], "drop --full / --methods"),
])
def test_demo_refuses_options_of_the_other_mode(tmp_path, args, says):
    p = run("repro.demo", "--out", str(tmp_path / "o"), *args)
    assert says in one_line(p, "python -m repro.demo") and p.returncode == 2
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# python -m repro.artifacts: never writes the committed paper_artifacts/ unless asked
# ---------------------------------------------------------------------------------------------
def _tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def test_artifacts_refuses_paper_artifacts_without_flag(tmp_path):
    before = _tree_state(REPO / "paper_artifacts")
    p = run("repro.artifacts", "--runs", str(tmp_path), "--out", "paper_artifacts", "--no-notebooks")
    assert "--paper" in one_line(p, "python -m repro.artifacts")
    p = run("repro.artifacts", "--runs", str(tmp_path / "missing"), "--no-notebooks")
    assert "no such folder" in one_line(p, "python -m repro.artifacts")
    p = run("repro.artifacts", "--runs", str(tmp_path), "--paper", "--out", str(tmp_path / "a"))
    assert "drop one" in one_line(p, "python -m repro.artifacts")
    assert _tree_state(REPO / "paper_artifacts") == before


def test_artifacts_default_output_is_beside_the_runs(tmp_path, monkeypatch):
    from repro import artifacts

    monkeypatch.setattr(artifacts, "objective_artifacts", lambda book: None)  # tested elsewhere
    monkeypatch.setattr(artifacts, "table1_artifacts", lambda book, found, label: [])
    before = _tree_state(REPO / "paper_artifacts")
    assert artifacts.main(["--runs", str(tmp_path), "--no-notebooks"]) == 0
    assert (tmp_path / "artifacts" / "README.md").is_file()
    assert _tree_state(REPO / "paper_artifacts") == before


# ---------------------------------------------------------------------------------------------
# --set on the trainers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, says", [
    ("steps=abc", "expected an integer"),
    ("seed=1.5", "expected an integer"),
    ("steps", "expects KEY=VALUE"),
    ("steps=[1", "is not a YAML value"),
    ("nokey=1", "unknown config keys ['nokey']"),
    ("weighting.lambda.lr=x", "expected a number"),
    ("steps=0", "steps must be >= 1"),
])
def test_reference_trainer_bad_set(tmp_path, value, says):
    p = run("repro.trainers.reference", "--task", "sum", "--method", "lambda", "--out", str(tmp_path / "r"),
            "--set", value, "--no-progress")
    line = one_line(p, "python -m repro.trainers.reference")
    assert p.returncode == 2 and "bad config" in line and says in line
    assert not (tmp_path / "r").exists()


def test_trl_runner_bad_set(tmp_path):
    p = run("repro.trainers.trl", "--config", "repro/configs/trl/qwen2.5-1.5b-1gpu.yaml", "--method", "lambda",
            "--out", str(tmp_path / "r"), "--set", "trl.learning_rate=abc", "--dry-run")
    assert "expected a number" in one_line(p, "python -m repro.trainers.trl") and p.returncode == 2


def test_override_types_against_the_layers():
    base = {"steps": 200, "lr": 5e-5, "flag": True, "weighting": {"lambda": {"lr": 0.1}}, "path": ""}
    check_types(base, parse_overrides(["steps=20", "lr=1e-4", "lr=3", "weighting.lambda.lr=10",
                                       "flag=false", "path=runs/x", "not_in_yaml=anything"]))
    for bad in (["steps=2.5"], ["steps=true"], ["flag=1"], ["weighting=3"], ["lr=fast"]):
        with pytest.raises(ConfigError):
            check_types(base, parse_overrides(bad))
