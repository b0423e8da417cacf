"""The GPU environment (environment.yml) and the CPU set (pyproject.toml, Makefile) agree.

Where a package appears in both, the pins are equal, except for the differences listed in
``ALLOWED`` with their reason. The OpenRLHF-related pins also equal what the installed
openrlhf 0.11.2 wheel itself requires.
"""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# package -> why the GPU and CPU pins differ (documented in environment.yml's header too)
ALLOWED = {
    "transformers": "openrlhf 0.11.2 pins transformers==5.15.0 for the GPU stack; the CPU set keeps 5.24.0, "
                    "because 5.15.0 requires tokenizers<=0.23.0 and the CPU set pins tokenizers 0.23.3",
    "tokenizers": "follows transformers: 5.15.0 needs tokenizers<=0.23.0",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0].strip().lower())


def _pin_map(specs) -> dict[str, str]:
    out = {}
    for s in specs:
        s = s.split("#")[0].strip()
        if "==" in s and not s.startswith("-"):
            name, ver = s.split("==", 1)
            out[_norm(name)] = ver.split(";")[0].strip()
    return out


def gpu_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pips = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1
    post = [spec for line in (REPO / "environment.yml").read_text().splitlines()
            if line.startswith("# post-install:") for spec in line.split(":", 1)[1].split()]
    assert post, "environment.yml lost its post-install line (flash-attn)"
    return _pin_map(pips[0]["pip"] + post)


def test_machine_check_reads_the_same_pins():
    from repro.trainers.openrlhf.reproduce import environment_pins

    got = {k: v for k, v in environment_pins().items() if k not in ("python", "pip")}
    assert got == gpu_pins()
    assert got["flash-attn"] == "2.8.3"


def cpu_pins() -> dict[str, str]:
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = [s for extra in pp["project"]["optional-dependencies"].values() for s in extra]
    pins = _pin_map(specs)
    mk = (REPO / "Makefile").read_text()
    m = re.search(r"^OPENRLHF_NODEPS\s*:=\s*(.+)$", mk, re.M)
    assert m, "Makefile lacks OPENRLHF_NODEPS"
    pins.update(_pin_map(m.group(1).split()))
    torch_line = re.search(r"pip install -q (torch==[^\s]+)", mk)
    assert torch_line
    pins.update(_pin_map([torch_line.group(1)]))
    return pins


def test_every_gpu_and_cpu_requirement_is_an_exact_pin():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    loose = [s for s in pip if not s.startswith("-") and "==" not in s]
    assert not loose, f"unpinned in environment.yml: {loose}"
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    for extra, specs in pp["project"]["optional-dependencies"].items():
        assert all("==" in s for s in specs), (extra, [s for s in specs if "==" not in s])


def test_overlapping_pins_agree():
    gpu, cpu = gpu_pins(), cpu_pins()
    both = sorted(set(gpu) & set(cpu))
    assert {"torch", "openrlhf", "deepspeed", "ray", "numpy", "math-verify"} <= set(both)
    differ = {n: (gpu[n], cpu[n]) for n in both if gpu[n] != cpu[n]}
    assert set(differ) == set(ALLOWED), differ  # no undocumented difference, no stale exception


def test_gpu_pins_are_what_the_installed_openrlhf_requires():
    assert metadata.version("openrlhf") == gpu_pins()["openrlhf"]
    reqs = metadata.requires("openrlhf") or []
    exact = {}
    for r in reqs:
        m = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)\s*(;.*)?$", r)
        if m:
            extra = re.search(r'extra\s*==\s*"([^"]+)"', m.group(3) or "")
            exact[(_norm(m.group(1)), extra.group(1) if extra else None)] = m.group(2)
    gpu = gpu_pins()
    for (name, extra), ver in exact.items():
        if extra not in (None, "vllm"):
            continue
        assert gpu.get(name) == ver, f"openrlhf requires {name}=={ver} (extra {extra}); environment.yml has {gpu.get(name)}"
    assert ("transformers", None) in exact and ("vllm", "vllm") in exact


def test_vllm_and_openrlhf_agree_on_torch():
    """vllm 0.29.0 pins torch==2.13.0 (its wheel metadata, read when choosing the pins); the
    CPU set uses the same torch, so the package's math runs on the same torch version."""
    assert gpu_pins()["torch"] == cpu_pins()["torch"] == "2.13.0"


def test_gpu_environment_holds_the_whole_cpu_set():
    """The notebooks, grader and evaluation run in the GPU environment too: every package of the
    CPU set (extras cpu and test) is in environment.yml."""
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pp["project"]["optional-dependencies"]
    need = _pin_map(extras["cpu"] + extras["test"])
    missing = sorted(set(need) - set(gpu_pins()))
    assert not missing, f"in pyproject's cpu/test extras but not in environment.yml: {missing}"
