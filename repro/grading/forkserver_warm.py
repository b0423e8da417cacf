"""Imported by the grading pool's forkserver when it starts (``repro.grading.pool.
_ensure_forkserver`` puts it on multiprocessing's preload list): grades the warm-up pairs with
each grader named in ``LGRPO_GRADING_WARM``, so that every worker forked from the server, the
first ones and those that replace killed ones, starts with the grader imported and its parser
caches filled. Importing it anywhere else (the variable unset) does nothing."""
from __future__ import annotations

import os

from repro.grading.pool import WARM_ENV, warm_up

for _name in filter(None, os.environ.get(WARM_ENV, "").split(",")):
    try:
        warm_up(_name)
    except Exception:  # noqa: BLE001 - a worker warms (and reports) on its own
        pass
