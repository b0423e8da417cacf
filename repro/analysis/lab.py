"""The notebooks' working copies for ``make lab``.

JupyterLab autosaves an open notebook (outputs, execution counts) within minutes, so serving the
tracked ``notebooks/*.ipynb`` would leave a git diff after a first look. ``make lab`` serves
copies in a scratch folder instead (``lab/`` by default, git-ignored): the tracked notebooks are
never opened, a person's edits and outputs are kept in the copies between sessions.

    python -m repro.analysis.lab DEST [--src notebooks]

copies each tracked notebook that DEST lacks; when a tracked notebook has changed since its copy
was made (a ``git pull``), an untouched copy is replaced and an edited one is kept, with a line
saying so (delete the copy to get the new version). What each copy was made from is recorded in
``DEST/.copies.json`` (sha256 of the source and of the copy as written).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

STATE = ".copies.json"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def sync(src: str | Path, dest: str | Path) -> list[str]:
    """Bring the copies in ``dest`` up to date with the notebooks in ``src`` (rules in the module
    docstring); returns one line per notebook copied, replaced or kept despite a newer source."""
    src, dest = Path(src), Path(dest)
    nbs = sorted(src.glob("*.ipynb"))
    if not nbs:
        raise FileNotFoundError(f"no notebooks in {src}")
    if dest.resolve() == src.resolve():
        raise ValueError(f"the lab folder must not be the tracked notebooks' folder ({src})")
    dest.mkdir(parents=True, exist_ok=True)
    state_path = dest / STATE
    try:
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
    except json.JSONDecodeError:
        state = {}  # a damaged record: treat every existing copy as edited (kept), never overwrite it
    msgs = []
    for nb in nbs:
        copy, rec = dest / nb.name, state.get(nb.name) or {}
        src_sha = _sha(nb)
        if not copy.exists():
            verb = "copied"
        elif rec.get("source") == src_sha:
            continue
        elif rec.get("copy") == _sha(copy):
            verb = "updated (the tracked notebook changed; the copy was untouched)"
        else:
            msgs.append(f"{nb} changed since {copy} was made; your copy is kept "
                        f"(delete it and rerun `make lab` to get the new one)")
            continue
        tmp = copy.with_name(f".{copy.name}.tmp")
        shutil.copyfile(nb, tmp)
        tmp.replace(copy)
        state[nb.name] = {"source": src_sha, "copy": _sha(copy)}
        msgs.append(f"{verb}: {nb} -> {copy}")
    tmp = state_path.with_name(f".{STATE}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    tmp.replace(state_path)
    return msgs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", help="the lab's folder of working copies (make lab: LAB_DIR, default lab/)")
    ap.add_argument("--src", default=None, help="the tracked notebooks (default: <checkout>/notebooks)")
    a = ap.parse_args(argv)
    from repro.analysis.loading import repo_root

    src = Path(a.src) if a.src else repo_root() / "notebooks"
    try:
        for line in sync(src, a.dest):
            print(line)
    except (OSError, ValueError) as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2
    print(f"JupyterLab serves the copies in {a.dest}/ (git-ignored); the tracked notebooks in {src}/ stay untouched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
