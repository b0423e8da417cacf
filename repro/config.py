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

import copy
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


def compose(paths, overrides: dict | None = None) -> dict:
    """Merge the YAML files ``paths`` in order, then ``overrides`` (nested or dotted keys)."""
    out: dict = {}
    for p in paths:
        out = merge(out, read_yaml(p))
    return merge(out, nest(overrides or {}))


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
        if "=" not in it:
            raise ValueError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
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
