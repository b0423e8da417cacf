"""The weighting settings of one OpenRLHF run, and how they reach the Ray workers.

The stock OpenRLHF parser rejects unknown flags, so the launcher takes its own ``--lgrpo.*``
flags off the command line and hands these settings to every Ray worker as one JSON env var
(``LGRPO_SETTINGS``) in the runtime environment. The flags are the command-line form of the
configs' ``weighting:`` block (``repro.trainers.contract.WeightingConfig``, which validates
them): ``--lgrpo.method``, the method's parameters (``--lgrpo.r``, ``--lgrpo.sigma``,
``--lgrpo.alpha``: those of other methods are carried but unused), ``--lgrpo.init`` and
``--lgrpo.lr`` (= ``weighting.lambda.init`` / ``.lr``), plus ``--lgrpo.scope`` (the config's
top-level ``scope``) and ``--lgrpo.run_dir``. Two checks of the run itself:
``--lgrpo.record_groups N`` (whole groups per optimizer step and rank written to the run's
``groups.jsonl``, for the Eq. 20 check; 0: none) and ``--lgrpo.max_logprob_gap X`` (the run stops
when the mean |log-prob gap| between the rollout engine and the trained policy, same weights,
exceeds X: the weights did not reach the engines; 0 or less: logged, never checked).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

from repro.objective import PAPER_R, SCOPES, get_method
from repro.trainers.contract import WeightingConfig

ENV_VAR = "LGRPO_SETTINGS"


@dataclass(frozen=True)
class LambdaSettings:
    method: str = "lambda"  # a key of repro.objective.METHODS
    r: float = PAPER_R  # the reducer of Eq. 14
    lr: float = 0.1  # λ's own SGD learning rate
    init: float = 0.0  # λ at step 0
    sigma: str = "sample"  # σ convention of Eq. 12
    alpha: float = 1.0  # only for delta_l
    # group: Eq. 7's per-group 1/Σ|o| (the paper configs); batch: OpenRLHF's global token mean.
    # The default stays batch for direct launches; see paper_artifacts/choices.md, "normaliser of the step"
    scope: str = "batch"
    run_dir: str | None = None  # where metrics.jsonl goes (repro.runs layout); None: no JSONL
    record_groups: int = 2  # whole groups per optimizer step and rank written to groups.jsonl (with run_dir)
    # the largest mean |log π_engine - log π_policy| over a rollout's tokens, same weights; see patches.py
    max_logprob_gap: float = 0.1

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"lgrpo.scope {self.scope!r} is not one of {SCOPES}")
        if isinstance(self.record_groups, bool) or not isinstance(self.record_groups, int) or self.record_groups < 0:
            raise ValueError(f"lgrpo.record_groups must be an integer >= 0, got {self.record_groups!r}")
        for name in ("r", "lr", "init", "alpha", "max_logprob_gap"):  # every carried number, used by the method or not
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"lgrpo.{name} must be a finite number, got {v!r}")
        try:
            self.weighting  # noqa: B018  (the contract's validation: method, its parameters, λ's SGD)
            from repro.objective import LambdaParams
            LambdaParams(r=self.r, sigma=self.sigma)  # carried for every method: keep them valid
        except ValueError as e:
            raise ValueError(f"lgrpo: {e}") from None

    @property
    def weighting(self) -> WeightingConfig:
        """The ``weighting:`` block these flags stand for (only the method's own parameters)."""
        m = get_method(self.method)
        own = {f.name for f in fields(m.params)}
        return WeightingConfig(method=self.method,
                               params={k: getattr(self, k) for k in ("r", "sigma", "alpha") if k in own},
                               lambda_={"init": self.init, "lr": self.lr})

    @classmethod
    def from_config(cls, weighting: dict, scope: str, run_dir: str | None = None) -> "LambdaSettings":
        """From a config's ``weighting:`` block and ``scope``."""
        w = WeightingConfig.from_dict(weighting)
        return cls(method=w.method, init=w.lambda_.init, lr=w.lambda_.lr, scope=scope, run_dir=run_dir,
                   **{k: v for k, v in asdict(w.params).items() if k in ("r", "sigma", "alpha")})

    @property
    def learnable(self) -> bool:
        return get_method(self.method).learnable

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LambdaSettings":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown λ settings {sorted(unknown)}")
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
_TYPES = {f.name: f.type for f in fields(LambdaSettings)}


def split_argv(argv: list[str]) -> tuple[LambdaSettings, list[str]]:
    """Take the ``--lgrpo.NAME VALUE`` (or ``--lgrpo.NAME=VALUE``) flags off ``argv``.
    Returns the settings and the remaining (stock OpenRLHF) arguments, in order."""
    values: dict = {}
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
            if key not in _TYPES:
                raise ValueError(f"unknown flag {FLAG_PREFIX}{key}; known: {sorted(_TYPES)}")
            if key in values:
                raise ValueError(f"{FLAG_PREFIX}{key} given twice")
            typ = _TYPES[key]
            try:
                values[key] = float(val) if typ in ("float", float) else int(val) if typ in ("int", int) else val
            except ValueError:
                raise ValueError(f"{FLAG_PREFIX}{key} needs a number, got {val!r}") from None
        else:
            rest.append(a)
            i += 1
    return LambdaSettings(**values), rest


def to_flags(s: LambdaSettings) -> list[str]:
    """The ``--lgrpo.*`` flags that ``split_argv`` turns back into ``s``."""
    out: list[str] = []
    for f in fields(LambdaSettings):
        v = getattr(s, f.name)
        if v is None:
            continue
        out += [f"{FLAG_PREFIX}{f.name}", repr(v) if isinstance(v, float) else str(v)]
    return out
