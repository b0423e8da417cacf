"""`make` alone prints the menu; `make artifacts` writes beside the runs unless PAPER=1."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def make(*args):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_bare_make_prints_the_grouped_menu():
    p = make()
    assert p.returncode == 0, p.stderr
    out = p.stdout
    heads = [out.index(h) for h in ("CPU (", "GPU (", "Maintenance")]
    assert heads == sorted(heads)
    cpu = out[heads[0]:heads[1]]
    assert "make demo" in cpu and "make test" in cpu and "min" in cpu  # with their times
    assert "make reproduce-1gpu" in out[heads[1]:heads[2]] and "make lock" in out[heads[2]:]
    assert "pip install" not in out  # the menu builds nothing


def test_artifacts_target_writes_beside_the_runs_unless_paper():
    plain = [ln for ln in make("-n", "artifacts", "RUNS=runs/demo").stdout.splitlines() if "repro.artifacts" in ln]
    assert len(plain) == 1 and "--runs runs/demo" in plain[0] and "paper_artifacts" not in plain[0]
    paper = [ln for ln in make("-n", "artifacts", "PAPER=1", "RUNS=runs/x").stdout.splitlines()
             if "repro.artifacts" in ln]
    assert len(paper) == 1 and "--out paper_artifacts --paper" in paper[0]
