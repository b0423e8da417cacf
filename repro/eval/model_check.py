"""Is this model one the evaluation can load: a checkpoint folder or a cached Hugging Face id, and its
context in tokens (read from its config as plain JSON, before anything heavy is imported).
Errors are ``UsageError``: one line, the command exits with code 2 (``repro.eval.run``)."""
from __future__ import annotations

import json
import re
from pathlib import Path


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit code 2."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model(spec: str) -> str:
    """``spec`` if it is a checkpoint folder (with ``config.json``) or a Hugging Face id (owner/name,
    whose first part is not a local folder); else a ``UsageError`` naming the fix."""
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return str(p)
        hint = (f"; a run's checkpoints are in {p / 'checkpoints'}/ (the newest: {p / 'checkpoints' / 'latest'})"
                if (p / "checkpoints").is_dir() else "")
        raise UsageError(f"--model {spec}: no config.json in that folder (a checkpoint folder holds "
                         f"config.json and the weights){hint}")
    if p.exists():
        raise UsageError(f"--model {spec}: a file, not a checkpoint folder")
    if _HUB_ID.match(spec) and not Path(spec.split("/")[0]).exists():
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(spec, "config.json"), str):
            return spec  # a Hub id in the local cache (the backends read it from there)
        raise UsageError(f"--model {spec}: no such folder, and no Hugging Face model {spec} in the local "
                         f"cache (download it first: `hf download {spec}`, or give its folder)")
    raise UsageError(f"--model {spec}: no such folder (give a checkpoint folder with config.json, "
                     f"e.g. repro/assets/tiny-sum, or a downloaded Hugging Face id owner/name)")


def _model_file(spec: str, name: str) -> Path | None:
    """``name`` (config.json, tokenizer.json) of a checkpoint folder or a cached Hub id, or None."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p / name if (p / name).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(spec, name)
    return Path(hit) if isinstance(hit, str) else None


def model_context(spec: str, max_model_len: int | None) -> int | None:
    """The model's context in tokens: its config's ``max_position_embeddings`` (or the like),
    capped by ``--max-model-len``; None if the config states none. Read from config.json as
    plain JSON (no transformers import: this check runs in a second)."""
    path = _model_file(spec, "config.json")
    try:
        cfg = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError) as e:
        raise UsageError(f"--model {spec}: cannot read {path} ({e})") from None
    cfg = {**cfg.get("text_config", {}), **cfg}
    ctx = next((int(cfg[k]) for k in ("max_position_embeddings", "n_positions", "max_sequence_length",
                                      "seq_length") if isinstance(cfg.get(k), int)), None)
    if max_model_len:
        ctx = min(ctx, int(max_model_len)) if ctx else int(max_model_len)
    return ctx
