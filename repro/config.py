"""Configs as a base plus small overrides: the one place that composes YAML layers.

    repro/configs/cpu/base.yaml            every setting of the CPU reproduction, once
    repro/configs/cpu/tasks/<task>.yaml    what a task changes (sum, budget)
    repro/configs/cpu/methods/<m>.yaml     what a method changes (its ``weighting:`` block, ...)
    repro/configs/paper/base.yaml          every setting of the paper-scale (OpenRLHF) runs, once
    repro/configs/paper/sizes/<size>.yaml  what a model size changes (model, GPUs, ZeRO stage)
    repro/configs/paper/methods/<m>.yaml   what a method changes

Layers are merged in that order (mappings merge key by key, anything else replaces), then the
command line's ``--set key=value`` overrides (dotted keys reach into mappings:
``--set weighting.lambda.lr=10``). Plain YAML and dicts; the trainers turn the result into
their typed configs (``repro.trainers.reference.TrainConfig``, ``openrlhf.reproduce``).
"""
from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CPU_DIR = CONFIG_DIR / "cpu"
PAPER_DIR = CONFIG_DIR / "paper"


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base`` (a new dict): nested mappings merge, other values replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no config file {p}")
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a config file must be a mapping, got {type(d).__name__}")
    return d


class ConfigError(ValueError):
    """A bad config or ``--set`` value, said in one line (``config_errors`` prints it)."""


def compose(paths, overrides: dict | None = None) -> dict:
    """Merge the YAML files ``paths`` in order, then ``overrides`` (nested or dotted keys), each
    checked against the type of the value it replaces (``check_types``)."""
    out: dict = {}
    for p in paths:
        out = merge(out, read_yaml(p))
    check_types(out, overrides or {})
    return merge(out, nest(overrides or {}))


def _type_name(v) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping", list: "a list"}.get(type(v), type(v).__name__)


def _is_number(v) -> bool:
    """int, float, or a string float() reads (YAML 1.1 reads ``1e-4``, without a dot, as a string)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    try:
        float(v)
        return isinstance(v, str)
    except (TypeError, ValueError):
        return False


def check_types(base: dict, overrides: dict) -> None:
    """Each dotted override against the value the layers give that key: a number where a number
    is, true/false where a flag is, a mapping where a mapping is (an int for a float is fine; a
    key the layers do not set, or set to null, is left to the trainer's own checks)."""
    for key, v in overrides.items():
        old, d = None, base
        for part in str(key).split("."):
            if not isinstance(d, dict) or part not in d:
                old = None
                break
            old = d = d[part]
        if old is None:
            continue
        ok = (isinstance(v, bool) if isinstance(old, bool) else
              isinstance(v, int) and not isinstance(v, bool) if isinstance(old, int) else
              _is_number(v) if isinstance(old, float) else
              isinstance(v, dict) if isinstance(old, dict) else
              isinstance(v, list) if isinstance(old, list) else True)
        if not ok:
            raise ConfigError(f"--set {key}={v!r}: expected {_type_name(old)} (the config has {old!r})")


@contextlib.contextmanager
def config_errors(prog: str):
    """Turn a bad config into one line on stderr and exit code 2: wrap the reading, composing and
    validating of a command's config (not the run itself) in ``with config_errors(prog):``."""
    try:
        yield
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        msg = str(e).strip().replace("\n", " ") or type(e).__name__
        print(f"{prog}: bad config: {msg}", file=sys.stderr)
        raise SystemExit(2) from None


def nest(flat: dict) -> dict:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
    out: dict = {}
    for k, v in flat.items():
        parts = str(k).split(".")
        d = out
        for part in parts[:-1]:
            d = d.setdefault(part, {})
            if not isinstance(d, dict):
                raise ValueError(f"override {k!r} reaches into {part!r}, which is not a mapping")
        d[parts[-1]] = merge(d[parts[-1]], v) if isinstance(v, dict) and isinstance(d.get(parts[-1]), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["steps=6", "weighting.lambda.lr=10"]`` -> ``{"steps": 6, "weighting.lambda.lr": 10}``
    (values read as YAML)."""
    out = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set steps=20), got {it!r}")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            where = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"--set {it}: {v!r} is not a YAML value ({where}); quote a string: "
                              f"--set '{k.strip()}=\"...\"'") from None
    return out


def _layer(folder: Path, kind: str, name: str) -> Path:
    p = folder / kind / f"{name}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in (folder / kind).glob("*.yaml"))
        raise ValueError(f"no {kind[:-1]} {name!r} in {folder / kind} (known: {known})")
    return p


def cpu_layers(task: str, method: str) -> list[Path]:
    """The files of the CPU config for (task, method), in merge order."""
    return [CPU_DIR / "base.yaml", _layer(CPU_DIR, "tasks", task), _layer(CPU_DIR, "methods", method)]


def cpu_tasks() -> list[str]:
    return sorted(p.stem for p in (CPU_DIR / "tasks").glob("*.yaml"))


def cpu_methods() -> list[str]:
    return sorted(p.stem for p in (CPU_DIR / "methods").glob("*.yaml"))


def paper_layers(size: str, method: str) -> list[Path]:
    """The files of the paper-scale config for (model size, method), in merge order."""
    return [PAPER_DIR / "base.yaml", _layer(PAPER_DIR, "sizes", size), _layer(PAPER_DIR, "methods", method)]


def paper_sizes() -> list[str]:
    def key(s):  # by parameter count; sizes without a number (tiny) first
        try:
            return (1, float(s.rstrip("b")))
        except ValueError:
            return (0, 0.0)

    return sorted((p.stem for p in (PAPER_DIR / "sizes").glob("*.yaml")), key=key)


def paper_methods() -> list[str]:
    return sorted(p.stem for p in (PAPER_DIR / "methods").glob("*.yaml"))
