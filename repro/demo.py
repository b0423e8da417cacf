"""The package's main job on any laptop: λ-GRPO against GRPO and DAPO on CPU, end to end.

    python -m repro.demo --out runs/demo                   # = make demo (a few minutes, 2 cores)
    python -m repro.demo --full --out runs/reproduce-cpu   # = make reproduce-cpu (about 2 h)
    python -m repro.demo --ablation --out runs/ablation    # = make ablation-cpu (λ lr × r, about 1.6 h)

From the committed checkpoint (``repro/assets/tiny-sum``, a 0.5 M-parameter Qwen2 pretrained on
the synthetic sum task by ``repro.trainers.pretrain``) it trains one run per (task, method, seed)
with the reference trainer and the configs in ``repro/configs/cpu``, evaluates every final
policy and the starting checkpoint on the same held-out problems with greedy decoding, and
writes, under ``--out``:

    <task>_<method>_s<seed>/   one run folder each (``repro.runs`` layout)
    base_<task>.json           the starting checkpoint's held-out scores
    results.csv, results.md    the comparison table (mean and 95% interval across seeds)
    figures/*.png              training curves (reward, length, λ, entropy) and final accuracy

(``--ablation``: ``ablation.md``, ``ablation.csv`` and ``figures/ablation_*.png``.)
Runs go ``--jobs`` at a time, each in its own process with one torch thread. A finished run
(``DONE``) is reused when the command is repeated; an interrupted one resumes from its newest
checkpoint.

demo:  task ``sum``; grpo, dapo, lambda; seed 0; 500 held-out problems.
full:  tasks ``sum`` and ``budget``; grpo, dapo, lambda, dr_grpo, delta_l; seeds 0, 1, 2;
       1,000 held-out problems.

The runs and their scheduling are ``repro.jobs``; the tables ``repro.analysis.cpu_tables``
(statistics and the "beyond seed noise" rule: ``repro.analysis.stats``); the figures
``repro.analysis.cpu_figures``. This module is the command line and the one report pipeline
(``report``) that the demo and the ablation share.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from repro.analysis.cpu_figures import ablation_figures, figures
from repro.analysis.cpu_tables import ablation_table, comparisons, summarise, table
from repro.analysis.plots import METHOD_LABELS as METHOD_NAMES
from repro.jobs import (ABLATION_BASELINES, ABLATION_LAMBDA_LRS, ABLATION_RS, Job, ablation_plan, eval_base, plan,
                        r_slug, run_all)
from repro.runs import Run, write_text_atomic

HAND_MARK = "\n## What this shows (written by hand"


def keep_hand_section(dest: Path, text: str) -> str:
    """Regenerated files keep the hand-written reading at their end (from HAND_MARK on)."""
    if dest.exists():
        old = dest.read_text()
        if HAND_MARK in old:
            return text.rstrip("\n") + "\n" + old[old.index(HAND_MARK):]
    return text


def h_floor_note(rs, G: int, sigma: str = "sample") -> str:
    """The smallest h any group of G lengths can give for each r (Samuelson bound on |z|)."""
    from repro.objective import max_abs_z

    zmax = max_abs_z(G, sigma)
    parts = [f"r = {r:.4g}: h ≥ 1 − r·{zmax:.3f} = {1 - r * zmax:.3f}" for r in sorted(set(rs))]
    ok = all(1 - r * zmax > 0 for r in rs)
    return (f"With G = {G} and {sigma} σ, |z| ≤ (G−1)/√G = {zmax:.3f}, so " + "; ".join(parts)
            + (": h > 0 for every possible group, h^λ is always defined." if ok else
               ": **h can reach 0**; such runs stop with repro.objective's ValueError."))


# ----------------------------------------------------------------------------------------------
# the one report pipeline: train (or reuse) the runs, evaluate the start checkpoint, tabulate,
# draw, write; what differs between the demo and the ablation is a Report subclass
# ----------------------------------------------------------------------------------------------
@dataclass
class Done:
    """What one invocation did, for the report's text."""
    root: Path
    cmd: str
    wall: float
    launched: int
    rows: list[dict]
    base: dict
    tasks: list[str]
    missing: list[str]
    md: str
    figs: list[Path] = field(default_factory=list)

    @property
    def train_min(self) -> float:
        return sum(r["wall_s"] or 0 for r in self.rows) / 60


class Report:
    """One kind of invocation: its runs (``jobs``), the overrides every run gets, its tables,
    figures, text and files."""
    jobs: list[Job]
    overrides: dict
    n_eval: int
    steps: int
    cfg0: object

    def __init__(self, a):
        self.a = a

    def banner(self, root: Path) -> str:
        raise NotImplementedError

    def tables(self, rows: list[dict], base: dict) -> tuple[str, str, list[dict]]:
        raise NotImplementedError

    def figures(self, root: Path, rows: list[dict], base: dict, agg: list[dict]) -> list[Path]:
        raise NotImplementedError

    def text(self, d: Done) -> str:
        raise NotImplementedError

    def write(self, d: Done, text: str, csv: str) -> None:
        raise NotImplementedError

    def missing_note(self, d: Done) -> str:
        return (f"**Not finished: {len(d.missing)} of the {len(self.jobs)} runs** ({', '.join(d.missing)}); the table "
                f"holds the {len(d.rows)} finished ones (`--report-only` tabulated what was there; rerunning the "
                f"command trains the rest, reusing these).  \n" if d.missing else "")

    def invocation(self, d: Done) -> str:
        return (f"Wall time of this invocation: {d.wall / 60:.1f} min ({d.launched} of {len(self.jobs)} runs trained "
                f"in it, {self.a.jobs} at a time; the rest reused).")


class DemoReport(Report):
    """``make demo`` / ``--full``: per task and method, and each method against DAPO."""

    def __init__(self, a):
        from repro.trainers.reference import load_cpu_config

        super().__init__(a)
        self.jobs = plan(a.full, a.seeds, a.tasks, a.methods)
        self.n_eval = a.eval_problems or (1000 if a.full else 500)
        self.overrides = {"eval_problems": self.n_eval}
        for key, v in (("eval_every", a.eval_every), ("eval_every_problems", a.eval_every_problems)):
            if v is not None:
                self.overrides[key] = v
        if a.steps:
            self.overrides["steps"] = a.steps
        self.cfg0 = load_cpu_config(self.jobs[0].task, self.jobs[0].method)
        self.steps = a.steps or self.cfg0.steps

    def banner(self, root):
        return (f"{len(self.jobs)} runs ({self.a.jobs} at a time), {self.steps} steps each, "
                f"held-out eval on {self.n_eval} problems -> {root}")

    def tables(self, rows, base):
        return table(rows, base)

    def figures(self, root, rows, base, agg):
        return figures(root, rows, base)

    def text(self, d):
        text = (f"# CPU reproduction results\n\nCommand: `{d.cmd}`  \n{self.invocation(d)}  \n"
                f"Sum of the runs' own training wall times: {d.train_min:.1f} min.  \n" + self.missing_note(d)
                + f"Held-out accuracy: greedy decoding on {self.n_eval} test-split "
                f"problems; ± is the 95% t-interval across seeds (none with one seed).  \n"
                f"Columns: eval length and verbose share are on the held-out set (greedy); train length "
                f"and entropy are means over the last 20 training steps; cov(len, A) is the run's mean "
                f"within-group covariance of response length and advantage, the quantity λ follows.\n\n"
                + d.md)
        cmp = comparisons(d.rows)
        if cmp:
            text += "\n## Differences against DAPO (Welch 95% interval across seeds)\n\n" + cmp
        return text

    def write(self, d, text, csv):
        from repro.analysis.cpu_tables import runs_csv

        write_text_atomic(d.root / "results.md", text)
        write_text_atomic(d.root / "results.csv", csv)
        write_text_atomic(d.root / "runs.csv", runs_csv(d.rows))
        if self.a.artifacts:
            dest = Path(self.a.artifacts)
            (dest / "figures").mkdir(parents=True, exist_ok=True)
            names = []
            for p in d.figs:
                shutil.copyfile(p, dest / "figures" / f"cpu_{p.name}")
                names.append(f"![{p.stem}](figures/cpu_{p.name})")
            write_text_atomic(dest / "cpu_results.md", text + "\n" + "\n\n".join(names) + "\n")


class AblationReport(Report):
    """``--ablation``: the grid of ``ablation_plan``, each cell against DAPO paired by seed."""

    def __init__(self, a):
        from repro.trainers.reference import load_cpu_config

        super().__init__(a)
        self.lrs = tuple(a.lambda_lrs) if a.lambda_lrs else ABLATION_LAMBDA_LRS
        self.rs = tuple((r, r_slug(r)) for r in a.rs) if a.rs else ABLATION_RS
        self.jobs = ablation_plan(a.seeds, a.tasks, self.lrs, self.rs)
        self.n_eval = a.eval_problems or 1000
        self.every = 25 if a.eval_every is None else a.eval_every
        self.every_problems = 200 if a.eval_every_problems is None else a.eval_every_problems
        self.overrides = {"eval_problems": self.n_eval, "eval_every": self.every,
                          "eval_every_problems": self.every_problems}
        if a.steps:
            self.overrides["steps"] = a.steps
        self.cfg0 = load_cpu_config(self.jobs[0].task, "lambda")
        self.steps = a.steps or self.cfg0.steps

    def banner(self, root):
        return (f"ablation: {len(self.jobs)} runs ({self.a.jobs} at a time), {self.steps} steps each, held-out eval on "
                f"{self.n_eval} problems at the end and on {self.every_problems} every {self.every} steps -> {root}")

    def tables(self, rows, base):
        return ablation_table(rows)

    def figures(self, root, rows, base, agg):
        return ablation_figures(root, agg, {j.name for j in self.jobs}, ABLATION_BASELINES)

    def text(self, d):
        cfg0, rs = self.cfg0, self.rs
        return (
            "# CPU ablation: when λ can move, does a learned token preference help?\n\n"
            f"Command: `{d.cmd}` (= `make ablation-cpu`)  \n"
            f"{self.invocation(d)} Sum of the runs' own training wall times: {d.train_min:.1f} min.  \n"
            f"Grid: λ's SGD learning rate {{{', '.join(f'{x:g}' for x in self.lrs)}}} × r "
            f"{{{', '.join(n.replace('-', '/') for _, n in rs)}}} "
            f"on tasks {', '.join(d.tasks)}, against {', '.join(METHOD_NAMES[m] for m in ABLATION_BASELINES)} at the "
            f"same seeds; {self.steps} optimizer steps per run, every other setting as in `repro/configs/cpu/` "
            "(the reproduction).  \n"
            + self.missing_note(d)
            + f"{h_floor_note([r for r, _ in rs], cfg0.group_size, getattr(cfg0.weighting.params, 'sigma', 'sample'))}  \n"
            f"Held-out accuracy and length: greedy decoding on {self.n_eval} test-split problems after the last step; "
            "± is the 95% t-interval across seeds (none with one seed). Δ vs DAPO is paired by seed: the same seed "
            "gives every method the same training problems and the same sampling seeds, and at λ = 0 λ-GRPO's "
            "first step is DAPO's exactly, so runs of one seed share their first rollout; the interval is the "
            "t-interval of the per-seed differences. f min / max: the smallest f_min and largest f_max over the "
            "last 20 steps (seed mean); DAPO's f is 1. λ at steps: seed means.\n\n"
            + f"Start checkpoint (held-out, {self.n_eval} problems): "
            + "; ".join(f"{t} {100 * d.base[t]['accuracy']:.1f} %, length {d.base[t]['response_length_mean']:.1f}"
                        for t in d.tasks) + ".\n\n" + d.md
            + "\n![λ and f](figures/ablation_lambda_f.png)\n\n![vs DAPO](figures/ablation_vs_dapo.png)\n\n"
            "![accuracy over training](figures/ablation_accuracy_curves.png)\n")

    def write(self, d, text, csv):
        write_text_atomic(d.root / "ablation.md", keep_hand_section(d.root / "ablation.md", text))
        write_text_atomic(d.root / "ablation.csv", csv)
        if self.a.artifacts:
            dest = Path(self.a.artifacts)
            (dest / "figures").mkdir(parents=True, exist_ok=True)
            for p in d.figs:
                shutil.copyfile(p, dest / "figures" / p.name)
            write_text_atomic(dest / "ablation_cpu.csv", csv)
            write_text_atomic(dest / "ablation_cpu.md", keep_hand_section(dest / "ablation_cpu.md", text))


def report(rep: Report, argv=None) -> Done:
    """The pipeline: train the runs (unless ``--report-only``), evaluate the start checkpoint on
    the same held-out problems, tabulate the finished runs, draw, write the text and files."""
    a = rep.a
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(rep.banner(root))
    launched = 0 if a.report_only else run_all(root, rep.jobs, rep.overrides, a.jobs, rep.steps)
    tasks = sorted({j.task for j in rep.jobs})
    base = eval_base(root, tasks, rep.n_eval, rep.cfg0)
    names = {j.name for j in rep.jobs}
    rows = [r for r in summarise(root, base) if r["name"] in names]
    md, csv, agg = rep.tables(rows, base)
    figs = rep.figures(root, rows, base, agg)
    d = Done(root=root, cmd="python -m repro.demo " + " ".join(argv if argv is not None else sys.argv[1:]),
             wall=time.time() - t0, launched=launched, rows=rows, base=base, tasks=tasks,
             missing=[j.name for j in rep.jobs if not Run(root / j.name).is_done()], md=md, figs=figs)
    text = rep.text(d)
    rep.write(d, text, csv)
    print(text)
    print("figures:", ", ".join(str(p) for p in figs))
    return d


def _refuse(msg: str):
    print(f"python -m repro.demo: {msg}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--full", action="store_true", help="both tasks, 5 methods, 3 seeds, 1,000 eval problems")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at a time, one torch thread each (default: 3, so the demo's three runs "
                         "share 2 cores at once instead of leaving one core idle for the last run; "
                         "--ablation: 2)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the configs' step count")
    ap.add_argument("--eval-problems", type=int, default=None)
    ap.add_argument("--artifacts", default=None, metavar="DIR",
                    help="also write DIR/cpu_results.md and DIR/figures/cpu_*.png "
                         "(--ablation: DIR/ablation_cpu.md, .csv and DIR/figures/ablation_*.png)")
    ap.add_argument("--ablation", action="store_true",
                    help="λ lr {0.1, 1, 10} × r {1/9, 1/3} on sum and budget, 3 seeds, vs DAPO and GRPO")
    ap.add_argument("--lambda-lrs", nargs="*", type=float, default=None, help="--ablation: λ lrs")
    ap.add_argument("--rs", nargs="*", type=float, default=None, help="--ablation: r values")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="in-training eval period in steps (default: the configs' 25; --ablation: 25)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing, tabulate the finished runs and list the missing ones")
    ap.add_argument("--eval-every-problems", type=int, default=None,
                    help="fixed held-out problems of the in-training eval (default: the configs' 200; "
                         "--ablation: 200)")
    a = ap.parse_args(argv)
    if a.ablation and (a.full or a.methods):
        _refuse("--ablation runs its own grid (λ lr × r against DAPO and GRPO): drop --full / --methods")
    if not a.ablation and (a.lambda_lrs is not None or a.rs is not None):
        _refuse("--lambda-lrs and --rs set the grid of --ablation: add --ablation or drop them")
    a.jobs = a.jobs or (2 if a.ablation else 3)
    report(AblationReport(a) if a.ablation else DemoReport(a), argv)


if __name__ == "__main__":
    main()
