"""Rotation of the ``{tag}_hf`` checkpoints that OpenRLHF 0.11.2 writes next to its DeepSpeed ones.

``PolicyModelActor.save_checkpoint`` (``openrlhf/trainer/ray/ppo_actor.py``) saves the DeepSpeed
state under ``ckpt.path/_actor/{tag}`` through ``strategy.save_ckpt``, which keeps at most
``ckpt.max_num`` of them, and, with ``--ckpt.save_hf``, a Hugging Face copy under
``ckpt.path/{tag}_hf``, which nothing removes (about 15 GB each for a 7B model in bf16). This
applies the same rule to those copies: the newest ``max_num`` regular ones (``global_step{N}_hf``)
are kept, and of the ``best_global_step{N}_hf`` ones (saved with ``ckpt.best_metric_key``) only
the newest, as ``save_ckpt`` does for its ``best*`` tags. Nothing else in the folder is touched.
Pure Python, no OpenRLHF import; ``patches`` calls it on rank 0 after each save.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

_HF_TAG = re.compile(r"^(best_)?global_step(\d+)_hf$")


def rotate_hf_checkpoints(ckpt_path: str | Path, max_num: int) -> list[Path]:
    """Delete the ``*_hf`` folders of ``ckpt_path`` beyond the newest ``max_num`` (regular) and the
    newest one (best); returns what was deleted, oldest first."""
    if max_num < 1:
        raise ValueError(f"ckpt.max_num must be >= 1, got {max_num}")
    root = Path(ckpt_path)
    if not root.is_dir():
        return []
    regular, best = [], []
    for d in root.iterdir():
        m = _HF_TAG.match(d.name)
        if m and d.is_dir() and not d.is_symlink():
            (best if m.group(1) else regular).append((int(m.group(2)), d))
    doomed = sorted(regular)[:-max_num] + sorted(best)[:-1]
    for _, d in sorted(doomed):
        shutil.rmtree(d)
    return [d for _, d in sorted(doomed)]
