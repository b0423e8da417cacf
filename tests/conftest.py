"""Shared fixtures.

``tiny_run``: trains a small real run with the reference trainer (``analysis_fixtures.tiny_run``).
``openrlhf_stubs``: makes OpenRLHF 0.11.2 importable on this CPU-only machine (``openrlhf_cpu``:
the GPU-only packages flash_attn and vllm it imports at module level come from
``tests/openrlhf_stubs`` where absent) and returns the environment a subprocess needs for the
same. The OpenRLHF test modules use it as ``pytestmark = pytest.mark.usefixtures(...)`` plus a
module-level ``pytest.importorskip``-free import after ``openrlhf_cpu.use_stubs()``; see there.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to the tests

import analysis_fixtures  # noqa: E402
import openrlhf_cpu  # noqa: E402


@pytest.fixture
def tiny_run():
    """``tiny_run(out_dir, method="lambda", steps=4, seed=0, task="sum", **params) -> Run``."""
    return analysis_fixtures.tiny_run


@pytest.fixture(scope="session")
def openrlhf_stubs() -> dict:
    """OpenRLHF importable (stand-ins for flash_attn / vllm only where absent); returns the
    environment for subprocesses that need the same."""
    openrlhf_cpu.use_stubs()
    return openrlhf_cpu.stub_env()
