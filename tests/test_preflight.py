"""``make reproduce-*`` outside the GPU environment says how to create and activate it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python_without_site_packages(tmp_path: Path) -> Path:
    """This test's own interpreter with ``-S``: no site-packages, so no torch, yaml or openrlhf,
    as a system Python outside the GPU environment."""
    exe = tmp_path / "bare-python"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    exe.chmod(0o755)
    return exe


def test_make_reproduce_without_torch_names_the_conda_commands(tmp_path):
    bare = _python_without_site_packages(tmp_path)
    assert subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode != 0
    res = subprocess.run(["make", "--no-print-directory", "reproduce-1.5b", f"GPU_PY={bare}", f"RUNS={tmp_path / 'runs'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    err = res.stderr
    assert "Traceback" not in err and "No module named" not in err, err
    assert "make reproduce-1.5b: not in the GPU environment" in err
    assert "lacks torch" in err and "flash_attn (flash-attn)" in err
    assert "conda env create -f environment.yml && conda activate lambda-grpo-gpu" in err
    assert "make gpu-install" in err and "DRY_RUN=1" in err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_make_reproduce_with_no_such_python(tmp_path):
    res = subprocess.run(["make", "--no-print-directory", "reproduce-7b", "GPU_PY=no-such-python-lgrpo"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "no 'no-such-python-lgrpo' on PATH" in res.stderr
    assert "conda activate lambda-grpo-gpu" in res.stderr


def test_preflight_passes_where_the_packages_are(monkeypatch):
    from repro.trainers.openrlhf import preflight

    present = {"torch", "yaml"}
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda m: object() if m in present else None)
    assert preflight.missing_modules() == [m for m in preflight.NEEDED if m not in present]
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda m: object())
    assert preflight.main(["--python", f"{sys.version_info.major}.{sys.version_info.minor}"]) == 0
    assert preflight.problems(python="2.7", packages=False) == [
        f"this is Python {sys.version_info.major}.{sys.version_info.minor} ({sys.executable}); "
        "the GPU environment is Python 2.7"]


def test_dry_run_skips_the_preflight(tmp_path):
    """DRY_RUN=1 uses the CPU .venv and never asks for the GPU environment."""
    res = subprocess.run(["make", "-n", "reproduce-3b", "DRY_RUN=1", "GPU_PY=no-such-python-lgrpo"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert res.returncode == 0 and "preflight" not in res.stdout and "--dry-run" in res.stdout
