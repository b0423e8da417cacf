"""Grade many (prediction, gold) pairs in worker processes with a hard per-item timeout.

A pathological answer (``10^{10^{10}}``, a 5,000-character expression) can make sympy run for
minutes inside C code, where no signal reaches it. Each item therefore runs in a worker process;
when an item passes its budget the worker is killed and replaced, and the item counts as wrong
and is flagged ``"timeout"``.

The budget is CPU time by default (``clock="cpu"``: the worker's user + system time on the item,
read from ``/proc/<pid>/stat``), so a verdict does not depend on how loaded the machine is: on a
shared machine a wall-clock limit fails items that merely waited for a core. A wall-clock cap
(``wall_cap``, default ``max(60 s, 20 x timeout)``) still bounds a worker that makes no progress.
``clock="wall"`` is the original's rule (a wall-clock deadline per item); it is also used where
``/proc`` is missing. A grader exception (graders should not raise) is flagged
``"error"``; a worker that dies is flagged ``"crash"``. Nothing here can hang a run.

Workers, and the workers that replace killed ones, are started by multiprocessing's forkserver
(spawn where there is none), never by forking the calling process: that process is often
multithreaded (a Ray actor, vLLM's engine, OpenRLHF's reward calls from ``asyncio.to_thread``),
and a forked child inherits every lock another thread held at that moment, still held, with no
thread left to release it. The forkserver is a fresh single-threaded interpreter; it imports and
warms the grader once (``repro.grading.forkserver_warm``), so a worker forked from it starts warm
in milliseconds, as a fork of a warm parent did. ``start_method="fork"`` can still be asked for
(single-threaded callers, the throughput comparison). Such a worker finds a grader by name, so a
grader must be registered when its module is imported (``@register_grader`` at module level, or in
the main script); one registered later, inside a function, exists in the calling process only.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Sequence

DEFAULT_TIMEOUT_S = 5.0
_READY_TIMEOUT_S = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MIN_CHECK_S = 0.02  # the shortest wait between two looks at a busy worker's CPU time
WARM_ENV = "LGRPO_GRADING_WARM"  # graders the forkserver warms at its start (repro.grading.forkserver_warm)
_FORKSERVER_LOCK = threading.Lock()
_forkserver_started_in: int | None = None  # the pid that started the server with a warm grader


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def forkserver_cpu_seconds() -> float:
    """CPU seconds of multiprocessing's forkserver in this process (its grader warm-up) and of
    the workers it has reaped (``/proc`` utime + stime + cutime + cstime); 0.0 when none runs.
    Workers started by the forkserver are its children, not this process's, so
    ``getrusage(RUSAGE_CHILDREN)`` misses them; a benchmark adds this."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        f = data[data.rindex(b")") + 2:].split()
        return sum(int(x) for x in f[11:15]) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def default_wall_cap(timeout: float) -> float:
    return max(60.0, 20.0 * timeout)


@dataclass(frozen=True)
class GradeResult:
    correct: bool
    flagged: str | None  # None, "timeout", "error" or "crash"
    seconds: float  # wall seconds


def resolve(grader: str, benchmark: str | None):
    """The grading function that ``grader`` means on ``benchmark``."""
    from repro.grading import get_grader

    if grader.startswith("qwen"):
        from repro.grading.qwen import grader_name_for

        grader = grader_name_for(grader, benchmark)
    return get_grader(grader)


def grade_one(grader: str, pred: str, gold: str, benchmark: str | None = None) -> GradeResult:
    """In-process grading without a timeout (for tests and debugging)."""
    t = time.perf_counter()
    try:
        ok = bool(resolve(grader, benchmark)(pred, gold))
        flag = None
    except Exception:
        ok, flag = False, "error"
    return GradeResult(ok, flag, time.perf_counter() - t)


# Typical answer shapes: grading them once teaches the LaTeX parser's (antlr) prediction cache,
# which forked workers inherit, so that their first items are not slow.
_WARM_PAIRS = (("0.5", "\\frac{1}{2}"), ("x^2+1", "1+x^{2}"), ("(1,2)", "(1,2)"),
               ("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{\\pi}{4}", "45^\\circ"),
               ("y=2x+1", "2x-y+1=0"), ("[2,+\\infty)", "(-\\infty,3]"),
               ("e^{x}\\sin x+C", "\\ln|x|+C"), ("-\\frac{\\sqrt{3}}{2}i", "1-i"),
               ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"),
               ("\\{1,2\\}", "x\\le 3"), ("3\\cos(2t)", "a_{1}b^{2}"))


def warm_up(grader: str) -> None:
    """Import everything the grader imports lazily (sympy, the LaTeX parser), so that workers
    forked afterwards start warm and the first item's time is not spent importing."""
    fn = resolve(grader, None)
    for pred, gold in _WARM_PAIRS:
        fn(pred, gold)


def grader_modules(grader: str) -> tuple[str, ...]:
    """The module that registers ``grader``, for a worker that does not inherit the registration
    (forkserver, spawn): a grader registered by any importable module works there too. A grader
    of the main script is re-registered by multiprocessing's own import of it as ``__mp_main__``."""
    mod = getattr(resolve(grader, None), "__module__", None)
    return () if mod in (None, "__main__", "__mp_main__") else (mod,)


def _worker(conn, grader: str, modules: tuple[str, ...] = ()) -> None:
    # Import what registers the grader, warm it (a no-op when forked from a warm server or
    # parent), say so, then serve messages (index, pred, gold, benchmark) until None or EOF.
    try:
        import importlib

        for m in modules:
            importlib.import_module(m)
        warm_up(grader)
    except Exception:
        pass
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, pred, gold, bench = msg
        r = grade_one(grader, pred, gold, bench)
        conn.send((i, r.correct, r.flagged, r.seconds))


class _Slot:
    def __init__(self, ctx, grader: str):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, grader, grader_modules(grader)), daemon=True)
        self.proc.start()
        child.close()
        try:
            ready = self.parent.poll(_READY_TIMEOUT_S) and self.parent.recv() == "ready"
        except (EOFError, OSError):  # the worker exited while starting
            self.kill()
            hint = ("" if ctx.get_start_method() == "fork" else
                    f"; a worker started by {ctx.get_start_method()} imports the main script again (as "
                    "multiprocessing does), so it must be a file whose entry point is guarded by "
                    "`if __name__ == \"__main__\":`")
            raise RuntimeError(f"grading worker for {grader!r} exited while starting (exit code "
                               f"{self.proc.exitcode}){hint}") from None
        if not ready:
            self.kill()
            raise RuntimeError(f"grading worker for {grader!r} did not start within "
                               f"{_READY_TIMEOUT_S:.0f} s")
        self.item: int | None = None
        self.started = 0.0
        self.cpu0: float | None = None
        self.next_check = 0.0  # when to look at this item's budget next
        self.wall_deadline = 0.0

    def begin(self, timeout: float, wall_cap: float, clock: str) -> None:
        """Start the clocks of a new item (call just before sending it)."""
        self.started = time.perf_counter()
        self.cpu0 = process_cpu_seconds(self.proc.pid) if clock == "cpu" else None
        self.wall_deadline = self.started + (wall_cap if self.cpu0 is not None else timeout)
        self.next_check = min(self.started + timeout, self.wall_deadline)

    def over_budget(self, timeout: float) -> bool:
        """Has the current item used up its budget? Otherwise schedule the next look: CPU time
        cannot grow faster than wall time (one thread), so the budget cannot run out earlier."""
        now = time.perf_counter()
        if now >= self.wall_deadline:
            return True
        if self.cpu0 is None:  # wall clock
            return now >= self.next_check
        cpu = process_cpu_seconds(self.proc.pid)
        if cpu is None:  # the process is gone: its pipe will tell
            self.next_check = now + _MIN_CHECK_S
            return False
        used = cpu - self.cpu0
        if used >= timeout:
            return True
        self.next_check = min(now + max(_MIN_CHECK_S, timeout - used), self.wall_deadline)
        return False

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.parent.close()


def _context(grader: str, start_method: str | None = None):
    """The start method of the workers, ready to start them: forkserver by default (spawn where
    there is none), whose server is started here with ``grader`` warm; ``"fork"`` (asked for
    explicitly) warms the grader in this process first, so that forked workers inherit it."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "fork":
        warm_up(grader)
    elif start_method == "forkserver":
        _ensure_forkserver(grader)
    return ctx


def _ensure_forkserver(grader: str) -> None:
    """Start multiprocessing's forkserver (once per process) with the grader imported and warm.

    The server is a new interpreter: it gets this process's ``sys.path`` through ``PYTHONPATH``
    (Python 3.11's forkserver ignores the ``sys_path`` it is handed, so it would otherwise import
    ``repro`` from wherever its own path finds it) and the grader's name through ``WARM_ENV``,
    both set only while it starts. The preload list is multiprocessing's global one; the main
    script is left out of it (each worker imports it as ``__mp_main__``, as spawn does), so an
    unguarded main cannot break the server. A server already running (started earlier, by this
    pool for another grader or by other code) is used as it is; its workers warm themselves."""
    global _forkserver_started_in
    from multiprocessing import forkserver

    with _FORKSERVER_LOCK:
        if _forkserver_started_in == os.getpid():  # environment written once per process
            forkserver.ensure_running()  # (a server that died is restarted, without the warm-up)
            return
        mods = ("repro.grading.forkserver_warm", *grader_modules(grader))
        forkserver.set_forkserver_preload(list(dict.fromkeys(mods)))
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", WARM_ENV)}
        path = [p for p in sys.path if p] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])
        os.environ["PYTHONPATH"] = os.pathsep.join(path)
        os.environ[WARM_ENV] = grader
        try:
            forkserver.ensure_running()
            _forkserver_started_in = os.getpid()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def grade_many(grader: str, items: Sequence[tuple[str, str, str | None]], *, workers: int = 2,
               timeout: float = DEFAULT_TIMEOUT_S, progress: bool = False,
               desc: str | None = None, start_method: str | None = None,
               clock: str = "cpu", wall_cap: float | None = None) -> list[GradeResult]:
    """Grade ``items`` = [(pred, gold, benchmark), ...] with the named grader; results in the
    order of ``items``.

    ``timeout``: the per-item budget in seconds of ``clock`` ("cpu": the worker's CPU time, the
    default; "wall": elapsed time); ``wall_cap``: the wall-clock limit per item in CPU mode.
    Items that share a gold are handed to the same worker one after another, so the gold's
    parse (cached in the worker) is reused; the order in which items are graded changes no
    verdict. ``workers=0`` grades in this process with no timeout (only for trusted, small
    inputs).
    """
    items = list(items)
    if timeout <= 0:
        raise ValueError("timeout must be > 0")
    if clock not in ("cpu", "wall"):
        raise ValueError("clock must be 'cpu' or 'wall'")
    cap = default_wall_cap(timeout) if wall_cap is None else float(wall_cap)
    resolve(grader, None)  # fail fast on an unknown grader
    if workers <= 0 or not items:
        return [grade_one(grader, p, g, b) for p, g, b in items]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc or f"grading ({grader})", unit="ans")
    ctx = _context(grader, start_method)
    results: list[GradeResult | None] = [None] * len(items)
    slots = [_Slot(ctx, grader) for _ in range(min(workers, len(items)))]
    # groups of items with the same (gold, benchmark), in order of first appearance; a free
    # worker takes the next item of the group it last worked on, else the next untouched group
    groups: dict[tuple, list[int]] = {}
    for i, (_, g, b) in enumerate(items):
        groups.setdefault((g, b), []).append(i)
    queues = [list(reversed(v)) for v in groups.values()]
    queues.reverse()  # pop() from the end: first group first
    current: dict[_Slot, list[int]] = {}
    done = 0

    def feed(slot: _Slot) -> None:
        q = current.get(slot)
        if not q:
            q = None
            while queues and q is None:
                q = queues.pop() or None
            if q is None:  # no untouched group left: share the longest one still in progress
                q = max((v for v in current.values() if v), key=len, default=None)
            if q is None:
                slot.item = None
                current.pop(slot, None)
                return
            current[slot] = q
        i = q.pop()
        p, g, b = items[i]
        slot.item = i
        slot.begin(timeout, cap, clock)
        slot.parent.send((i, p, g, b))

    def _replace(old: _Slot) -> _Slot:
        old.kill()
        new = _Slot(ctx, grader)
        q = current.pop(old, None)
        if q:
            current[new] = q  # the new worker carries on with the same gold
        feed(new)
        return new

    def finish(i: int, r: GradeResult) -> None:
        nonlocal done
        results[i] = r
        done += 1
        if bar is not None:
            bar.update(1)

    try:
        for s in slots:
            feed(s)
        while done < len(items):
            busy = [s for s in slots if s.item is not None]
            if not busy:  # cannot happen: every remaining item is in a queue a worker takes
                raise RuntimeError("grading pool lost track of its items")
            now = time.perf_counter()
            wait_s = max(0.0, min(s.next_check for s in busy) - now)
            ready = wait([s.parent for s in busy], timeout=wait_s)
            for k, s in enumerate(slots):
                if s.item is None:
                    continue
                if s.parent in ready:
                    try:
                        i, ok, flag, sec = s.parent.recv()
                    except (EOFError, OSError):
                        finish(s.item, GradeResult(False, "crash", time.perf_counter() - s.started))
                        slots[k] = _replace(s)
                        continue
                    finish(i, GradeResult(ok, flag, sec))
                    feed(s)
                elif time.perf_counter() >= s.next_check and s.over_budget(timeout):
                    finish(s.item, GradeResult(False, "timeout", time.perf_counter() - s.started))
                    slots[k] = _replace(s)
    finally:
        for s in slots:
            try:
                if s.proc.is_alive() and s.item is None:
                    s.parent.send(None)
            except OSError:
                pass
            s.kill()
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]


class GradingPool:
    """Long-lived workers for callers that grade one item at a time, from many threads at once
    (OpenRLHF's reward file, called through ``asyncio.to_thread`` once per sample).

    Same guarantees as ``grade_many`` (each item in a worker process; past ``timeout`` seconds of
    ``clock`` the worker is killed and replaced and the item is flagged ``"timeout"``), without
    paying a worker start per call. ``grade`` blocks while all workers are busy; the budget
    starts when the item reaches a worker. An unknown grader raises ``ValueError`` here, at
    construction.
    """

    def __init__(self, grader: str, *, workers: int = 2, timeout: float = DEFAULT_TIMEOUT_S,
                 start_method: str | None = None, clock: str = "cpu",
                 wall_cap: float | None = None):
        import queue

        if timeout <= 0 or workers < 1:
            raise ValueError("timeout must be > 0 and workers >= 1")
        if clock not in ("cpu", "wall"):
            raise ValueError("clock must be 'cpu' or 'wall'")
        resolve(grader, None)  # fail fast on an unknown grader
        self.grader, self.timeout, self.clock = grader, float(timeout), clock
        self.wall_cap = default_wall_cap(self.timeout) if wall_cap is None else float(wall_cap)
        self._ctx = _context(grader, start_method)
        # a None entry is a worker to (re)start on its next use, so a failed restart never
        # loses a place in the pool
        self._free: queue.Queue = queue.Queue()
        for _ in range(workers):
            self._free.put(None)
        self._n = workers

    def grade(self, pred: str, gold: str, benchmark: str | None = None) -> GradeResult:
        slot, keep = self._free.get(), None
        try:
            if slot is None:
                slot = _Slot(self._ctx, self.grader)
            t = time.perf_counter()
            try:
                slot.begin(self.timeout, self.wall_cap, self.clock)
                slot.parent.send((0, pred, gold, benchmark))
                while True:
                    if slot.parent.poll(max(0.0, slot.next_check - time.perf_counter())):
                        _, ok, flag, sec = slot.parent.recv()
                        keep = slot
                        return GradeResult(ok, flag, sec)
                    if slot.over_budget(self.timeout):
                        break
                flag = "timeout"
            except (EOFError, OSError):
                flag = "crash"
            return GradeResult(False, flag, time.perf_counter() - t)
        finally:
            if keep is None and slot is not None:
                slot.kill()  # timed out, crashed or interrupted: its place restarts on next use
            self._free.put(keep)

    def start(self) -> "GradingPool":
        """Start every worker now (else each starts on first use): a worker that cannot start
        raises here."""
        places = [self._free.get() for _ in range(self._n)]
        try:
            for i, s in enumerate(places):
                if s is None:
                    places[i] = _Slot(self._ctx, self.grader)
        finally:
            for s in places:
                self._free.put(s)
        return self

    def close(self) -> None:
        import queue

        for _ in range(self._n):
            try:
                s = self._free.get(timeout=self.timeout + 5)
            except queue.Empty:
                break
            if s is not None:
                try:
                    s.parent.send(None)
                except OSError:
                    pass
                s.kill()
