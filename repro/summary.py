"""One run (or a folder of runs) of one's own: its table and its curves.

    python -m repro.summary runs/demo/sum_lambda_s0          # one run
    python -m repro.summary runs/x --out /tmp/x-summary      # every run under runs/x

Prints, per run, its settings (task, method, seed, λ's learning rate and r), the means of its
last 10 % of steps (reward, accuracy, length, truncation, entropy) and final λ
(``repro.analysis.run_summary``), and its evaluations (the in-training held-out curve's first
and last points, each with its problem set, and the final evaluation); writes the same as
``summary.md`` and draws the training curves (``summary_training.png``) and, when the run
evaluated during training, the held-out accuracy curve (``summary_eval.png``), into ``--out``
(default: ``<RUN>/summary/``). Runs are read through ``repro.runs`` by ``repro.analysis``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CURVES = ("reward_mean", "accuracy", "response_length_mean", "lambda", "entropy")


def _refuse(msg: str) -> int:
    print(f"python -m repro.summary: {msg}", file=sys.stderr)
    return 2


def settings_table(found, labels: dict):
    """Per run: task, method, seed, steps run, λ's learning rate and r (where the method has them)."""
    import pandas as pd

    rows = []
    for run in found:
        w = run.weighting()  # the config's weighting: block (older layouts migrated by repro.runs)
        cfg = run.config() or {}
        rows.append({"run": labels[run][0], "task": labels[run][1] or cfg.get("task"),
                     "method": run.meta().get("method"), "seed": run.meta().get("seed"),
                     "steps (config)": cfg.get("steps"), "λ lr": (w.get("lambda") or {}).get("lr"),
                     "r": w.get("r"), "done": run.is_done()})
    return pd.DataFrame(rows)


def eval_table(ev):
    """Per run and problem set: the first and last evaluated step and accuracy, and how many points."""
    import pandas as pd

    rows = []
    for (run, bench), d in ev.dropna(subset=["step"]).groupby(["run", "benchmark"], sort=False):
        d = d.sort_values("step")
        rows.append({"run": run, "problem set": bench, "points": len(d),
                     "first step": int(d["step"].iloc[0]), "accuracy first (%)": float(d["accuracy"].iloc[0]),
                     "last step": int(d["step"].iloc[-1]), "accuracy last (%)": float(d["accuracy"].iloc[-1])})
    return pd.DataFrame(rows)


def markdown_table(t) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, t.columns)) + " |\n|" + "---|" * len(t.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in t.itertuples(index=False))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.summary", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (meta.json + metrics.jsonl) or a folder of runs")
    ap.add_argument("--out", default=None, help="where summary.md and the figures go (default: RUN/summary)")
    ap.add_argument("--no-figures", action="store_true", help="print and write the tables only")
    a = ap.parse_args(argv)
    root = Path(a.run)
    if not root.is_dir():
        return _refuse(f"{a.run}: no such folder (make demo writes runs/demo/<task>_<method>_s<seed>)")

    from repro import analysis as an
    from repro.runs import SchemaError, write_text_atomic

    try:
        # one run: read from its parent so that it is labelled by its folder name, not '.'
        single = (root / "meta.json").is_file()
        base = root.resolve().parent if single else root
        found, df = an.load_runs(base)
        if single:
            keep = {r for r in found if r.path.resolve() == root.resolve()}
            labels_all = an.run_labels(found, base)
            found = [r for r in found if r in keep]
            df = df[df["run"].isin([labels_all[r][0] for r in found])]
        root_for_labels = base
        ev = an.eval_frame(found, base) if found else None
    except (SchemaError, ValueError, OSError) as e:
        return _refuse(f"{a.run}: unreadable run ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if not found or not len(df):
        return _refuse(f"{a.run}: no run with metrics in it (a run folder holds meta.json and metrics.jsonl)")
    import pandas as pd

    labels = an.run_labels(found, root_for_labels)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    parts = [("settings", settings_table(found, labels)), ("training (last 10 % of steps)", an.run_summary(df))]
    if ev is not None and len(ev):
        parts.append(("held-out evaluations (each with its problem set; greedy)", eval_table(ev)))
    text = []
    for title, t in parts:
        text.append(f"## {title}\n\n{markdown_table(t)}\n")
        print(f"{title}:\n{t.to_string(index=False)}\n")
    out = Path(a.out) if a.out else root / "summary"
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    if not a.no_figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = an.fig_metric_bands(df, [m for m in CURVES if m in df], title=str(a.run))
        figs.append(out / "summary_training.png")
        fig.savefig(figs[-1], dpi=110)
        plt.close(fig)
        curves = ev[ev["step"].notna()] if ev is not None and len(ev) else None
        if curves is not None and curves.groupby(["run", "benchmark"])["step"].nunique().max() > 1:
            fig = an.fig_eval_curves(curves)
            figs.append(out / "summary_eval.png")
            fig.savefig(figs[-1], dpi=110)
            plt.close(fig)
    text += [f"![{p.stem}]({p.name})\n" for p in figs]
    write_text_atomic(out / "summary.md", f"# Summary of {a.run}\n\n" + "\n".join(text))
    print("wrote " + ", ".join(str(p) for p in [out / "summary.md", *figs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
