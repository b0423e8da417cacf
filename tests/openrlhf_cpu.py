"""Load OpenRLHF 0.11.2 on a CPU-only machine, for tests only.

`make venv` installs openrlhf and deepspeed with --no-deps plus the `openrlhf-cpu` extra. Two
GPU-only packages that OpenRLHF imports at module level, flash_attn and vllm, cannot be
installed here; ``use_stubs()`` puts ``tests/openrlhf_stubs`` (importable stand-ins that raise
when called; see the README there) on ``sys.path``, and only for a package that is really absent.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

STUBS = Path(__file__).resolve().parent / "openrlhf_stubs"


def use_stubs() -> list[str]:
    """Make flash_attn / vllm importable (stub only where the real one is missing)."""
    used = []
    for name in ("flash_attn", "vllm"):
        if name in sys.modules:
            continue
        if importlib.util.find_spec(name) is None:
            used.append(name)
    if used and str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # deepspeed: no accelerator probe noise
    return used


def stub_env() -> dict:
    """Environment for a subprocess that needs the same stand-ins."""
    env = dict(os.environ)
    repo = str(STUBS.parent.parent)  # the package itself, also where it is not pip-installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH"), str(STUBS)) if p)
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def engines_missing(names=("vllm", "ray", "deepspeed", "openrlhf")) -> str | None:
    """Why the real engines cannot run in this venv (a skip reason), or None where they can."""
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or "openrlhf_stubs" in str(spec.origin):
            return f"{name} is not installed here: the engine tests run in the engine venv (make engines; make test)"
    try:
        import vllm.platforms  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"vllm does not import here ({type(e).__name__}: {e})"
    return None
