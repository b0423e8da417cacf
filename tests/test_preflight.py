"""``make reproduce-*`` outside the GPU environment says how to create and activate it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# ----------------------------------------------------------------------------------------------
# the CUDA stack: driver against torch's CUDA, nvcc for DeepSpeed's JIT and flash-attn's build
# (issue 21 item 3); fake nvidia-smi / nvcc scripts, a fake /proc file, no GPU needed
# ----------------------------------------------------------------------------------------------
def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def _fake_smi(bindir: Path, version: str, gpus: int = 4) -> Path:
    return _script(bindir / "nvidia-smi", 'case "$*" in *driver_version*) ' + "; ".join(
        [f"echo {version}"] * gpus) + ' ;; *) echo "NVIDIA-SMI fake" ;; esac')


def _lock_cuda() -> str:
    """The lock's CUDA runtime major.minor, read here without the code under test."""
    line = next(ln for ln in (REPO / "environment.lock.txt").read_text().splitlines()
                if ln.startswith("nvidia-cuda-runtime=="))
    return ".".join(line.split("==")[1].split(".")[:2])


def test_driver_version_from_nvidia_smi_then_proc(tmp_path):
    from repro.trainers import machine

    smi = _fake_smi(tmp_path / "bin", "535.183.01")
    assert machine.driver_version(str(smi), tmp_path / "none") == ("535.183.01", "nvidia-smi")
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.05  Tue Oct  8 03:22:07 UTC 2024\n"
                    "GCC version:  gcc version 12.3.0\n")
    assert machine.driver_version(None, proc) == ("550.127.05", str(proc))
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert machine.driver_version("no-such-nvidia-smi-lgrpo", proc) == ("580.65.06", str(proc))
    broken = _script(tmp_path / "b" / "nvidia-smi", "exit 9")
    v, why = machine.driver_version(str(broken), tmp_path / "none")
    assert v is None and "printed no driver version" in why and "none" in why


@pytest.mark.parametrize("driver,cuda,seen,bad", [
    ("535.183.01", "13.0", 0, True),    # R535 (a common A100/A800 node): CUDA 12 at most
    ("550.127.05", "13.0", 0, True),
    ("580.65.06", "13.0", 0, False),    # R580: CUDA 13
    ("590.10", "13.0", 0, False),
    ("535.183.01", "13.0", 2, False),   # torch sees GPUs anyway: forward-compatibility package in use
    ("535.183.01", "12.8", 0, False),   # a CUDA 12 torch runs on R535 (>= 525)
])
def test_driver_problems_name_the_driver_and_both_fixes(driver, cuda, seen, bad):
    from repro.trainers import machine

    out = machine.driver_problems(driver, "nvidia-smi", cuda, "torch", seen)
    assert bool(out) == bad, out
    if bad:
        assert len(out) == 1 and driver in out[0] and "R580" in out[0] and ">= 580" in out[0]
        assert "upgrade the driver" in out[0]
        assert f"cuda-compat-{cuda.replace('.', '-')}" in out[0] and "data-centre GPU" in out[0]
        assert f"/usr/local/cuda-{cuda}/compat" in out[0]


def test_no_driver_and_torch_cuda_from_the_lock(tmp_path):
    from repro.trainers import machine

    want = _lock_cuda()
    assert want.startswith("13.")  # the lock is the CUDA 13 stack this check is about
    assert machine.lock_cuda_version() == want
    import torch

    v, src = machine.torch_cuda_version()
    assert (v, src) == ((torch.version.cuda, f"torch {torch.__version__}") if torch.version.cuda
                        else (want, "environment.lock.txt (nvidia-cuda-runtime)"))
    out = machine.cuda_problems(gpus_seen=0, nvidia_smi="no-such-nvidia-smi-lgrpo", proc=tmp_path / "none",
                                cuda="13.0")
    assert out == ["no NVIDIA driver found (no no-such-nvidia-smi-lgrpo on PATH, no "
                   f"{tmp_path / 'none'}); CUDA 13.0 (given) needs an NVIDIA driver >= 580 (R580 series or newer)"]


def _toolkit(root: Path, release: str, headers: bool = True) -> Path:
    _script(root / "bin" / "nvcc", f'echo "Cuda compilation tools, release {release}, V{release}.88"')
    if headers:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_nvcc_found_as_torch_finds_it(tmp_path):
    from repro.trainers import machine

    none = str(tmp_path / "no-cuda")
    empty = tmp_path / "empty"
    empty.mkdir()
    ok = _toolkit(tmp_path / "cuda-13.0", "13.0")
    assert machine.nvcc_problems("13.0", "X", {"CUDA_HOME": str(ok), "PATH": str(empty)}, none) == []
    assert machine.nvcc_problems("13.0", "X", {"PATH": str(ok / "bin")}, none) == []  # nvcc on PATH
    assert machine.nvcc_problems("13.0", "X", {"PATH": str(empty)}, str(ok)) == []  # the /usr/local/cuda guess
    old = _toolkit(tmp_path / "cuda-12.4", "12.4")
    (msg,) = machine.nvcc_problems("13.0", "X", {"CUDA_PATH": str(old), "PATH": str(ok / "bin")}, none)
    assert "CUDA 12.4" in msg and "CUDA_PATH" in msg and "export CUDA_HOME" in msg  # CUDA_PATH before PATH
    (msg,) = machine.nvcc_problems("13.0", "X", {"PATH": str(empty)}, none)
    assert msg.startswith("X needs nvcc of CUDA 13.x and none was found") and "cuda-toolkit=13.0" in msg
    wrapper = _toolkit(tmp_path / "local", "13.0", headers=False)  # /usr/local/bin/nvcc wrapping the real one
    (msg,) = machine.nvcc_problems("13.0", "X", {"PATH": str(wrapper / "bin")}, none)
    assert "no include/cuda_runtime.h" in msg and str(wrapper) in msg
    (msg,) = machine.nvcc_problems("13.0", "X", {"CUDA_HOME": str(empty)}, none)
    assert "does not exist" in msg


def _dry_env(tmp_path: Path, driver: str) -> dict:
    bindir = tmp_path / "fakebin"
    _fake_smi(bindir, driver)
    _toolkit(tmp_path / "cuda", _lock_cuda())
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "CUDA_HOME": str(tmp_path / "cuda")}


def test_dry_run_on_a_535_host_names_the_driver_and_the_fix(tmp_path):
    """`DRY_RUN=1 make reproduce-1.5b` with a fake R535 nvidia-smi on PATH (issue 21's 'done when')."""
    res = subprocess.run(["make", "--no-print-directory", "reproduce-1.5b", "DRY_RUN=1", "METHOD=lambda",
                          f"RUNS={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=_dry_env(tmp_path, "535.183.01"))
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [ln for ln in res.stdout.splitlines() if "NVIDIA driver" in ln]
    assert len(lines) == 1, lines
    assert "535.183.01 (nvidia-smi) is too old for CUDA 13.0" in lines[0] and "R580" in lines[0]
    assert "cuda-compat-13-0" in lines[0] and "upgrade the driver" in lines[0]
    assert "nvcc" not in res.stdout.split("### resolved config")[0]  # CUDA_HOME holds a CUDA 13 toolkit


def test_trl_dry_run_on_a_535_host(tmp_path):
    res = subprocess.run(["make", "--no-print-directory", "reproduce-1gpu", "DRY_RUN=1", "METHOD=lambda",
                          f"RUNS={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=_dry_env(tmp_path, "535.183.01"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "NVIDIA driver 535.183.01 (nvidia-smi) is too old for CUDA 13.0" in res.stdout
    ok = subprocess.run(["make", "--no-print-directory", "reproduce-1gpu", "DRY_RUN=1", "METHOD=lambda",
                         f"RUNS={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=_dry_env(tmp_path / "new", "580.65.06"))
    assert ok.returncode == 0 and "### machine check" in ok.stdout and "NVIDIA driver" not in ok.stdout


def test_gpu_install_preflight_checks_nvcc(tmp_path):
    """`make gpu-install`'s first step refuses a CUDA 12 nvcc before flash-attn's long build starts,
    and the build step forces flash-attn's source build."""
    _toolkit(tmp_path / "cuda12", "12.4")
    env = {**os.environ, "CUDA_HOME": str(tmp_path / "cuda12")}
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    res = subprocess.run([sys.executable, "-m", "repro.trainers.openrlhf.preflight", "--target", "gpu-install",
                          "--no-packages", "--nvcc", "--python", py], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 2 and "flash-attn's source build" in res.stderr and "CUDA 12.4" in res.stderr
    assert "Traceback" not in res.stderr
    _toolkit(tmp_path / "cuda13", _lock_cuda())
    res = subprocess.run([sys.executable, "-m", "repro.trainers.openrlhf.preflight", "--no-packages", "--nvcc",
                          "--python", py], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CUDA_HOME": str(tmp_path / "cuda13")})
    assert res.returncode == 0, res.stderr
    dry = subprocess.run(["make", "-n", "gpu-install", "GPU_PY=python3"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    build = [ln for ln in dry.stdout.splitlines() if "flash-attn==" in ln]
    assert build and build[0].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE ") and "--nvcc" in dry.stdout
