"""Adding a weighting method: one registered block (as in ``register_method``'s docstring) and
this test, which trains two steps with it through the reference trainer."""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
import torch

from repro import config as layers
from repro import objective as obj
from repro.trainers.reference import load_cpu_config, train


@dataclass(frozen=True)
class PowerParams:
    beta: float = 0.5


@pytest.fixture
def power_method():
    @obj.register_method("power", "f ∝ |o|^β", params=PowerParams)
    def power_weights(lengths, p: PowerParams, lam=0.0):
        w = lengths.pow(p.beta)
        return lengths.shape[-1] * w / w.sum(dim=-1, keepdim=True)

    try:
        yield obj.METHODS["power"]
    finally:
        obj.METHODS.pop("power")


def test_a_new_method_is_one_block(power_method, tmp_path, monkeypatch):
    lens = torch.tensor([[1.0, 4.0, 9.0, 16.0]], dtype=torch.float64)
    f = obj.token_weights("power", lens, beta=0.5)
    assert torch.allclose(f, 4 * torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64) / 10)
    assert not power_method.learnable and power_method.label == "f ∝ |o|^β"
    with pytest.raises(ValueError, match="already registered"):
        obj.register_method("power", "again")(lambda lengths, p, lam: lengths)
    # its CPU config layer, methods/power.yaml (in a copy of the config folder), composed as the demo does
    cpu = tmp_path / "cpu"
    shutil.copytree(layers.CPU_DIR, cpu)
    (cpu / "methods" / "power.yaml").write_text("weighting: {method: power, beta: 2.0}\n")
    monkeypatch.setattr(layers, "CPU_DIR", cpu)
    cfg = load_cpu_config("sum", "power", {"steps": 2, "prompts_per_rollout": 2, "group_size": 4,
                                           "max_new_tokens": 8, "checkpoint_every": 0,
                                           "eval_problems": 0, "eval_every": 0, "threads": 1})
    run = train(cfg, tmp_path / "power", progress=False)
    rows = run.metrics()
    assert [r["step"] for r in rows] == [1, 2] and {r["method"] for r in rows} == {"power"}
    assert all(r["lambda"] == 0.0 and r["lambda_grad"] is None for r in rows)
    assert all(r["f_min"] < 1.0 < r["f_max"] or r["f_std"] == 0.0 for r in rows)
    assert run.config()["weighting"] == {"method": "power", "beta": 2.0, "lambda": {"init": 0.0, "lr": 0.1}}
