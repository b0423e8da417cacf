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


def test_jupyter_nbconvert_executes_a_notebook(tmp_path):
    """`jupyter nbconvert --execute` (not only repro.artifacts' nbclient) runs a notebook with
    this venv's kernel; the objective-only notebook needs no runs."""
    import os
    import subprocess
    import sys

    name = "01_weighting_functions.ipynb"
    env = {**os.environ, "LGRPO_RUNS": str(tmp_path / "no-runs")}
    res = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                          "--output-dir", str(tmp_path), str(NB_DIR / name)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    nb = nbformat.read(tmp_path / name, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) >= 4


def test_make_lab_serves_the_notebooks(tmp_path):
    """`make lab` starts JupyterLab on notebooks/ with the runs folder passed on; checked
    through the server's REST API (the contents and a kernel of this venv)."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "lgrpo-test"
    args = f"--no-browser --port={port} --IdentityProvider.token={token} --ServerApp.ip=127.0.0.1"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    # -o venv: use the venv as it is (make test has just built it)
    proc = subprocess.Popen(["make", "-s", "-o", "venv", "lab", f"LAB_RUNS={tmp_path}", f"LAB_ARGS={args}",
                             f"VENV={Path(sys.executable).parents[1]}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=10) as r:
                return json.loads(r.read())

        deadline = time.time() + 240
        while True:
            try:
                contents = get("/api/contents/")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"jupyter lab did not start: {proc.stdout.read().decode()[-3000:]}")
                time.sleep(1)
        assert sorted(c["name"] for c in contents["content"] if c["name"].endswith(".ipynb")) == sorted(NOTEBOOKS)
        specs = get("/api/kernelspecs")
        assert "python3" in specs["kernelspecs"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
