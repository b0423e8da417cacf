"""`make artifacts` (python -m repro.artifacts): every figure exists as a non-empty PNG and PDF,
every artifact is listed in the README with the command and runs that made it."""
import re
from pathlib import Path

import pytest

from analysis_fixtures import shared_tiny_runs
from repro import artifacts

OBJECTIVE_FIGS = {"fig2a_h_spread", "fig2b_g_of_h", "f_by_method", "lambda_departure", "eq20_check"}
RUN_FIGS = {"fig4_length_entropy_reward", "lambda_trajectories", "f_spread",
            "lambda_grad_vs_len_adv_cov", "fig3_eval_accuracy"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    runs, kind = shared_tiny_runs()
    out = tmp_path_factory.mktemp("artifacts")
    (out / "choices.md").write_text("hand-written by another part\n")  # must survive and be listed
    rc = artifacts.main(["--runs", str(runs), "--out", str(out), "--no-notebooks"])
    assert rc == 0
    return runs, out


def test_every_figure_exists_as_png_and_pdf(made):
    runs, out = made
    figs = out / "figures"
    stems = {p.stem for p in figs.iterdir()}
    assert OBJECTIVE_FIGS | RUN_FIGS <= stems
    for stem in stems:
        png, pdf = figs / f"{stem}.png", figs / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000, pdf


def test_tables_and_readme(made):
    runs, out = made
    readme = (out / "README.md").read_text()
    assert f"--runs {runs}" in readme
    for p in list((out / "figures").iterdir()) + list((out / "tables").iterdir()):
        assert f"`{p.parent.name}/{p.name}`" in readme, p.name
    for t in (out / "tables").glob("*.csv"):
        assert len(t.read_text().splitlines()) >= 2, t
    assert "`choices.md`" in readme and (out / "choices.md").read_text().startswith("hand-written")
    # every markdown table row has the same number of cells as its header (no stray '|')
    for block in re.findall(r"((?:^\|.*\|\n)+)", readme, flags=re.M):
        rows = block.strip("\n").split("\n")
        n = len(re.split(r"(?<!\\)\|", rows[0]))
        assert all(len(re.split(r"(?<!\\)\|", r)) == n for r in rows), rows[0]


def test_table1_check_in_artifacts(made):
    import pandas as pd

    _, out = made
    chk = pd.read_csv(out / "tables" / "table1_average_check.csv")
    bad = chk[~chk["matches"]]
    assert list(zip(bad["size"], bad["method"])) == [("1.5B", "Base")]


def test_no_runs_says_so(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(artifacts, "objective_artifacts", lambda book: calls.append(book))  # made above
    (tmp_path / "none").mkdir()  # an empty folder (a missing one is refused: tests/test_cli_errors.py)
    rc = artifacts.main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--no-notebooks"])
    assert rc == 0 and len(calls) == 1
    readme = (tmp_path / "o" / "README.md").read_text()
    assert "No runs under" in readme and "run figures (Figs. 3-5, λ trajectories, f spread): no runs under" in readme
