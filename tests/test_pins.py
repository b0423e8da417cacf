"""The GPU set (environment.in -> environment.lock.txt, environment.yml) and the CPU set
(pyproject.toml, Makefile) agree, and the GPU set still resolves to its lock.

Where a package appears in both sets the pins are equal, except for the differences listed in
``ALLOWED`` with their reason. The OpenRLHF-related pins also equal what the installed
openrlhf 0.11.2 wheel itself requires.

``test_the_gpu_set_still_resolves_to_the_lock`` runs the real resolver (uv, pinned in
pyproject's ``lock`` extra) against PyPI's metadata: no wheel is downloaded or installed (uv
reads two source archives' static PKG-INFO: deepspeed and flash-attn). It needs PyPI, which CI
and the developers' machines reach; LGRPO_OFFLINE=1 skips it on a machine without network.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "environment.lock.txt"
UV = Path(sys.executable).parent / "uv"

# package -> why the GPU and CPU pins differ (documented in environment.in too)
ALLOWED = {
    "transformers": "openrlhf 0.11.2 pins transformers==5.15.0 for the GPU stack; the CPU set keeps 5.24.0, "
                    "because 5.15.0 requires tokenizers<=0.23.0 and the CPU set pins tokenizers 0.23.3",
    "tokenizers": "follows transformers: 5.15.0 needs tokenizers>=0.22.0,<=0.23.0, so the GPU set has 0.22.2",
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


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def direct_gpu_pins() -> dict[str, str]:
    return _pin_map(_lines(REPO / "environment.in"))


def gpu_pins() -> dict[str, str]:
    """The lock, parsed here independently of repro.trainers.openrlhf.environment.lock_pins."""
    return _pin_map(_lines(LOCK))


def env_yml() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def make_commands(target: str) -> list[str]:
    """The shell commands ``make TARGET`` runs, as make expands them (``make -n -B``: printed,
    nothing run), so the tests read what the Makefile does, not how its text is written."""
    res = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return [ln for ln in res.stdout.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def lock_flags() -> list[str]:
    """The resolver flags of ``make lock`` (its ``uv pip compile`` command, less its input, output,
    header and verbosity options)."""
    cmd = next(shlex.split(c) for c in make_commands("lock") if " pip compile " in c)
    args, out, skip = cmd[cmd.index("compile") + 2:], [], {"-o": 1, "--custom-compile-command": 1, "-q": 0}
    while args:
        a = args.pop(0)
        if a in skip:
            del args[:skip[a]]
        else:
            out.append(a)
    assert "--exclude-newer" in out, cmd
    return out


def cpu_pins() -> dict[str, str]:
    """The CPU set: pyproject's extras and what ``make venv`` installs beside them (torch first,
    OpenRLHF and DeepSpeed --no-deps)."""
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = [s for extra in pp["project"]["optional-dependencies"].values() for s in extra]
    pins = _pin_map(specs)
    installs = [shlex.split(c) for c in make_commands("venv") if " pip install " in c]
    pins.update(_pin_map(a for c in installs for a in c))
    assert {"torch", "openrlhf", "deepspeed"} <= set(_pin_map(a for c in installs for a in c))
    return pins


# ----------------------------------------------------------------------------------------------
# the files agree
# ----------------------------------------------------------------------------------------------
def test_every_requirement_is_an_exact_pin():
    loose = [s for s in _lines(REPO / "environment.in") if "==" not in s]
    assert not loose, f"unpinned in environment.in: {loose}"
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    for extra, specs in pp["project"]["optional-dependencies"].items():
        assert all("==" in s for s in specs), (extra, [s for s in specs if "==" not in s])
    # the lock: one exact pin per line, no environment markers (one platform, one Python)
    bad = [ln for ln in _lines(LOCK) if not ln.startswith(" ") and not re.fullmatch(r"[a-z0-9][a-z0-9._-]*==\S+", ln)]
    assert not bad, bad


def test_the_lock_holds_every_direct_pin_at_its_version():
    direct, lock = direct_gpu_pins(), gpu_pins()
    assert len(lock) > 300  # the full transitive set (327 when written)
    differ = {n: (v, lock.get(n)) for n, v in direct.items() if lock.get(n) != v}
    assert not differ, f"environment.in and environment.lock.txt disagree (run make lock): {differ}"
    assert lock["flash-attn"] == "2.8.3" and lock["tokenizers"] == "0.22.2"
    assert tuple(map(int, lock["numpy"].split(".")[:2])) < (2, 4)  # mistral-common's bound


def test_environment_yml_installs_from_the_lock():
    env = env_yml()
    assert env["name"] == "lambda-grpo-gpu"
    deps = env["dependencies"]
    pips = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1
    pip = pips[0]
    assert "-c environment.lock.txt" in pip  # step 1 installs at the lock's versions
    pins = _pin_map(pip)
    lock = gpu_pins()
    assert "torch" in pins and "flash-attn" not in pins and "openrlhf" not in pins  # steps 2 and 3
    assert {n: v for n, v in pins.items() if lock.get(n) != v} == {}
    # the conda Python is the one the lock was resolved for
    py = [d for d in deps if isinstance(d, str) and d.startswith("python=")]
    flags = lock_flags()
    assert py == [f"python={flags[flags.index('--python-version') + 1]}"]
    assert "x86_64-manylinux_2_28" in flags


def test_machine_check_reads_the_lock():
    from repro.trainers.openrlhf.environment import environment_python, lock_pins

    assert lock_pins() == gpu_pins()
    assert environment_python() == "3.11"


def test_machine_check_lists_what_differs():
    from repro.trainers.openrlhf.environment import MAX_LISTED, package_problems

    installed = {"torch": "2.13.0+cu130", "numpy": "2.4.6"}

    def version_of(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    pins = {"torch": "2.13.0", "numpy": "2.3.5", "vllm": "0.29.0"}
    assert package_problems(pins, version_of) == [
        "1 of the 3 locked packages are not installed: vllm==0.29.0 "
        "(environment.yml's header: conda env create, then make gpu-install)",
        "numpy is 2.4.6, environment.lock.txt pins 2.3.5",
    ]
    assert package_problems({"torch": "2.13.0"}, version_of) == []  # a local +cu tag is the same release
    many = {f"p{i}": "1" for i in range(MAX_LISTED + 5)}
    out = package_problems(many, version_of)
    assert len(out) == 1 and out[0].startswith(f"{MAX_LISTED + 5} of the {MAX_LISTED + 5}") and "and 5 more" in out[0]


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
        assert gpu.get(name) == ver, f"openrlhf requires {name}=={ver} (extra {extra}); the lock has {gpu.get(name)}"
    assert ("transformers", None) in exact and ("vllm", "vllm") in exact


def test_vllm_and_openrlhf_agree_on_torch():
    """vllm 0.29.0 pins torch==2.13.0 (the resolve test below checks it with vllm's metadata);
    the CPU set uses the same torch, so the package's math runs on the same torch version."""
    assert gpu_pins()["torch"] == cpu_pins()["torch"] == "2.13.0"


def test_gpu_environment_holds_the_whole_cpu_set():
    """The notebooks, grader and evaluation run in the GPU environment too: every package of the
    CPU set (extras cpu and test) is in environment.in and so in the lock."""
    pp = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pp["project"]["optional-dependencies"]
    need = _pin_map(extras["cpu"] + extras["test"])
    missing = sorted(set(need) - set(direct_gpu_pins()))
    assert not missing, f"in pyproject's cpu/test extras but not in environment.in: {missing}"


# ----------------------------------------------------------------------------------------------
# the real resolver (PyPI metadata, no wheel downloaded)
# ----------------------------------------------------------------------------------------------
def _compile(req: Path, *extra: str) -> subprocess.CompletedProcess:
    if os.environ.get("LGRPO_OFFLINE") == "1":
        pytest.skip("LGRPO_OFFLINE=1: the resolve check needs PyPI")
    assert UV.exists(), f"{UV} missing: make venv installs uv from pyproject's lock extra"
    cmd = [str(UV), "pip", "compile", str(req), *lock_flags(), "--no-header", "--no-annotate", "-q", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_the_gpu_set_still_resolves_to_the_lock():
    """environment.in, resolved with the lock as constraints, gives exactly the lock: every locked
    version still exists on PyPI, they are mutually compatible (with the metadata of torch, vllm,
    openrlhf, flash-attn...), and the lock has nothing that environment.in does not need."""
    res = _compile(REPO / "environment.in", "-c", str(LOCK))
    assert res.returncode == 0, res.stderr
    assert _pin_map(res.stdout.splitlines()) == gpu_pins()


def test_the_resolver_refuses_the_old_pins(tmp_path):
    """The check can fail: the pin the old environment.yml had (tokenizers 0.23.0, never
    released) does not resolve."""
    bad = tmp_path / "old.in"
    bad.write_text((REPO / "environment.in").read_text().replace("tokenizers==0.22.2", "tokenizers==0.23.0"))
    res = _compile(bad)
    assert res.returncode != 0 and "tokenizers==0.23.0" in res.stderr, res.stderr


def test_environment_yml_step_one_resolves_within_the_lock(tmp_path):
    """What `conda env create` installs with pip (torch and flash-attn's build tools, under the
    lock as constraints) resolves, and to the lock's versions."""
    step1 = tmp_path / "condaenv.requirements.txt"
    pip = next(d["pip"] for d in env_yml()["dependencies"] if isinstance(d, dict))
    step1.write_text("\n".join(s for s in pip if not s.startswith("-c")) + "\n")
    res = _compile(step1, "-c", str(LOCK))
    assert res.returncode == 0, res.stderr
    got, lock = _pin_map(res.stdout.splitlines()), gpu_pins()
    assert "torch" in got and {n: v for n, v in got.items() if lock.get(n) != v} == {}
