"""Regenerate every figure and table the package can make from the runs present.

    python -m repro.artifacts --runs runs/demo                 # = make artifacts RUNS=runs/demo -> runs/demo/artifacts
    python -m repro.artifacts --runs runs/reproduce-cpu --paper  # = make artifacts PAPER=1 ...: regenerates paper_artifacts/
    python -m repro.artifacts --runs runs/demo --out /tmp/a --no-notebooks

The output folder is ``<runs>/artifacts`` unless ``--out`` says otherwise; the committed
``paper_artifacts/`` is written only with ``--paper`` (an ``--out`` there without it is refused).

Writes ``<out>/figures/*.png|pdf``, ``<out>/tables/*.csv``, the four notebooks executed headless
on the same runs (``<out>/notebooks/*.ipynb``), and ``<out>/README.md``, which says for each
artifact which command made it, from which runs, and how it compares with the paper.
Figures come from the functions of ``repro.analysis`` that the notebooks also call, Table 1 from
``repro.paper``; runs are read only through ``repro.runs``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NOTEBOOKS = ("01_weighting_functions.ipynb", "02_lambda_trajectories.ipynb",
             "03_eq20_gradient_check.ipynb", "04_length_entropy_dynamics.ipynb")
COMMAND = "python -m repro.artifacts --runs {runs} --out {out}"
# files in paper_artifacts/ that other parts of the package write by hand or by other commands
KNOWN_FILES = {
    "table1_paper.csv": "the paper's Table 1, entered by hand (checked by tests/test_table1.py)",
    "table1_paper.md": "where table1_paper.csv comes from and how its columns map to the paper",
    "choices.md": "the paper-scale (OpenRLHF) configuration choices, with evidence and alternatives",
    "underspecified.md": "the paper's under-specified points and inconsistencies, with the package's choice for each",
    "cpu_results.md": "the CPU reproduction's table and figures (`python -m repro.demo --full ... --artifacts paper_artifacts`)",
    "ablation_cpu.md": "the CPU ablation of λ's learning rate × r (`make ablation-cpu`), with its reading",
    "ablation_cpu.csv": "the CPU ablation's table as CSV (`make ablation-cpu`)",
}


# ----------------------------------------------------------------------------------------------
# executing notebooks headless
# ----------------------------------------------------------------------------------------------
def _this_python_kernel_manager_class():
    """A kernel manager class whose 'python3' kernel is *this* interpreter (ipykernel in the same
    venv), whatever kernelspecs the user has installed: no manual kernel installation; its
    transport is encrypted with CurveZMQ keys the manager provisions (where pyzmq has CurveZMQ)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    import zmq

    curve = zmq.has("curve")

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(name="python3", display_name=f"Python ({sys.executable})",
                              language="python",
                              argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              metadata={"supported_encryption": ["curve"]} if curve else {})

    class ThisPythonKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return ThisPythonSpecs(data_dir=self.data_dir)

        # CurveZMQ keys provisioned by the kernel manager (jupyter_client's transport_encryption),
        # the supported way to avoid ipykernel's "running over TCP without encryption" warning
        @default("transport_encryption")
        def _transport_encryption_default(self):
            return "auto" if curve else "disabled"

    return ThisPythonKernelManager


def execute_notebook(path: str | Path, runs_dir: str | Path, out_path: str | Path | None = None,
                     *, timeout: int = 600, extra_env: dict | None = None):
    """Run a notebook top to bottom with ``LGRPO_RUNS=runs_dir``; raises
    ``nbclient.exceptions.CellExecutionError`` (naming the cell) if any cell fails. Writes the
    executed notebook to ``out_path`` if given. Returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    from repro.analysis import RUNS_ENV, repo_root
    from repro.runs import write_text_atomic

    path = Path(path)
    try:  # the kernel starts in the checkout holding the notebook, else beside this package
        root = repo_root(path.resolve().parent)
    except FileNotFoundError:
        root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env[RUNS_ENV] = str(Path(runs_dir).resolve())
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MPLBACKEND", None)  # the kernel's inline backend
    env.update(extra_env or {})
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            kernel_manager_class=_this_python_kernel_manager_class(),
                            resources={"metadata": {"path": str(root)}})
    client.execute(env=env, cwd=str(root))
    if out_path is not None:
        write_text_atomic(out_path, nbformat.writes(nb))
    return nb


# ----------------------------------------------------------------------------------------------
# the artifacts
# ----------------------------------------------------------------------------------------------
@dataclass
class Artifact:
    name: str
    files: list[str]
    made_by: str
    runs: str
    paper: str


@dataclass
class Book:
    out: Path
    items: list[Artifact] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def fig(self, fig, stem: str, made_by: str, runs: str, paper: str) -> None:
        import matplotlib.pyplot as plt

        d = self.out / "figures"
        d.mkdir(parents=True, exist_ok=True)
        files = []
        for ext in ("png", "pdf"):
            p = d / f"{stem}.{ext}"
            tmp = d / f".{stem}.tmp.{ext}"
            fig.savefig(tmp, dpi=150 if ext == "png" else None, bbox_inches="tight")
            os.replace(tmp, p)
            files.append(str(p.relative_to(self.out)))
        plt.close(fig)
        self.items.append(Artifact(stem, files, made_by, runs, paper))

    def table(self, df, stem: str, made_by: str, runs: str, paper: str, floatfmt: str = "%.6g") -> None:
        from repro.runs import write_text_atomic

        p = self.out / "tables" / f"{stem}.csv"
        write_text_atomic(p, df.to_csv(index=False, float_format=floatfmt))
        self.items.append(Artifact(stem, [str(p.relative_to(self.out))], made_by, runs, paper))


def _by(func) -> str:
    """Where ``func`` is written: 'module.name' (the "made by" column of the README)."""
    return f"{func.__module__}.{func.__qualname__}"


def _runs_label(found, root: Path) -> str:
    if not found:
        return "none (objective only)"
    names = sorted({str(r.path.relative_to(root)) if r.path.is_relative_to(root) else str(r.path)
                    for r in found})
    return f"{len(names)} runs (see 'Runs used')" if len(names) > 6 else ", ".join(f"`{n}`" for n in names)


def objective_artifacts(book: Book) -> None:
    from repro import analysis as an

    tab, samples = an.h_spread_table(G=8)
    book.fig(an.fig_h_spread(samples, 8), "fig2a_h_spread", _by(an.fig_h_spread), "none",
             "Paper Fig. 2a draws h for r = 1/30, 1/15, 1/9 assuming |z| ≤ 3; with G = 8 and sample σ, "
             "|z| ≤ (G−1)/√G, so the reachable h range is narrower (see tables/h_spread.csv).")
    book.table(tab, "h_spread", _by(an.h_spread_table), "none",
               "columns 'paper range' are the paper's [1−3r, 1+3r]; 'bound' is the exact range for G = 8.")
    book.fig(an.fig_g_of_h(), "fig2b_g_of_h", _by(an.fig_g_of_h), "none",
             "Paper Fig. 2b: same construction (g = h^λ), computed by repro.objective.eq15_g.")
    q = an.normal_quantile_group(8)
    mt = an.methods_table(q)
    book.fig(an.fig_f_methods(mt), "f_by_method", _by(an.fig_f_methods), "none",
             "Not in the paper as a figure; Eq. 8-10 and 16 (plus ΔL) evaluated on one G = 8 group.")
    book.table(mt, "f_by_method", _by(an.methods_table), "none", "Eq. 8-10, 16 on one group.")
    book.fig(an.fig_departure(q), "lambda_departure", _by(an.fig_departure), "none",
             "Not in the paper: how far λ must move before f departs from 1 (r = 1/9, G = 8).")
    book.table(an.lambda_needed_table(), "lambda_needed", _by(an.lambda_needed_table), "none",
               "Not in the paper: λ for a 5% / 20% departure of f from 1, exact and first order.")
    grid = an.eq20_grid()
    book.fig(an.fig_eq20(grid), "eq20_check", _by(an.fig_eq20), "none",
             f"Appendix C, Eq. 20 vs autograd: {int(grid['pass'].sum())}/{len(grid)} (λ, r, G) cells "
             f"within {an.RTOL_EQ20:g}.")
    book.table(grid, "eq20_check", _by(an.eq20_grid), "none", "Appendix C, Eq. 20.")


def run_artifacts(book: Book, found, df, runs_label: str, runs_root: Path) -> list[str]:
    """Figures and tables from the runs; returns computed sentences for the README."""
    from repro import analysis as an

    notes = []
    dyn = ["response_length_mean", "truncated_rate", "entropy", "reward_mean", "accuracy"]
    ev = an.eval_frame(found, runs_root)
    per = an.periodic_evals(ev)
    if len(per) or ("eval_accuracy" in df and df["eval_accuracy"].notna().any()):
        dyn.append("eval_accuracy")
    book.fig(an.fig_metric_bands(df, dyn, evals=ev if len(per) else None), "fig4_length_entropy_reward",
             _by(an.fig_metric_bands), runs_label,
             "Paper Fig. 4 (entropy, response length; Qwen2.5-3B, one seed). CPU runs use a "
             "0.5 M-parameter model on a synthetic task: compare shapes and method ordering, not values. "
             "Training curves are smoothed; the held-out accuracy panel draws every in-training "
             "evaluation (step 0 included), unsmoothed.")
    summ = an.method_summary(df)
    book.table(an.run_summary(df), "run_summary", _by(an.run_summary), runs_label,
               "no paper counterpart (the paper reports no per-run dynamics tables).")
    book.table(summ, "method_summary", _by(an.method_summary), runs_label,
               "mean ± std over seeds of the last 10% of steps; the paper has one seed per method.")
    if (df["method"] == "lambda").any():
        book.fig(an.fig_lambda_trajectories(df), "lambda_trajectories", _by(an.fig_lambda_trajectories),
                 runs_label, "Not reported in the paper (reviewers asked for λ trajectories).")
        book.fig(an.fig_f_spread(df), "f_spread", _by(an.fig_f_spread), runs_label,
                 "Not reported in the paper.")
        gc = an.grad_cov_table(df)
        if len(gc):
            book.fig(an.fig_grad_vs_cov(df), "lambda_grad_vs_len_adv_cov", _by(an.fig_grad_vs_cov),
                     runs_label, "Not in the paper: λ's gradient against cov(length, advantage).")
            book.table(gc, "lambda_grad_vs_cov", _by(an.grad_cov_table), runs_label,
                       "Not in the paper.")
            for task, d in gc.groupby("task"):
                notes.append(
                    f"Task `{task}`: final λ {d['final λ'].mean():+.3f} (range {d['final λ'].min():+.3f} to "
                    f"{d['final λ'].max():+.3f}, {len(d)} run(s)); Pearson correlation of ∂loss/∂λ with "
                    f"cov(length, advantage) {d['pearson'].mean():+.2f} (mean over runs), opposite signs on "
                    f"{d['opposite sign (%)'].mean():.0f}% of steps.")
    rec = an.eq20_recorded(found)
    if len(rec):
        book.table(rec, "eq20_recorded_groups", _by(an.eq20_recorded), runs_label,
                   f"Eq. 20 on groups recorded by the runs: {int(rec['pass'].sum())}/{len(rec)} pass.")
    if len(ev):
        book.table(ev, "eval_scores", _by(an.eval_frame), runs_label,
                   "held-out scores of each run (CPU task benchmarks are not the paper's eight).")
        book.fig(an.fig_eval_curves(ev), "fig3_eval_accuracy", _by(an.fig_eval_curves), runs_label,
                 "Paper Figs. 3 and 5 plot accuracy per benchmark vs step; here, per benchmark the runs "
                 "evaluated, at the steps they evaluated.")
    # where methods differ beyond seed noise (computed, per task and metric): the package's one
    # rule, repro.analysis.stats (the 95% t-interval of the difference excludes 0)
    diffs = an.method_differences(df)
    if len(diffs):
        book.table(diffs, "method_differences", _by(an.method_differences), runs_label,
                   "no paper counterpart (one seed per method there): each method minus each other, last 10% of "
                   "steps, with the 95% t-interval of the difference across seeds (Welch; repro.analysis.stats).")
    for task, d in summ.groupby("task"):
        if d["method"].nunique() < 2:
            continue
        if d["seeds"].min() < 2:
            vals = []
            for col, unit in (("response_length_mean", "tokens"), ("entropy", "nats/token"),
                              ("accuracy", "% rollout accuracy")):
                c = f"{col} (last 10%) mean"
                if c in d:
                    vals.append(f"{col} ({unit}) " + ", ".join(
                        f"{an.label(m)} {v:.3g}" for m, v in zip(d["method"], d[c])))
            notes.append(f"Task `{task}` (last 10% of steps; fewer than 2 seeds for some method, so no "
                         f"comparison with seed noise is possible): " + "; ".join(vals) + ".")
            continue
        dt = diffs[diffs["task"] == task]
        for q, dq in dt.groupby("quantity", sort=False):
            judged = dq[dq["beyond noise"].notna()]
            if not len(judged):
                continue
            beyond = judged[judged["beyond noise"].astype(bool)]
            widest = judged.loc[judged["difference"].abs().idxmax()]
            notes.append(
                f"Task `{task}`, {q}: range across methods {abs(widest['difference']):.3g} "
                f"({an.label(widest['method'])} − {an.label(widest['minus'])} = {widest['difference']:+.3g} "
                f"± {widest['ci95']:.3g}); "
                + (f"{len(beyond)} of {len(judged)} method pairs differ beyond seed noise (95% t-interval of the "
                   "difference excludes 0): " + "; ".join(
                       f"{an.label(r['method'])} − {an.label(r['minus'])} {r['difference']:+.3g} ± {r['ci95']:.3g}"
                       for _, r in beyond.iterrows()) + "."
                   if len(beyond) else
                   f"none of the {len(judged)} method pairs differs beyond seed noise (the 95% t-interval of "
                   "each difference contains 0)."))
    return notes


def table1_artifacts(book: Book, found, runs_label: str) -> list[str]:
    """The paper's Table 1 average check and, for paper-scale runs, the cell-by-cell comparison
    (``repro.paper``)."""
    import pandas as pd

    from repro import analysis as an
    from repro import paper

    notes = []
    try:
        t1 = paper.load_table1()
    except paper.Table1Missing as e:
        book.skipped.append(f"table1_average_check, table1_reproduced: {e}")
        return notes
    chk = paper.table1_average_check(t1)
    bad = chk[~chk["matches"]]
    book.table(chk, "table1_average_check", _by(paper.table1_average_check), "none",
               f"the paper's printed averages: {len(bad)} of {len(chk)} rows differ from the mean of their "
               "eight cells by more than rounding" + (": " + "; ".join(
                   f"{r['size']} {r['method']} printed {r['paper avg']:.1f}, mean {r['recomputed avg']:.2f}"
                   for _, r in bad.iterrows()) if len(bad) else "") + ".")
    frames = []
    for run in found:
        size = paper.size_of(run.config()) if run.config_path.exists() else None
        sc = run.eval_scores()
        if not size or not sc:
            continue
        got = set(an.eval_frame([run])["benchmark"])
        if not set(paper.BENCHMARK_NAMES) <= got:
            book.skipped.append(f"table1_reproduced: {run.path.name} lacks some of the 8 benchmarks")
            continue
        keys = {"run": run.path.name, "size": size, "method": str(run.meta().get("method"))}
        frames.append(paper.comparison_frame([(keys, sc)], size, t1))
    if frames:
        book.table(pd.concat(frames, ignore_index=True), "table1_reproduced", _by(paper.comparison_frame),
                   runs_label, "paper-scale runs' scores (primary grader) next to the paper's Table 1 row for "
                   "the same size and method, and the difference per cell.")
    else:
        book.skipped.append("table1_reproduced: no paper-scale (Qwen2.5) runs with scores on all 8 benchmarks")
    return notes


def write_readme(book: Book, runs_root: Path, found, notes: list[str], nb_status: dict, cmd: str,
                 runs_shown: str) -> None:
    from repro import paper
    from repro.runs import git_commit, write_text_atomic

    lines = ["# Paper artifacts", "",
             f"Regenerated by `make artifacts{' PAPER=1' if '--paper' in cmd else ''}{'' if runs_shown == 'runs' else ' RUNS=' + runs_shown}`, i.e. `{cmd}`, on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"at commit `{git_commit()}`. Every figure is saved as PNG and PDF under `figures/`, every table as "
             "CSV under `tables/`; all are computed from `repro.objective` and from the runs listed below "
             "(read through `repro.runs`), by the functions of `repro.analysis` that the notebooks also call.",
             "", "## Runs used", ""]
    if found:
        lines += ["| run | trainer | task | method | seed | steps | finished | eval |", "|---|---|---|---|---|---|---|---|"]
        for r in found:
            meta = r.meta()
            m = r.metrics()
            rel = r.path.relative_to(runs_root) if r.path.is_relative_to(runs_root) else r.path
            lines.append(f"| `{rel}` | {meta.get('trainer', '?')} | {meta.get('task', '?')} | {meta.get('method')} | "
                         f"{meta.get('seed')} | {m[-1]['step'] if m else 0} | {'yes' if r.is_done() else 'no'} | "
                         f"{'yes' if r.eval_scores() else 'no'} |")
    else:
        lines.append(f"No runs under `{runs_shown}`: only the objective-level artifacts were made. "
                     "Run `make demo` (CPU) or a `make reproduce-*` target first.")
    lines += ["", "## Artifacts", "", "| artifact | files | made by | from runs | compared with the paper |",
              "|---|---|---|---|---|"]
    for a in book.items:
        cells = [a.name, ", ".join(f"`{f}`" for f in a.files), f"`{a.made_by}`", a.runs, a.paper]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Notebooks (executed headless on the same runs)", ""]
    for nb, st in nb_status.items():
        lines.append(f"- `{nb}`: {st}")
    if book.skipped:
        lines += ["", "## Not made", ""] + [f"- {s}" for s in book.skipped]
    if notes:
        cpu = [r for r in found if not (r.config_path.exists() and paper.size_of(r.config()))]
        lines += ["", "## What these runs show (computed)", ""]
        if cpu:
            lines += [f"{len(cpu)} of the {len(found)} runs are CPU-scale runs (no Qwen2.5 model in their config: "
                      "the package's 0.5 M-parameter model on a synthetic arithmetic task). They test the "
                      "mechanics (λ's direction, the weights, the dynamics), not the paper's accuracy claims.", ""]
        lines += [f"- {n}" for n in notes]
    out_dir = book.out
    others = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != "README.md")
    if others:
        lines += ["", "## Other files here (not regenerated by this command)", ""]
        for n in others:
            lines.append(f"- `{n}`: {KNOWN_FILES.get(n, 'written by another part of the package')}")
    write_text_atomic(out_dir / "README.md", "\n".join(lines) + "\n")


def _refuse(msg: str) -> int:
    print(f"python -m repro.artifacts: {msg}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs", help="folder searched (recursively) for run folders")
    ap.add_argument("--out", default=None, help="output folder (default: <runs>/artifacts)")
    ap.add_argument("--paper", action="store_true",
                    help="regenerate the committed paper_artifacts/ (the only way to write there)")
    ap.add_argument("--no-notebooks", action="store_true", help="skip executing the notebooks")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    a = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    from repro import analysis as an

    root = an.repo_root()
    runs_root = Path(a.runs).resolve()
    if not runs_root.is_dir():
        return _refuse(f"--runs {a.runs}: no such folder (make demo writes runs/demo)")
    paper_dir = (root / "paper_artifacts").resolve()
    if a.out is None:
        a.out = str(paper_dir.relative_to(root)) if a.paper else str(Path(a.runs) / "artifacts")
    out = Path(a.out).resolve()
    if (out == paper_dir) != a.paper:
        return _refuse(f"--out {a.out}: the committed paper_artifacts/ is written only with --paper "
                       f"(make artifacts PAPER=1), and --paper writes only there" if not a.paper else
                       f"--paper regenerates paper_artifacts/, not --out {a.out}: drop one of them")
    out.mkdir(parents=True, exist_ok=True)
    cmd = (COMMAND.format(runs=a.runs, out="").replace(" --out ", " --paper") if a.paper
           else COMMAND.format(runs=a.runs, out=a.out))
    book = Book(out)
    found, df = an.load_runs(runs_root)
    label = _runs_label(found, runs_root)
    steps = ["objective", "runs", "table1", "notebooks"]
    notes: list[str] = []
    nb_status: dict[str, str] = {}
    for step in tqdm(steps, desc="artifacts"):
        if step == "objective":
            objective_artifacts(book)
        elif step == "runs":
            if len(df):
                notes += run_artifacts(book, found, df, label, runs_root)
            else:
                book.skipped.append(f"run figures (Figs. 3-5, λ trajectories, f spread): no runs under {a.runs}")
        elif step == "table1":
            notes += table1_artifacts(book, found, label)
        elif step == "notebooks":
            for nb in NOTEBOOKS:
                if a.no_notebooks:
                    nb_status[nb] = "not executed (--no-notebooks)"
                    continue
                if not found and nb in ("02_lambda_trajectories.ipynb", "04_length_entropy_dynamics.ipynb"):
                    nb_status[nb] = "not executed: it needs runs"
                    continue
                t0 = time.time()
                dst = out / "notebooks" / nb
                try:
                    execute_notebook(root / "notebooks" / nb, runs_root, dst, timeout=a.timeout)
                    nb_status[nb] = f"executed in {time.time() - t0:.0f} s → `notebooks/{nb}`"
                except Exception as e:  # report, keep going, fail at the end
                    nb_status[nb] = f"**FAILED**: {type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"
    write_readme(book, runs_root, found, notes, nb_status, cmd, a.runs)
    failed = [k for k, v in nb_status.items() if "FAILED" in v]
    print(f"wrote {sum(len(i.files) for i in book.items)} files and {out / 'README.md'}")
    if failed:
        print(f"notebooks failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
