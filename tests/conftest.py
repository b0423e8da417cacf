"""Shared fixtures and the one place the OpenRLHF stand-ins are set up.

OpenRLHF 0.11.2 imports two GPU-only packages at module level, flash_attn and vllm, which
cannot be installed here. ``pytest_configure`` (before any test module is collected, so the
test modules import OpenRLHF at their top) puts ``tests/openrlhf_stubs`` on ``sys.path`` for
whichever of them is really absent (``openrlhf_cpu.use_stubs``).

Fixtures:
``openrlhf_stub_env``: the environment a subprocess needs for the same stand-ins.
``tiny_run``: trains a small real run with the reference trainer (``analysis_fixtures.tiny_run``).
"""
from __future__ import annotations

import pytest

import analysis_fixtures  # the helper modules next to the tests (pytest puts tests/ on sys.path)
import openrlhf_cpu


def pytest_configure(config):
    if "vllm" in openrlhf_cpu.use_stubs():
        # Shim: TRL asks "is vllm installed?" and, seeing OpenRLHF's stand-in, imports its client
        # (vllm.utils.network_utils), which the stand-in does not have. The stand-in is not a
        # vLLM for TRL: tell TRL there is none, before anything imports its generation module.
        import importlib

        importlib.import_module("trl.import_utils").is_vllm_available = lambda *a, **k: False


@pytest.fixture
def tiny_run():
    """``tiny_run(out_dir, method="lambda", steps=4, seed=0, task="sum", **params) -> Run``."""
    return analysis_fixtures.tiny_run


@pytest.fixture(scope="session")
def openrlhf_stub_env() -> dict:
    """Environment for a subprocess that needs the stand-ins (and the package on its path)."""
    return openrlhf_cpu.stub_env()
