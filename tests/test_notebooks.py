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


def test_headless_kernel_is_encrypted(tmp_path, capfd):
    """The kernel execute_notebook starts has CurveZMQ keys from its manager, and ipykernel's
    "running over TCP without encryption" warning is not printed."""
    import zmq

    if not zmq.has("curve"):
        pytest.skip("this pyzmq has no CurveZMQ (libsodium)")
    path = _write_nb(tmp_path / "nb" / "k.ipynb", "from ipykernel.kernelapp import IPKernelApp\n"
                     "app = IPKernelApp.instance()\nprint('curve:', app.curve_secretkey is not None, app.transport)")
    nb = execute_notebook(path, tmp_path, timeout=120)
    assert "curve: True tcp" in _outputs_text(nb)
    assert "without encryption" not in capfd.readouterr().err


def test_jupyter_nbconvert_executes_a_notebook(tmp_path):
    """`jupyter nbconvert --execute` (not only repro.artifacts' nbclient) runs a notebook with
    this venv's kernel; the objective-only notebook needs no runs."""
    import os
    import subprocess
    import sys

    name = "01_weighting_functions.ipynb"
    env = {**os.environ, "LGRPO_RUNS": str(tmp_path / "no-runs")}
    res = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                          "--KernelManager.transport_encryption=auto",  # as the README says
                          "--output-dir", str(tmp_path), str(NB_DIR / name)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "without encryption" not in res.stderr
    nb = nbformat.read(tmp_path / name, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) >= 4


def _execute_over_websocket(port: int, token: str, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel of the server through its websocket channel (what the browser
    does); returns what the cell printed."""
    import asyncio
    import uuid

    from tornado.websocket import websocket_connect

    async def run() -> str:
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}")
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out = []
        while True:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            assert raw is not None, "the kernel's websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise AssertionError(msg["content"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                ws.close()
                return "".join(out)

    return asyncio.run(run())


def test_make_lab_serves_copies_and_an_encrypted_kernel(tmp_path):
    """`make lab` starts JupyterLab on working copies of notebooks/ (in LAB_DIR) with the runs
    folder passed on, checked through the server's REST API: the copies are listed, saving one
    through the API (what autosave does) leaves the tracked notebooks byte-identical and
    `git status` clean, and a kernel started by the server runs code over CurveZMQ (the
    server's log has no "running over TCP without encryption" warning)."""
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
    import zmq

    if not zmq.has("curve"):
        pytest.skip("this pyzmq has no CurveZMQ (libsodium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "lgrpo-test"
    lab = tmp_path / "lab"
    tracked = {p.name: p.read_bytes() for p in NB_DIR.glob("*.ipynb")}
    git = shutil.which("git") and (ROOT / ".git").exists()
    status0 = subprocess.run(["git", "status", "--porcelain", "--", "notebooks"], cwd=ROOT, capture_output=True,
                             text=True).stdout if git else ""
    args = f"--no-browser --port={port} --IdentityProvider.token={token} --ServerApp.ip=127.0.0.1"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    log = tmp_path / "lab.log"
    # -o venv: use the venv as it is (make test has just built it)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["make", "-s", "-o", "venv", "lab", f"LAB_RUNS={tmp_path}", f"LAB_DIR={lab}",
                                 f"LAB_ARGS={args}", f"VENV={Path(sys.executable).parents[1]}"],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def api(path, method="GET", body=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?token={token}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")

        deadline = time.time() + 240
        while True:
            try:
                contents = api("/api/contents/")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"jupyter lab did not start: {log.read_text()[-3000:]}")
                time.sleep(1)
        assert sorted(c["name"] for c in contents["content"] if c["name"].endswith(".ipynb")) == sorted(NOTEBOOKS)
        assert "python3" in api("/api/kernelspecs")["kernelspecs"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        # save a notebook with an output through the API, as the lab's autosave does
        name = NOTEBOOKS[0]
        model = api(f"/api/contents/{name}")
        cell = next(c for c in model["content"]["cells"] if c["cell_type"] == "code")
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "autosaved output\n"}]
        cell["execution_count"] = 1
        api(f"/api/contents/{name}", "PUT", {"type": "notebook", "format": "json", "content": model["content"]})
        assert "autosaved output" in (lab / name).read_text()  # the copy was written ...
        assert {p.name: p.read_bytes() for p in NB_DIR.glob("*.ipynb")} == tracked  # ... the tracked one not
        if git:
            assert subprocess.run(["git", "status", "--porcelain", "--", "notebooks"], cwd=ROOT, capture_output=True,
                                  text=True).stdout == status0
        # a kernel of the server, used as the browser uses it
        kernel = api("/api/kernels", "POST", {"name": "python3"})
        out = _execute_over_websocket(port, token, kernel["id"], "import os; print('runs:', os.environ['LGRPO_RUNS'])")
        assert out.strip() == f"runs: {tmp_path}"
        api(f"/api/kernels/{kernel['id']}", "DELETE")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert "copied: " in text and str(lab) in text
    assert "without encryption" not in text, text[-3000:]


@pytest.mark.parametrize("name", ["02_lambda_trajectories.ipynb", "04_length_entropy_dynamics.ipynb"])
def test_one_seed_folder_prints_no_nan(name, tmp_path):
    """On a folder with one seed per method the tables print no NaN (no std of one value)."""
    from analysis_fixtures import synthetic_runs

    synthetic_runs(tmp_path / "runs", seeds=(0,), steps=12)
    nb = execute_notebook(NB_DIR / name, tmp_path / "runs", timeout=300)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    text = _outputs_text(nb)
    assert "run folder:" in text and not re.search(r"\bNaN\b|\bnan\b", text)
