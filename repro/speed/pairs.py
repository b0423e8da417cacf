"""Interleaved timing of two callables on a shared machine, as a ratio (``make bench``).

Timings alternate (A, B, B, A, A, B, ...) so that load from other processes hits both alike;
each timing is a block of ``inner`` calls. Reported: the median of the per-pair ratios B/A
with its interquartile range, the ratio of medians, and the ratio of best times (the run least
disturbed by other load), next to the machine's load average when the timing started and ended.

Two clocks: ``wall`` (``time.perf_counter``, what the issue's target is stated in) and ``cpu``
(``time.process_time``: CPU seconds of all of this process's threads). On a machine whose cores
are oversubscribed by other processes, wall time mostly measures waiting for a core; CPU time
measures the work done (it counts OpenMP threads' spin-waits as work, alike for both).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass


@dataclass
class PairTimes:
    a: list[float]  # seconds per call, per block
    b: list[float]
    load: tuple[float, float]  # 1-min load average at the start and the end
    clock: str = "wall"

    @property
    def ratios(self) -> list[float]:
        return [tb / ta for ta, tb in zip(self.a, self.b)]

    def summary(self) -> dict:
        q = statistics.quantiles(self.ratios, n=4) if len(self.ratios) > 1 else [self.ratios[0]] * 3
        return {"a_median_s": statistics.median(self.a), "b_median_s": statistics.median(self.b),
                "a_best_s": min(self.a), "b_best_s": min(self.b),
                "ratio_median": statistics.median(self.ratios), "ratio_q1": q[0], "ratio_q3": q[2],
                "ratio_of_medians": statistics.median(self.b) / statistics.median(self.a),
                "ratio_of_best": min(self.b) / min(self.a), "pairs": len(self.a),
                "load_start": self.load[0], "load_end": self.load[1], "cpus": os.cpu_count(),
                "clock": self.clock}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_pairs(run_a, run_b, *, reps: int, inner: int = 1, warmup: int = 2, clock: str = "wall") -> PairTimes:
    """``reps`` interleaved pairs of blocks of ``inner`` calls of ``run_a`` and ``run_b``."""
    if reps < 1 or inner < 1:
        raise ValueError(f"reps and inner must be >= 1, got {reps}, {inner}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    for _ in range(warmup):
        run_a()
        run_b()
    load0 = os.getloadavg()[0]
    ta, tb = [], []
    for i in range(reps):
        order = ((run_a, ta), (run_b, tb)) if i % 2 == 0 else ((run_b, tb), (run_a, ta))
        for fn, out in order:
            t0 = now()
            for _ in range(inner):
                fn()
            out.append((now() - t0) / inner)
    return PairTimes(ta, tb, (load0, os.getloadavg()[0]), clock)


def format_summary(name_a: str, name_b: str, s: dict, unit: float = 1e3, unit_name: str = "ms") -> str:
    return (f"  [{s['clock']} clock]\n"
            f"  {name_a:<28s}: median {s['a_median_s'] * unit:9.2f} {unit_name}, best {s['a_best_s'] * unit:9.2f} {unit_name}\n"
            f"  {name_b:<28s}: median {s['b_median_s'] * unit:9.2f} {unit_name}, best {s['b_best_s'] * unit:9.2f} {unit_name}\n"
            f"  ratio {name_b}/{name_a}: best {s['ratio_of_best']:.3f}, median of pairs "
            f"{s['ratio_median']:.3f} (IQR {s['ratio_q1']:.3f}-{s['ratio_q3']:.3f}), ratio of medians "
            f"{s['ratio_of_medians']:.3f}; {s['pairs']} pairs, load average {s['load_start']:.1f} -> "
            f"{s['load_end']:.1f} on {s['cpus']} CPUs")
