"""The run folder and the metrics JSONL schema: the one module that knows where a run keeps what.

Every trainer (the CPU reference trainer and the OpenRLHF launcher) writes runs through this
module, and the notebooks and ``paper_artifacts`` read them only through it.

Layout of one run folder::

    <run>/
      config.yaml        the resolved config the run was started with
      meta.json          seed, method, package/library versions, git commit, command line, host
      metrics.jsonl      one line per optimizer step (schema below)
      checkpoints/       step_000050/ ... (trainer-specific contents), latest -> newest
      eval/              scores.json, scores.csv, records.jsonl (the evaluation pipeline)
                         periodic.jsonl: optional, one line per in-training evaluation
                         (``Run.log_periodic_eval`` / ``Run.periodic_evals``; schema PERIODIC_EVAL)
      groups.jsonl       optional: a sample of whole groups (step, λ, r, lengths, L_i per response)
                         for checking Eq. 20 on recorded data (``Run.log_group`` / ``Run.groups``)
      tensorboard/       optional: TensorBoard event files (reference trainer ``--tensorboard``),
                         a copy of the JSONL for people who read TensorBoard; never read back here
      DONE               written last, when the run finished

Files are written atomically (temporary file + ``os.replace``); metrics lines are appended whole
and flushed, so an interrupted run keeps every step it had finished.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1

# name -> (type, meaning). Every line carries all REQUIRED keys; a value may be null where the
# quantity does not exist for a run (e.g. kl without a reference model).
REQUIRED: dict[str, tuple[type, str]] = {
    "step": (int, "optimizer steps taken so far (1 after the first update of the policy)"),
    "rollout": (int, "rollout batches generated so far"),
    "method": (str, "grpo | dapo | dr_grpo | lambda | delta_l"),
    "lambda": (float, "λ after this step (0 and constant for fixed-weight methods)"),
    "lambda_grad": (float, "∂loss/∂λ applied at this step (data-parallel mean)"),
    "f_mean": (float, "mean token-preference weight f over the step's samples"),
    "f_std": (float, "std of f over the step's samples"),
    "f_min": (float, "smallest f"),
    "f_max": (float, "largest f"),
    "reward_mean": (float, "mean reward of the step's rollouts"),
    "accuracy": (float, "share of rollouts graded correct"),
    "response_length_mean": (float, "mean response length in tokens"),
    "response_length_max": (float, "longest response in tokens"),
    "truncated_rate": (float, "share of responses cut at the max length"),
    "len_adv_cov": (float, "mean over groups of the within-group sample covariance (ddof 1) of length and advantage"),
    "entropy": (float, "mean per-token entropy of the policy on its rollouts"),
    "kl": (float, "mean per-token KL to the reference policy (k3)"),
    "clip_ratio": (float, "share of tokens whose surrogate was clipped"),
    "grad_norm": (float, "policy gradient norm before clipping"),
    "time_s": (float, "wall seconds since the run started"),
}
NULLABLE = {"kl", "entropy", "grad_norm", "lambda_grad"}

# eval/periodic.jsonl (added in schema version 1, optional): held-out evaluations during
# training, each on the same fixed problems, so that accuracy can be drawn against step.
PERIODIC_EVAL: dict[str, tuple[type, str]] = {
    "step": (int, "optimizer steps taken when evaluated (0 = the starting checkpoint)"),
    "benchmark": (str, "name of the fixed held-out subset, e.g. 'sum_heldout200'"),
    "n": (int, "problems evaluated (the same problems at every step)"),
    "decoding": (str, "'greedy'"),
    "accuracy": (float, "share graded correct (a fraction in [0, 1])"),
    "response_length_mean": (float, "mean response length in tokens"),
}


class SchemaError(ValueError):
    pass


_WEIGHTING_PARAMS = ("r", "sigma", "alpha")  # the parameters the old layouts could hold
_LAMBDA_KEYS = {"lambda_init": "init", "lambda_lr": "lr", "init": "init", "lr": "lr"}


def migrate_config(cfg: dict | None) -> dict:
    """A run's config in today's layout, where the weighting is the ``weighting:`` block
    (``{method, <the method's parameters>, lambda: {init, lr}}``, as the configs write it).

    The one reader of the two older layouts a run folder may hold, migrated here on read:
    an ``lgrpo:`` block (paper-scale configs before the trainer contract: ``method``, ``r``,
    ``sigma``, ``alpha``, ``init``, ``lr`` beside ``scope``, ``run_dir``...; the non-weighting keys
    stay in ``lgrpo:``) and flat top-level keys (reference runs before the contract: ``method``,
    ``r``, ``sigma``, ``alpha``, ``lambda_init``, ``lambda_lr``; the top-level ``method`` is kept
    and copied into the block). Of ``r``/``sigma``/``alpha`` the
    block keeps those the method takes (the old layouts carried all three for every method).
    A config that has a ``weighting:`` block is returned as it is."""
    cfg = dict(cfg or {})
    if isinstance(cfg.get("weighting"), dict):
        return cfg
    lg = cfg.get("lgrpo")
    if isinstance(lg, dict) and "method" in lg:
        rest = dict(lg)
        old = {k: rest.pop(k) for k in ("method", *_WEIGHTING_PARAMS, "init", "lr") if k in rest}
        cfg["lgrpo"] = rest
    else:
        old = {k: cfg.pop(k) for k in (*_WEIGHTING_PARAMS, "lambda_init", "lambda_lr") if k in cfg}
        if not old:  # no weighting in this config (a top-level method alone is not one)
            return cfg
        if "method" in cfg:
            old["method"] = cfg["method"]
    block: dict = {"method": old["method"]} if "method" in old else {}
    own = _method_params(old.get("method"))
    block.update({k: old[k] for k in _WEIGHTING_PARAMS if k in old and (own is None or k in own)})
    lam = {_LAMBDA_KEYS[k]: v for k, v in old.items() if k in _LAMBDA_KEYS}
    if lam:
        block["lambda"] = lam
    cfg["weighting"] = block
    return cfg


def _method_params(method) -> set | None:
    """The parameter names of a registered method; None when it is not registered."""
    import dataclasses

    from repro.objective import METHODS

    m = METHODS.get(method)
    return None if m is None else {f.name for f in dataclasses.fields(m.params)}


def dotted(d: dict, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys, as ``--set`` spells them
    (``{"weighting": {"lambda": {"lr": 0.1}}}`` -> ``{"weighting.lambda.lr": 0.1}``)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def flat_config(cfg: dict) -> dict:
    """A run's config (older layouts migrated, ``migrate_config``) as ``--set`` spells it
    (``dotted``: ``weighting.r``, ``weighting.lambda.lr``), plus the run tables' columns
    ``method``, ``r`` and ``lambda_lr``, read from those keys (``method`` from the top level where
    a config names it only there)."""
    d = dotted(migrate_config(cfg))
    return {**d, "method": d.get("weighting.method", d.get("method")), "r": d.get("weighting.r"),
            "lambda_lr": d.get("weighting.lambda.lr")}


def validate_record(rec: dict) -> dict:
    """Check one metrics line against the schema; returns it unchanged. Extra keys are allowed."""
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise SchemaError(f"metrics line lacks {missing}")
    for k, (typ, _) in REQUIRED.items():
        v = rec[k]
        if v is None:
            if k in NULLABLE:
                continue
            raise SchemaError(f"metrics field {k!r} is null")
        if typ is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise SchemaError(f"metrics field {k!r} must be an int, got {v!r}")
        elif typ is float:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise SchemaError(f"metrics field {k!r} must be a finite number, got {v!r}")
        elif not isinstance(v, typ):
            raise SchemaError(f"metrics field {k!r} must be {typ.__name__}, got {v!r}")
    return rec


# ----------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------
def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | Path, rec: dict) -> None:
    """Append one line, flushed and fsynced; a crash leaves at most a torn last line, which
    ``read_jsonl`` reports and skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(rec, sort_keys=True, default=_json_default)
    if "\n" in line:
        raise ValueError("a JSONL record must serialise to one line")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def read_jsonl(path: str | Path, *, strict: bool = False) -> list[dict]:
    """Read a JSONL file. A malformed line raises with its line number if ``strict``; otherwise
    only a torn *last* line (an interrupted append) is skipped with a warning, and a malformed
    line anywhere else still raises."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if not strict and i == len(lines):
                print(f"warning: {path}:{i}: skipping torn last line", file=sys.stderr)
                continue
            raise SchemaError(f"{path}:{i}: malformed JSON ({e.msg})") from None
    return out


# ----------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("lambda-grpo", "torch", "transformers", "tokenizers", "numpy", "openrlhf",
                 "vllm", "deepspeed", "ray", "math-verify"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if res.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return res.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


class Run:
    """One run folder. ``Run.create`` starts one; ``Run(path)`` opens an existing one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def done_path(self) -> Path:
        return self.path / "DONE"

    @property
    def groups_path(self) -> Path:
        return self.path / "groups.jsonl"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:06d}"

    # writing -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: dict, *, seed: int, method: str,
               extra_meta: dict | None = None) -> "Run":
        import yaml

        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.config_path, yaml.safe_dump(config, sort_keys=False))
        meta = {
            "schema_version": SCHEMA_VERSION,
            "seed": seed,
            "method": method,
            "versions": library_versions(),
            "git_commit": git_commit(),
            "command": sys.argv,
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta.update(extra_meta or {})
        write_json_atomic(run.meta_path, meta)
        return run

    def log(self, rec: dict) -> None:
        append_jsonl(self.metrics_path, validate_record(rec))

    def log_group(self, *, step: int, lam: float, r: float, lengths, L, **extra) -> None:
        """Record one whole group: its G response lengths and per-response surrogate sums
        L_i = Σ_t min(ρA, clip(ρ)A), with the λ and r it was weighted with (optional file)."""
        lengths = [float(x) for x in lengths]
        L = [float(x) for x in L]
        if len(lengths) != len(L) or len(lengths) < 2:
            raise ValueError(f"a group needs G >= 2 lengths and as many L, got {len(lengths)}, {len(L)}")
        if not all(math.isfinite(x) for x in lengths + L + [float(lam), float(r)]):
            raise ValueError("log_group: lengths, L, lam and r must be finite")
        append_jsonl(self.groups_path, {"step": int(step), "lambda": float(lam), "r": float(r),
                                        "lengths": lengths, "L": L, **extra})

    @property
    def periodic_evals_path(self) -> Path:
        return self.eval_dir / "periodic.jsonl"

    def log_periodic_eval(self, *, step: int, benchmark: str, ev: dict, decoding: str = "greedy") -> None:
        """Append one in-training evaluation (``ev``: the dict of ``trainers.rollout.evaluate``,
        or any dict with ``n``, ``accuracy`` and ``response_length_mean``; extra keys are kept)."""
        rec = {**ev, "step": int(step), "benchmark": str(benchmark), "decoding": decoding}
        for k, (typ, _) in PERIODIC_EVAL.items():
            v = rec.get(k)
            ok = (isinstance(v, typ) or (typ is float and isinstance(v, int))) and not isinstance(v, bool)
            if not ok or (typ is float and not math.isfinite(v)):
                raise SchemaError(f"periodic eval field {k!r} must be {typ.__name__}, got {v!r}")
        if not 0.0 <= rec["accuracy"] <= 1.0:
            raise SchemaError(f"periodic eval accuracy must be a fraction, got {rec['accuracy']!r}")
        append_jsonl(self.periodic_evals_path, rec)

    def periodic_evals(self) -> list[dict]:
        """The in-training evaluations (``[]`` if the run made none), in the order written."""
        return read_jsonl(self.periodic_evals_path) if self.periodic_evals_path.exists() else []

    def groups(self) -> list[dict]:
        """The recorded groups (``[]`` if the run recorded none)."""
        return read_jsonl(self.groups_path) if self.groups_path.exists() else []

    def mark_done(self, summary: dict | None = None) -> None:
        write_json_atomic(self.done_path, summary or {})

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metrics (and recorded-group, periodic-eval) lines after ``last_step``, for a
        resume from the checkpoint of that step."""
        for path in (self.metrics_path, self.groups_path, self.periodic_evals_path):
            if path.exists():
                keep = [r for r in read_jsonl(path) if r["step"] <= last_step]
                write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    # reading -----------------------------------------------------------------------------
    def config(self) -> dict:
        """The run's config.yaml, older layouts migrated (``migrate_config``): the weighting is
        always the ``weighting:`` block."""
        import yaml

        return migrate_config(yaml.safe_load(self.config_path.read_text()))

    def weighting(self) -> dict:
        """The config's ``weighting:`` block: ``{method, <its parameters>, lambda: {init, lr}}``."""
        return dict(self.config().get("weighting") or {})

    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text())

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [validate_record(r) for r in read_jsonl(self.metrics_path)]

    def metrics_frame(self):
        """Metrics as a pandas DataFrame with the run's method, seed and name as columns."""
        import pandas as pd

        df = pd.DataFrame(self.metrics())
        meta = self.meta()
        cfg = self.config()
        df["run"] = self.path.name
        df["seed"] = meta.get("seed")
        df["task"] = cfg.get("task", {}).get("name") if isinstance(cfg.get("task"), dict) else cfg.get("task")
        if "method" not in df:
            df["method"] = meta.get("method")
        return df

    def is_done(self) -> bool:
        return self.done_path.exists()

    def eval_scores(self) -> dict | None:
        p = self.eval_dir / "scores.json"
        return json.loads(p.read_text()) if p.exists() else None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder (a folder holding meta.json and metrics.jsonl) under ``root``, sorted."""
    root = Path(root)
    if not root.exists():
        return []
    found = {p.parent for p in root.rglob("meta.json") if (p.parent / "metrics.jsonl").exists()}
    return [Run(p) for p in sorted(found)]


def load_metrics(runs: Iterable[Run]):
    """All runs' metrics in one long DataFrame (columns: the schema + run, seed, task)."""
    import pandas as pd

    frames = [r.metrics_frame() for r in runs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(REQUIRED))
