"""The one-GPU check (repro.trainers.openrlhf.gpu_check) exercised on CPU, as CI can.

It runs exactly as on the GPU machine (``python -m ...`` in a fresh process, as
scripts/gpu_check.sh starts it), with small shapes: part 1 (λ gradient through the stock
PolicyLoss in bf16) and part 2 (the real DeepSpeed engine + LambdaActorPPOTrainer.ppo_train on
DeepSpeed's CPU accelerator) must pass against the float64 objective; parts 3-4 (CUDA timing and
the 1.5B memory) must say "skipped: no CUDA". No GPU numbers are produced or claimed here.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path, openrlhf_stub_env):
    env = dict(openrlhf_stub_env)
    env["DS_ACCELERATOR"] = "cpu"
    artifact = ROOT / "paper_artifacts" / "gpu_check.md"
    before = artifact.read_bytes() if artifact.exists() else None
    out, md = tmp_path / "gpu_check.json", tmp_path / "gpu_check.md"
    p = subprocess.run([sys.executable, "-m", "repro.trainers.openrlhf.gpu_check", "--device", "cpu", "--small",
                        "--out", str(out), "--md", str(md), "--workdir", str(tmp_path / "work")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert p.stdout.count("skipped: no CUDA") == 2  # timing and 1.5B memory: CUDA only
    res = json.loads(out.read_text())
    assert res["ok"] and res["lambda_grad"]["ok"] and res["engine"]["ok"]
    assert res["loss_timing"] == {"skipped": "no CUDA"} and res["memory_1p5b"] == {"skipped": "no CUDA"}
    e = res["engine"]
    assert e["engine"] == "DeepSpeedEngine" and e["zero_stage"] == 2 and e["bf16"] and e["backend"] == "gloo"
    assert e["optimizer_steps"] >= 2 and e["max_abs_lambda_difference"] < 1e-5
    assert e["lambda_per_rollout"][-1] != pytest.approx(0.3, abs=1e-4)  # λ moved
    assert "Real DeepSpeed engine" in md.read_text()
    # on CPU the paper artifact is left alone (it is written only by a run on a GPU)
    assert (artifact.read_bytes() if artifact.exists() else None) == before


def _make_commands(target: str) -> list[str]:
    """What ``make TARGET`` runs, as make expands it (``make -n -B``: printed, nothing run)."""
    res = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_gpu_scripts_pin_what_the_venv_tests(tmp_path):
    """The carried wheels are the versions `make venv` installs --no-deps and the CPU tests
    exercise: `make gpu-wheels`'s script, run with a stand-in python that records each pip
    command (and leaves an empty wheel for each pin), fetches or builds exactly those versions."""
    import shlex

    nodeps = next(c for c in _make_commands("venv") if "pip install" in c and "--no-deps" in c)
    pins = [a for a in shlex.split(nodeps) if "==" in a]
    assert {p.split("==")[0] for p in pins} == {"openrlhf", "deepspeed"}
    wheels_cmd = next(c for c in _make_commands("gpu-wheels") if "gpu_wheels.sh" in c)
    log = tmp_path / "pip.log"
    stub = tmp_path / "python"
    stub.write_text("#!/usr/bin/env bash\n"
                    f"echo \"$*\" >> {log}\n"
                    "prev=; for a in \"$@\"; do\n"
                    "  case $prev in -d|-w) dir=$a;; esac; prev=$a; done\n"
                    "for a in \"$@\"; do case $a in *==*) "
                    "touch \"$dir/${a%%==*}-${a##*==}-py3-none-any.whl\";; esac; done\n")
    stub.chmod(0o755)
    script = ROOT / next(a for a in shlex.split(wheels_cmd) if a.endswith("gpu_wheels.sh"))
    res = subprocess.run(["bash", str(script), str(tmp_path / "w")], capture_output=True, text=True,
                         env={"PY": str(stub), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    for pin in pins:
        took = [c for c in calls if pin in c.split()]
        assert took and all("--no-deps" in c for c in took), (pin, calls)
    check = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert "--no-deps" in check and "--system-site-packages" in check and "timeout" in check
    assert any("scripts/gpu_check.sh" in c for c in _make_commands("gpu-check"))


def test_placeholder_artifact_has_no_numbers():
    """Until a GPU run writes it, paper_artifacts/gpu_check.md must not contain any number."""
    art = ROOT / "paper_artifacts" / "gpu_check.md"
    text = art.read_text()
    if "Written by `python -m repro.trainers.openrlhf.gpu_check`" not in text:
        assert not re.search(r"\d", text), "the placeholder must not show numbers"


def test_local_actor_stands_in_without_the_test_tree(tmp_path):
    """On the GPU machine the package cannot rely on tests/: with neither the test stubs nor the
    real packages on the path, ``local_actor.import_stand_ins`` alone makes the OpenRLHF modules
    that import vllm / flash_attn at module level importable."""
    import os

    code = ("import sys; sys.path = [p for p in sys.path if 'openrlhf_stubs' not in p]\n"
            "import importlib.util as u\n"
            "absent = [n for n in ('vllm', 'flash_attn') if u.find_spec(n) is None]\n"
            "from repro.trainers.openrlhf import local_actor as la\n"
            "used = la.import_stand_ins()\n"
            "import openrlhf.models.ring_attn_utils, openrlhf.trainer.ray.vllm_engine\n"
            "import vllm, flash_attn\n"
            "assert set(absent) <= set(used), (absent, used)\n"
            "assert all('tests' not in str(getattr(sys.modules[n], '__file__', '') or '') for n in absent)\n"
            "print('ok', absent)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    env["DS_ACCELERATOR"] = "cpu"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("ok"), (p.stdout + p.stderr)[-3000:]
