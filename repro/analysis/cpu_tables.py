"""The CPU reproduction's tables (``repro.demo``): one row per finished run, and the tables made
from them, per method (``table``, ``comparisons`` against DAPO) and per ablation cell
(``ablation_table``, paired by seed). Means, intervals and "beyond seed noise" come from
``repro.analysis.stats``; runs are read through ``repro.runs``."""
from __future__ import annotations

import json
import math
from pathlib import Path

from repro.analysis.plots import METHOD_LABELS as METHOD_NAMES  # the package's one copy of the labels
from repro.analysis.stats import Difference, aggregate, paired_difference, welch_difference
from repro.runs import find_runs, flat_config

LAMBDA_STEPS = (25, 50, 100, 150)  # λ's trajectory in the ablation table (plus the final λ)
LR_NOTE = "lr: λ's SGD learning rate (not the policy's)"


def summarise(root: Path, base: dict, last: int = 20) -> list[dict]:
    """One row per finished run under ``root``: final held-out scores (and the gain over the
    start checkpoint's, ``base``) and the mean of the last ``last`` training steps."""
    rows = []
    for run in find_runs(root):
        if not run.is_done():
            continue
        cfg, recs, sc = flat_config(run.config()), run.metrics(), run.eval_scores()
        ev = sc["benchmarks"][f"{cfg['task']}_heldout"]
        tail = recs[-last:]
        lam_at = {r["step"]: r["lambda"] for r in recs}
        rows.append({
            "name": run.path.name,
            "task": cfg["task"], "method": cfg["method"], "seed": cfg["seed"],
            "lambda_lr": cfg.get("lambda_lr"), "r": cfg.get("r"),
            "steps": recs[-1]["step"],
            "eval_accuracy": ev["accuracy"],
            "eval_gain": ev["accuracy"] - base[cfg["task"]]["accuracy"],
            "eval_length": ev["response_length_mean"],
            "eval_truncated": ev["truncated_rate"],
            "eval_verbose_share": ev["style_share"]["verbose"],
            "train_length": sum(r["response_length_mean"] for r in tail) / len(tail),
            "train_entropy": sum(r["entropy"] for r in tail) / len(tail),
            "final_lambda": recs[-1]["lambda"],
            **{f"lambda_at_{k}": lam_at.get(k) for k in LAMBDA_STEPS},
            "f_min_last": min(r["f_min"] for r in tail), "f_max_last": max(r["f_max"] for r in tail),
            "len_adv_cov_mean": sum(r["len_adv_cov"] for r in recs) / len(recs),
            "wall_s": json.loads(run.done_path.read_text()).get("wall_s"),
        })
    return rows


def csv_text(agg: list[dict], cols: list[str]) -> str:
    """The aggregated rows as CSV: floats to 6 significant digits, None empty, a text with a
    comma (an ablation cell's name) quoted."""
    import csv
    import io

    def cell(v):
        return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else str(v))

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    w.writerows([cell(a[c]) for c in cols] for a in agg)
    return out.getvalue()


def runs_csv(rows: list[dict]) -> str:
    """``summarise``'s rows as CSV, one line per run (empty when there are none)."""
    return ",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in r.values()) + "\n" for r in rows) if rows else ""


def pm(a: dict, col: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    """'mean ± ci' of an aggregated column ('–' when nan; no ± with one seed; the interval
    without a sign)."""
    v, ci = a[col] * scale, a[col + "_ci95"] * scale
    if math.isnan(v):
        return "–"
    return fmt.format(v) + ("" if math.isnan(ci) else " ± " + fmt.format(ci).lstrip("+"))


def _method_key(m: str) -> int:
    order = list(METHOD_NAMES)
    return order.index(m) if m in order else len(order)


# ----------------------------------------------------------------------------------------------
# the demo: per task and method, and each method against DAPO
# ----------------------------------------------------------------------------------------------
def table(rows: list[dict], base: dict) -> tuple[str, str, list[dict]]:
    """Markdown + CSV: per task and method, mean and 95% t-interval across seeds."""
    cols = ["eval_accuracy", "eval_gain", "eval_length", "eval_verbose_share", "train_length",
            "train_entropy", "final_lambda", "len_adv_cov_mean", "wall_s"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    agg = []
    for (task, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], _method_key(kv[0][1]), kv[0][1])):
        agg.append({"task": task, "method": method, "seeds": len(rs), **aggregate(rs, cols)})
    csv = csv_text(agg, ["task", "method", "seeds"] + [x for c in cols for x in (c, c + "_ci95")])

    md = ["| task | method | seeds | held-out acc (%) | gain over start (pp) | eval length | "
          "verbose share | train length | entropy | final λ | cov(len, A) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in sorted({a["task"] for a in agg}):
        b = base[task]
        md.append(f"| {task} | start checkpoint | – | {100 * b['accuracy']:.1f} | – | "
                  f"{b['response_length_mean']:.1f} | {b['style_share']['verbose']:.2f} | – | – | – | – |")
        for a in [a for a in agg if a["task"] == task]:
            md.append(f"| {task} | {METHOD_NAMES.get(a['method'], a['method'])} | {a['seeds']} | "
                      f"{pm(a, 'eval_accuracy', 100)} | {pm(a, 'eval_gain', 100)} | "
                      f"{pm(a, 'eval_length')} | {pm(a, 'eval_verbose_share', 1, '{:.2f}')} | "
                      f"{pm(a, 'train_length')} | {pm(a, 'train_entropy', 1, '{:.3f}')} | "
                      f"{pm(a, 'final_lambda', 1, '{:.3f}')} | "
                      f"{pm(a, 'len_adv_cov_mean', 1, '{:+.2f}')} |")
    return "\n".join(md) + "\n", csv, agg


def comparisons(rows: list[dict], ref: str = "dapo") -> str:
    """Each method against ``ref`` on held-out accuracy and eval length: difference of means,
    its 95% interval and the verdict (``stats.welch_difference``, unpaired). Needs >= 2 seeds
    per method; '' when no method has them."""
    out = [f"| task | method vs {METHOD_NAMES.get(ref, ref)} | Δ acc (pp) | 95% CI | beyond noise? | "
           "Δ length | 95% CI | beyond noise? |", "|---|---|---|---|---|---|---|---|"]
    any_row = False
    for task in sorted({r["task"] for r in rows}):
        by_m: dict[str, list[dict]] = {}
        for r in rows:
            if r["task"] == task:
                by_m.setdefault(r["method"], []).append(r)
        if ref not in by_m or len(by_m[ref]) < 2:
            continue
        for m, rs in sorted(by_m.items(), key=lambda kv: _method_key(kv[0]) if kv[0] in METHOD_NAMES else 99):
            if m == ref or len(rs) < 2:
                continue
            cells = []
            for key, scale in (("eval_accuracy", 100), ("eval_length", 1)):
                d = welch_difference([r[key] * scale for r in rs], [r[key] * scale for r in by_m[ref]])
                cells += [f"{d.diff:+.1f}", f"± {d.half:.1f}", d.verdict()]
            out.append(f"| {task} | {METHOD_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
            any_row = True
    return "\n".join(out) + "\n" if any_row else ""


# ----------------------------------------------------------------------------------------------
# the ablation (issue 13): λ's learning rate × r, each cell against DAPO paired by seed
# ----------------------------------------------------------------------------------------------
def cell_of(r: dict) -> tuple:
    """(task, method, λ lr, r) for λ-GRPO runs; (task, method, None, None) for fixed weights
    (``r``: a ``summarise`` row or a ``flat_config``)."""
    if r["method"] == "lambda":
        return r["task"], "lambda", float(r["lambda_lr"]), float(r["r"])
    return r["task"], r["method"], None, None


def cell_name(c: tuple) -> str:
    """'λ-GRPO lr 10, r 1/3' for a λ-GRPO cell, the method's label otherwise."""
    task, method, lr, r = c
    if method != "lambda":
        return METHOD_NAMES.get(method, method)
    from repro.analysis import r_name

    return f"λ-GRPO lr {lr:g}, r {r_name(r)}"


def ablation_table(rows: list[dict], ref: str = "dapo") -> tuple[str, str, list[dict]]:
    """Per cell: seeds, final λ and λ at LAMBDA_STEPS, the realised f range over the last
    steps, held-out accuracy and length (mean ± 95% t-interval across seeds) and the difference
    to ``ref`` paired by seed (``stats.paired_difference``)."""
    cells: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        cells.setdefault(cell_of(r), {})[r["seed"]] = r
    order = {"dapo": 0, "grpo": 1, "lambda": 2}
    keys = sorted(cells, key=lambda c: (c[0], order.get(c[1], 9), c[2] or 0, c[3] or 0))
    agg = []
    for c in keys:
        by_seed = cells[c]
        rs = [by_seed[k] for k in sorted(by_seed)]
        a = {"task": c[0], "method": c[1], "lambda_lr": c[2], "r": c[3], "cell": cell_name(c),
             "seeds": len(rs), "seed_list": " ".join(str(k) for k in sorted(by_seed))}
        a.update(aggregate(rs, ("final_lambda", *[f"lambda_at_{k}" for k in LAMBDA_STEPS], "f_min_last",
                                "f_max_last", "eval_accuracy", "eval_length", "eval_verbose_share")))
        refs = cells.get((c[0], ref, None, None), {})
        paired = [k for k in sorted(by_seed) if k in refs]
        a["paired_seeds"] = len(paired)
        for col, scale in (("eval_accuracy", 100.0), ("eval_length", 1.0)):
            d = paired_difference([scale * (by_seed[k][col] - refs[k][col]) for k in paired])
            a[f"d_{col}"], a[f"d_{col}_ci95"] = d.diff, d.half
        agg.append(a)
    csv = csv_text(agg, list(agg[0]) if agg else [])

    def beyond(a, col):
        return Difference(a[col], a[col + "_ci95"]).verdict()

    md = ["| task | cell | seeds | final λ | λ at " + " / ".join(str(k) for k in LAMBDA_STEPS)
          + " | f min / max (last 20 steps) | held-out acc (%) | eval length | "
          f"Δ acc vs {METHOD_NAMES[ref]} (pp, paired) | beyond noise? | Δ length (paired) | beyond noise? |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in agg:
        traj = " / ".join("–" if math.isnan(a[f"lambda_at_{k}"]) else f"{a[f'lambda_at_{k}']:+.2f}"
                          for k in LAMBDA_STEPS)
        is_ref = a["method"] == ref
        md.append(
            f"| {a['task']} | {a['cell']} | {a['seeds']} | {pm(a, 'final_lambda', 1, '{:+.3f}')} | {traj} | "
            f"{a['f_min_last']:.3f} / {a['f_max_last']:.3f} | {pm(a, 'eval_accuracy', 100)} | "
            f"{pm(a, 'eval_length')} | "
            + ("(reference) | | | |" if is_ref else
               f"{pm(a, 'd_eval_accuracy', 1, '{:+.1f}')} | {beyond(a, 'd_eval_accuracy')} | "
               f"{pm(a, 'd_eval_length', 1, '{:+.1f}')} | {beyond(a, 'd_eval_length')} |"))
    return "\n".join(md) + "\n", csv, agg
