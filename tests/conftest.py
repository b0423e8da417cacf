"""Shared fixtures and the one place the OpenRLHF stand-ins are set up.

OpenRLHF 0.11.2 imports two GPU-only packages at module level, flash_attn and vllm, which
cannot be installed here. ``pytest_configure`` (before any test module is collected, so the
test modules import OpenRLHF at their top) puts ``tests/openrlhf_stubs`` on ``sys.path`` for
whichever of them is really absent (``openrlhf_cpu.use_stubs``).

Fixtures:
``openrlhf_stub_env``: the environment a subprocess needs for the same stand-ins.
``tiny_run``: trains a small real run with the reference trainer (``analysis_fixtures.tiny_run``).
``softmax_beta``: a weighting method with a parameter of its own, registered for one test.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

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


@dataclass(frozen=True)
class BetaParams:
    beta: float = 1.0


@pytest.fixture
def softmax_beta():
    """Method ``softmax_beta``: f = G·softmax(β·z), z the lengths standardised within the group
    (sample σ, at least 1e-6), with its own parameter β; registered for one test only, through
    ``repro.objective.register_method`` as a new method is, and removed after it."""
    from repro import objective as obj

    @obj.register_method("softmax_beta", "f = G softmax(βz)", params=BetaParams)
    def softmax_beta_weights(lengths, p: BetaParams, lam=0.0):
        z = (lengths - lengths.mean(dim=-1, keepdim=True)) / lengths.std(dim=-1, keepdim=True).clamp_min(1e-6)
        return lengths.shape[-1] * torch.softmax(p.beta * z, dim=-1)

    try:
        yield obj.METHODS["softmax_beta"]
    finally:
        obj.METHODS.pop("softmax_beta")
