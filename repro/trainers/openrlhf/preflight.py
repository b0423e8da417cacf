"""Is this Python the GPU environment? Run by ``make reproduce-*`` and ``make gpu-install`` first.

Standard library only, so that it runs in any Python (a system ``python`` without torch included)
and says how to create and activate the GPU environment, instead of a ``No module named 'torch'``
traceback from deep inside the real entry point. It only looks for the packages (no import);
``reproduce``'s machine check then compares every installed version with environment.lock.txt.

    python -m repro.trainers.openrlhf.preflight [--target reproduce-1.5b] [--python 3.11] [--no-packages] [--nvcc]

``--nvcc`` (``make gpu-install``, before flash-attn's source build): an nvcc of the lock's CUDA major
where torch's build helpers look for it (``repro.trainers.machine.nvcc_problems``).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

# import name -> distribution, the top of the training stack (the lock pins them all)
NEEDED = {"torch": "torch", "yaml": "pyyaml", "openrlhf": "openrlhf", "vllm": "vllm",
          "deepspeed": "deepspeed", "ray": "ray", "flash_attn": "flash-attn", "transformers": "transformers"}
ENV_NAME = "lambda-grpo-gpu"
PYTHON = "3.11"


def missing_modules(names=NEEDED) -> list[str]:
    out = []
    for mod in names:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(mod)
    return out


def how_to_create(target: str) -> str:
    return "\n".join([
        "Create the GPU environment once (Linux x86_64 with NVIDIA GPUs), from the repository root:",
        f"    conda env create -f environment.yml && conda activate {ENV_NAME}",
        "    make gpu-install        # flash-attn against that torch, then environment.lock.txt",
        f"then run `make {target}` inside the activated environment "
        f"(or pass GPU_PY=/path/to/{ENV_NAME}/bin/python).",
        f"Without a GPU, `make {target} DRY_RUN=1` prints the checks, config and commands.",
    ])


def problems(python: str | None = PYTHON, packages: bool = True, nvcc: bool = False) -> list[str]:
    out = []
    if nvcc:
        from repro.trainers.machine import lock_cuda_version, nvcc_problems  # standard library only

        out += nvcc_problems(lock_cuda_version(), "flash-attn's source build (FLASH_ATTENTION_FORCE_BUILD=TRUE)")
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python and have != python:
        out.append(f"this is Python {have} ({sys.executable}); the GPU environment is Python {python}")
    if packages:
        miss = missing_modules()
        if miss:
            out.append(f"{sys.executable} lacks " + ", ".join(m if NEEDED[m] == m else f"{m} ({NEEDED[m]})" for m in miss))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.trainers.openrlhf.preflight")
    ap.add_argument("--target", default="reproduce-1.5b", help="the make target, for the message")
    ap.add_argument("--python", default=PYTHON, help="required major.minor ('' = any)")
    ap.add_argument("--no-packages", action="store_true", help="check the Python version only")
    ap.add_argument("--nvcc", action="store_true", help="also check for an nvcc of the lock's CUDA major")
    a = ap.parse_args(argv)
    found = problems(a.python or None, packages=not a.no_packages, nvcc=a.nvcc)
    if not found:
        return 0
    print(f"make {a.target}: not in the GPU environment:", file=sys.stderr)
    for p in found:
        print(f"  - {p}", file=sys.stderr)
    print(how_to_create(a.target), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
