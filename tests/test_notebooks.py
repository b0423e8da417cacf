"""Every notebook runs headless (nbclient, this venv's python as the kernel) top to bottom on a
small run folder made here; a failing cell fails the test."""
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from analysis_fixtures import shared_tiny_runs
from repro.artifacts import NOTEBOOKS, execute_notebook

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"


def _outputs_text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o:
                out.append(o["data"].get("text/plain", "") + o["data"].get("text/html", ""))
    return "\n".join(out)


def test_notebooks_are_clean_and_parametrised():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert 'os.environ.get("LGRPO_RUNS", "runs/demo")' in code[0].source, name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
            f"{name} is committed with outputs"
        src = "\n".join(c.source for c in code)
        # runs are read only through repro.runs / repro.analysis, never by ad-hoc paths
        assert not re.search(r"metrics\.jsonl|scores\.json|open\(|read_csv|json\.load", src), name


@pytest.fixture
def broken_user_kernelspec(tmp_path, monkeypatch):
    """A user-level 'python3' kernelspec pointing nowhere: the notebooks must not use it (the
    kernel is resolved to this venv's python without any manual kernel installation)."""
    spec = tmp_path / "jp" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "broken", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jp"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, broken_user_kernelspec):
    import sys

    runs, kind = shared_tiny_runs()
    nb = execute_notebook(NB_DIR / name, runs, tmp_path / name, timeout=300)
    text = _outputs_text(nb)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert f"run folder: {runs}" in text  # the parameter reached the notebook
    assert f"python: {sys.executable}" in text  # this venv's interpreter, not the broken spec
    n_png = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    want = {"01": 4, "02": 3, "03": 1, "04": 3}[name[:2]]
    assert n_png >= want, f"{name}: {n_png} figures, expected at least {want}"
    if name.startswith("03"):
        assert "negative control detected (all rows fail): True" in text
        m = re.search(r"(\d+)/(\d+) checks pass", text)
        assert m and m.group(1) == m.group(2), "Eq. 20 check failed (see the red rows)"
    if name.startswith("02"):
        assert re.search(r"\d+ runs, tasks", text)


def _write_nb(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_a_failing_cell_fails(tmp_path):
    path = _write_nb(tmp_path / "nb" / "bad.ipynb", "x = 1", "raise ValueError('deliberate failure 1234')")
    with pytest.raises(CellExecutionError, match="deliberate failure 1234"):
        execute_notebook(path, tmp_path, timeout=60)
