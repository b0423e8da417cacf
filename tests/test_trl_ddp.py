"""Two CPU processes (torchrun, gloo) through the real TRL trainer keep λ identical, and λ's
applied gradient is Eq. 20 over the whole group although each rank holds half of it (issue 12);
also with two PPO epochs over one generation batch (num_iterations = 2, issue 21)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mu", [1, 2])
def test_two_processes_keep_lambda_identical(tmp_path, mu):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "trl_ddp_worker.py"), str(tmp_path), str(mu)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 2
    assert r0["local_samples"] == r1["local_samples"] == [4] * (2 // mu)  # half of the group of 8 on each rank
    assert r0["iteration"] == r1["iteration"] == ([1, 1] if mu == 1 else [1, 2])
    assert r0["lambda"] == r1["lambda"]  # bit-identical on both ranks
    assert r0["grads"] == r1["grads"]
    assert r0["grads"] == pytest.approx(r0["want"], rel=1e-5, abs=1e-9)
    assert r0["lambda"][0] != 0.5 or r0["lambda"][1] != 0.5  # λ moved
    if mu > 1:
        assert r0["off_policy"][1] > 1e-4  # the second epoch was checked off-policy, not at ρ = 1
