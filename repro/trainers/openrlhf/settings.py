"""The weighting settings of one OpenRLHF run, and how they reach the Ray workers.

The stock OpenRLHF parser rejects unknown flags, so the launcher takes its own ``--lgrpo.*``
flags off the command line and hands these settings to every Ray worker as one JSON env var
(``LGRPO_SETTINGS``) in the runtime environment. The weighting travels as the configs' own
``weighting:`` block (``repro.trainers.contract.WeightingConfig``, the one parsed form, carried as
its nested dict), so any registered method with any parameters of its own rides through:
``--lgrpo.weighting.KEY VALUE`` are the block's dotted keys, spelled as ``--set`` spells them
(``--lgrpo.weighting.method lambda --lgrpo.weighting.r 0.111 --lgrpo.weighting.lambda.lr 0.1``;
values read as YAML). Beside it: ``--lgrpo.scope`` (the config's top-level ``scope``) and
``--lgrpo.run_dir``. Two checks of the run itself:
``--lgrpo.record_groups N`` (whole groups per optimizer step and rank written to the run's
``groups.jsonl``, for the Eq. 20 check; 0: none) and ``--lgrpo.max_logprob_gap X`` (the run stops
when the mean |log-prob gap| between the rollout engine and the trained policy, same weights,
exceeds X: the weights did not reach the engines; 0 or less: logged, never checked).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields

from repro.config import nest, parse_overrides
from repro.objective import SCOPES
from repro.trainers.contract import WeightingConfig

ENV_VAR = "LGRPO_SETTINGS"


@dataclass(frozen=True)
class LambdaSettings:
    # the config's weighting: block (a WeightingConfig, or its nested dict, parsed here)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    # group: Eq. 7's per-group 1/Σ|o| (the paper configs); batch: OpenRLHF's global token mean.
    # The default stays batch for direct launches; see paper_artifacts/choices.md, "normaliser of the step"
    scope: str = "batch"
    run_dir: str | None = None  # where metrics.jsonl goes (repro.runs layout); None: no JSONL
    record_groups: int = 2  # whole groups per optimizer step and rank written to groups.jsonl (with run_dir)
    # the largest mean |log π_engine - log π_policy| over a rollout's tokens, same weights; see patches.py
    max_logprob_gap: float = 0.1

    def __post_init__(self):
        if not isinstance(self.weighting, WeightingConfig):
            if not isinstance(self.weighting, dict):
                raise ValueError(f"lgrpo.weighting must be the weighting: block (a mapping), got {self.weighting!r}")
            try:
                object.__setattr__(self, "weighting", WeightingConfig.from_dict(self.weighting))
            except (ValueError, TypeError) as e:
                raise ValueError(f"lgrpo.weighting: {e}") from None
        if self.scope not in SCOPES:
            raise ValueError(f"lgrpo.scope {self.scope!r} is not one of {SCOPES}")
        if isinstance(self.record_groups, bool) or not isinstance(self.record_groups, int) or self.record_groups < 0:
            raise ValueError(f"lgrpo.record_groups must be an integer >= 0, got {self.record_groups!r}")
        v = self.max_logprob_gap
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"lgrpo.max_logprob_gap must be a finite number, got {v!r}")

    @classmethod
    def from_config(cls, weighting: dict, scope: str, run_dir: str | None = None) -> "LambdaSettings":
        """From a config's ``weighting:`` block and ``scope``."""
        return cls(weighting=weighting, scope=scope, run_dir=run_dir)

    @property
    def method(self) -> str:
        return self.weighting.method

    @property
    def learnable(self) -> bool:
        return self.weighting.learnable

    def to_json(self) -> str:
        """JSON with the weighting as the config's nested block."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["weighting"] = self.weighting.to_dict()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LambdaSettings":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown λ settings {sorted(unknown)} (this worker expects {sorted(known)})")
        return cls(**data)

    @classmethod
    def from_env(cls) -> "LambdaSettings":
        text = os.environ.get(ENV_VAR)
        if not text:
            raise RuntimeError(
                f"{ENV_VAR} is not set in this Ray worker: start training through "
                "`python -m repro.trainers.openrlhf.launch`, which sets it for every worker")
        return cls.from_json(text)


FLAG_PREFIX = "--lgrpo."
WEIGHTING_PREFIX = FLAG_PREFIX + "weighting."
_TYPES = {"scope": str, "run_dir": str, "record_groups": int, "max_logprob_gap": float}
_KNOWN = f"{WEIGHTING_PREFIX}KEY (the weighting: block's dotted keys, e.g. {WEIGHTING_PREFIX}lambda.lr 0.1), " + \
    ", ".join(FLAG_PREFIX + k for k in _TYPES)


def split_argv(argv: list[str]) -> tuple[LambdaSettings, list[str]]:
    """Take the ``--lgrpo.NAME VALUE`` (or ``--lgrpo.NAME=VALUE``) flags off ``argv``.
    Returns the settings and the remaining (stock OpenRLHF) arguments, in order."""
    values: dict = {}
    block: dict = {}  # "lambda.lr" -> 0.1: the weighting block's dotted keys
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith(FLAG_PREFIX):
            if "=" in a:
                key, val = a[len(FLAG_PREFIX):].split("=", 1)
                i += 1
            else:
                key = a[len(FLAG_PREFIX):]
                if i + 1 >= len(argv):
                    raise ValueError(f"{a} needs a value")
                val = argv[i + 1]
                i += 2
            if key.startswith("weighting.") and len(key) > len("weighting."):
                sub = key[len("weighting."):]
                if sub in block:
                    raise ValueError(f"{FLAG_PREFIX}{key} given twice")
                block.update(parse_overrides([f"{sub}={val}"]))
                continue
            if key not in _TYPES:
                raise ValueError(f"unknown flag {FLAG_PREFIX}{key}; known: {_KNOWN}")
            if key in values:
                raise ValueError(f"{FLAG_PREFIX}{key} given twice")
            typ = _TYPES[key]
            try:
                values[key] = typ(val)
            except ValueError:
                raise ValueError(f"{FLAG_PREFIX}{key} needs a number, got {val!r}") from None
        else:
            rest.append(a)
            i += 1
    if block:
        values["weighting"] = nest(block)
    return LambdaSettings(**values), rest


def _dotted(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list = []
    for k, v in d.items():
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return out


def to_flags(s: LambdaSettings) -> list[str]:
    """The ``--lgrpo.*`` flags that ``split_argv`` turns back into ``s``: the whole weighting
    block as ``--lgrpo.weighting.KEY VALUE``, then the run's own settings."""
    out: list[str] = []
    for key, v in _dotted(s.weighting.to_dict()):
        out += [f"{WEIGHTING_PREFIX}{key}", repr(v) if isinstance(v, float) else str(v)]
    for name in _TYPES:
        v = getattr(s, name)
        if v is not None:
            out += [f"{FLAG_PREFIX}{name}", repr(v) if isinstance(v, float) else str(v)]
    return out
