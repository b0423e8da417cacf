"""What this machine has, for every engine's machine check (the OpenRLHF and TRL ``reproduce``).

Standard library at import (torch only inside ``visible_gpus`` / ``torch_cuda_version``), so the
pre-flight check of ``make gpu-install`` can use it in a Python that cannot import torch yet.

The driver rule (NVIDIA's CUDA Compatibility guide, "Minor Version Compatibility", Table 1; and
the data-centre driver support matrix, "Supported Drivers and CUDA Toolkit Versions"): a CUDA
13.x runtime needs a driver >= 580 (the R580 series or newer); R535 and R550 run CUDA 12 at most
without NVIDIA's forward-compatibility package ``cuda-compat-<major>-<minor>``, which only data-centre
GPUs (and a few NGC-ready RTX SKUs) support. The lock's torch 2.13.0 is the CUDA 13 build
(``nvidia-cuda-runtime`` 13.0.x in environment.lock.txt), so on an older driver torch sees no GPU.
DeepSpeed JIT-compiles FusedAdam with the ``nvcc`` that torch's ``cpp_extension`` finds
(``CUDA_HOME`` / ``CUDA_PATH``, else ``nvcc`` on PATH, else ``/usr/local/cuda``) and refuses one
whose major version differs from torch's; flash-attn's source build needs the same.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "environment.lock.txt"
PROC_VERSION = Path("/proc/driver/nvidia/version")
MIN_DRIVER = {13: 580, 12: 525, 11: 450}  # CUDA major -> minimum driver major (NVIDIA's Table 1)
LOCK_RUNTIME = "nvidia-cuda-runtime"  # the lock's CUDA runtime wheel: its major.minor is torch's CUDA


def visible_gpus() -> tuple[list[float], str | None]:
    """The memory (GiB) of each CUDA GPU torch sees, and why they could not be listed (or None)."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(n)], None
    except Exception as e:  # noqa: BLE001 - reported to the user as a plain sentence
        return [], f"cannot query GPUs through torch ({e})"


# ----------------------------------------------------------------------------------------------
# the driver, torch's CUDA, nvcc
# ----------------------------------------------------------------------------------------------
def _run(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def driver_version(nvidia_smi: str | None = "nvidia-smi", proc: Path | str = PROC_VERSION) -> tuple[str | None, str]:
    """(the NVIDIA driver version, where it was read), or (None, what was tried).

    ``nvidia-smi --query-gpu=driver_version`` first (``nvidia_smi``: a name looked up on PATH or
    a path; None skips it), then the kernel module's ``/proc/driver/nvidia/version``."""
    tried = []
    exe = shutil.which(nvidia_smi) if nvidia_smi else None
    if exe:
        out = _run([exe, "--query-gpu=driver_version", "--format=csv,noheader"])
        versions = sorted({v.strip() for v in (out or "").splitlines() if re.fullmatch(r"\d+(\.\d+)+", v.strip())})
        if versions:
            return versions[0], "nvidia-smi"
        tried.append(f"{exe} printed no driver version")
    elif nvidia_smi:
        tried.append(f"no {nvidia_smi} on PATH")
    p = Path(proc)
    try:
        m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", p.read_text())
    except OSError:
        m = None
        tried.append(f"no {p}")
    else:
        if m:
            return m.group(1), str(p)
        tried.append(f"{p} names no kernel module version")
    return None, ", ".join(tried)


def lock_cuda_version(lock: Path | str = LOCK) -> str | None:
    """major.minor of the CUDA runtime the lock installs (``nvidia-cuda-runtime==13.0.96`` -> '13.0')."""
    try:
        m = re.search(rf"^{LOCK_RUNTIME}==(\d+)\.(\d+)", Path(lock).read_text(), flags=re.M)
    except OSError:
        return None
    return f"{m.group(1)}.{m.group(2)}" if m else None


def torch_cuda_version(lock: Path | str | None = LOCK) -> tuple[str | None, str]:
    """(the CUDA version torch was built for, its source): ``torch.version.cuda`` of this Python;
    for a CPU-only torch (the DRY_RUN venv) the lock's CUDA runtime, which the GPU set installs."""
    try:
        import torch

        v = torch.version.cuda
        if v:
            return str(v), f"torch {torch.__version__}"
    except Exception:  # noqa: BLE001 - no torch: fall back to the lock
        pass
    v = lock_cuda_version(lock) if lock else None
    return (v, f"environment.lock.txt ({LOCK_RUNTIME})") if v else (None, "")


def _major(v: str | None) -> int | None:
    m = re.match(r"(\d+)", v or "")
    return int(m.group(1)) if m else None


def driver_problems(driver: str | None, where: str, cuda: str | None, cuda_src: str, gpus_seen: int) -> list[str]:
    """One sentence when the driver cannot run ``cuda`` (and torch sees no GPU), naming the fix."""
    cmaj, dmaj = _major(cuda), _major(driver)
    if cmaj is None:
        return []
    need = MIN_DRIVER.get(cmaj)
    if driver is None:
        return [f"no NVIDIA driver found ({where}); CUDA {cuda} ({cuda_src}) needs an NVIDIA driver "
                f">= {need} (R{need} series or newer)" if need else f"no NVIDIA driver found ({where})"]
    if need is None or dmaj is None or dmaj >= need or gpus_seen > 0:
        return []  # new enough, or an older base driver that works (forward-compatibility package in use)
    return [f"NVIDIA driver {driver} ({where}) is too old for CUDA {cuda} ({cuda_src}): CUDA {cmaj}.x needs "
            f"driver >= {need} (the R{need} series or newer), so torch sees no GPU. Fix: upgrade the driver "
            f"to R{need} or newer; or, on a data-centre GPU (A100, A800, H100, ...), install NVIDIA's "
            f"forward-compatibility package cuda-compat-{cuda.replace('.', '-')} and put it first: "
            f"export LD_LIBRARY_PATH=/usr/local/cuda-{cuda}/compat:$LD_LIBRARY_PATH "
            "(docs.nvidia.com/deploy/cuda-compatibility, 'Forward Compatibility')"]


def find_cuda_home(env: dict | None = None, fallback: str = "/usr/local/cuda") -> tuple[str | None, str]:
    """The CUDA toolkit torch's ``cpp_extension`` (hence DeepSpeed's op builder) would use, and how
    it was found: ``CUDA_HOME`` / ``CUDA_PATH``, else ``nvcc`` on PATH, else ``/usr/local/cuda``."""
    env = os.environ if env is None else env
    for k in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(k):
            return env[k], k
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        return os.path.dirname(os.path.dirname(nvcc)), f"nvcc on PATH ({nvcc})"  # as torch: not resolved"
    if Path(fallback).exists():
        return fallback, fallback
    return None, f"no CUDA_HOME, CUDA_PATH, nvcc on PATH or {fallback}"


def nvcc_problems(cuda: str | None, needed_for: str, env: dict | None = None,
                  fallback: str = "/usr/local/cuda") -> list[str]:
    """One sentence when no ``nvcc`` of torch's CUDA major is where torch/DeepSpeed look for it."""
    cmaj = _major(cuda)
    if cmaj is None:
        return []
    home, how = find_cuda_home(env, fallback)
    fix = (f"install a CUDA {cmaj} toolkit (conda install -c nvidia cuda-toolkit={cuda}, or NVIDIA's "
           f"installer) and export CUDA_HOME=<its folder> (PATH=$CUDA_HOME/bin:$PATH)")
    if home is None:
        return [f"{needed_for} needs nvcc of CUDA {cmaj}.x and none was found ({how}): {fix}"]
    nvcc = Path(home) / "bin" / "nvcc"
    out = _run([str(nvcc), "--version"]) if nvcc.exists() else None
    m = re.search(r"release (\d+)\.(\d+)", out or "")
    if not m:
        return [f"{needed_for} needs nvcc of CUDA {cmaj}.x; {nvcc} (CUDA home from {how}) "
                f"{'does not run' if nvcc.exists() else 'does not exist'}: {fix}"]
    if int(m.group(1)) != cmaj:
        return [f"{needed_for} needs nvcc of CUDA {cmaj}.x (torch's CUDA {cuda}); {nvcc} (from {how}) is "
                f"CUDA {m.group(1)}.{m.group(2)}, which DeepSpeed and flash-attn's build refuse: {fix}"]
    if not (Path(home) / "include" / "cuda_runtime.h").exists():
        return [f"{needed_for} compiles against $CUDA_HOME/include; the CUDA home taken from {how} is {home}, "
                f"which has no include/cuda_runtime.h (nvcc there is a wrapper?): export CUDA_HOME=<the toolkit "
                f"folder holding bin/nvcc and include/, e.g. /usr/local/cuda-{cuda}>"]
    return []


def cuda_problems(*, gpus_seen: int, nvcc_for: str | None = None, nvidia_smi: str | None = "nvidia-smi",
                  proc: Path | str = PROC_VERSION, cuda: str | None = None, env: dict | None = None) -> list[str]:
    """The driver against torch's CUDA (``cuda`` overrides ``torch_cuda_version()``), and, when
    ``nvcc_for`` names what will compile CUDA code at run time, the nvcc it will find."""
    src = "given"
    if cuda is None:
        cuda, src = torch_cuda_version()
    driver, where = driver_version(nvidia_smi, proc)
    out = driver_problems(driver, where, cuda, src, gpus_seen)
    if nvcc_for:
        out += nvcc_problems(cuda, nvcc_for, env)
    return out
