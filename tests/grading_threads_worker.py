"""One run of tests/test_grading.py::test_restart_inside_a_threaded_process, in its own process
(its threads, its forkserver and its patched start-up wait stay out of the test session).

A grader that takes a module-level lock (as a cache or a logging handler does) is served by a
``GradingPool`` of one worker. After the pool has started, a second thread takes that lock and
keeps it, as a busy thread of a Ray actor or of vLLM holds its locks at any moment. Then an item
spins past its budget, so the worker is killed and replaced while the lock is held. A worker forked
from this process would inherit the held lock with no thread to release it and never start; one
started by the forkserver has its own. Writes what each call returned as JSON.

    python tests/grading_threads_worker.py OUT.json [fork]
"""
from __future__ import annotations

import json
import sys
import threading
import time

from repro.grading import pool, register_grader

LOCK = threading.Lock()


@register_grader("test-locked")
def locked_grader(pred: str, gold: str) -> bool:
    with LOCK:
        if pred == "spin":
            while True:  # a pathological item: only the budget stops it
                pass
        return pred.strip() == gold.strip()


def _call(fn, *a, **k):
    try:
        r = fn(*a, **k)
    except RuntimeError as e:
        return ["RuntimeError", str(e)]
    return [r.correct, r.flagged] if isinstance(r, pool.GradeResult) else [[x.correct, x.flagged] for x in r]


def main(out: str, method: str | None) -> None:
    pool._READY_TIMEOUT_S = 8.0  # a worker that cannot start is reported after 8 s, not 120 s
    p = pool.GradingPool("test-locked", workers=1, timeout=1.0, clock="wall", start_method=method).start()
    held = threading.Event()

    def holder():
        with LOCK:
            held.set()
            time.sleep(3600)

    threading.Thread(target=holder, daemon=True).start()
    held.wait()
    res = {"pool": [_call(p.grade, "spin", "1"), _call(p.grade, "1", "1")]}
    if method is None:  # (under fork, grade_many would first warm the grader here, on the held lock)
        res["pool"] += [_call(p.grade, "2", "1"), _call(p.grade, "spin", "1"), _call(p.grade, "3", "3")]
        res["grade_many"] = _call(pool.grade_many, "test-locked", [("spin", "1", None), ("1", "1", None),
                                                                   ("spin", "2", None), ("2", "2", None)],
                                  workers=1, timeout=1.0, clock="wall")
    res["start_method"] = p._ctx.get_start_method()
    with open(out, "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
