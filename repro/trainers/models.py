"""Models are fetched once, before Ray: ``make models SIZE=...`` fills the Hugging Face cache, the
machine check of every ``make reproduce-*`` asks for it, and training runs with
``HF_HUB_OFFLINE=1``, so no engine, actor or tokenizer of the run goes to the Hub (about 13
processes would otherwise each fetch the model after Ray has started, and a node without Hub access
or a rate limit would fail one process at a time).

On several nodes, every node must read the same cache: put ``HF_HOME`` on the shared filesystem
(``scripts/slurm/reproduce.sbatch`` does), or run ``make models`` on each node.
"""
from __future__ import annotations

from pathlib import Path


def is_local(model: str) -> bool:
    return Path(model).is_dir()


def cached(model: str) -> str | None:
    """The local snapshot folder of a Hub model id, or None when it is not (fully) in the cache."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the local cache (or no such id)
        return None


def model_problems(models, *, target: str) -> list[str]:
    """One sentence per model the run would have to download (or cannot find), with the command."""
    out = []
    for m in dict.fromkeys(models):
        if Path(m).is_absolute() or m.startswith((".", "/")):
            if not Path(m).is_dir():
                out.append(f"model folder {m} does not exist")
            continue
        if not is_local(m) and cached(m) is None:
            out.append(f"model {m} is not in the Hugging Face cache, and the run reads it offline "
                       f"(HF_HUB_OFFLINE=1): run `make models SIZE={target.removeprefix('reproduce-')}` "
                       "on a machine with Hub access (same HF_HOME) first")
    return out


def fetch_models(models) -> int:
    """Download each Hub model into the cache (local folders are only checked). Returns an exit code."""
    rc = 0
    for m in dict.fromkeys(models):
        if Path(m).is_dir():
            print(f"{m}: a local folder, nothing to fetch")
            continue
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(m)
        except Exception as e:  # noqa: BLE001 - reported as one line
            print(f"{m}: cannot fetch ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            rc = 2
            continue
        print(f"{m}: in the cache at {path}")
    return rc
