"""Keeping the host process's event loop responsive: the collector and the GIL.

An app that embeds a runtime (a FastAPI or aiohttp server, a notebook) shares
one interpreter with it. Two things can hold that interpreter's GIL for long
stretches while many runs execute, freezing the app's event loop:

* a full (generation-2) garbage collection walks every object the collector
  tracks: the modules, classes and functions imported at start-up (often
  over 100,000 of them) as well as the live runs. :func:`tune_process`
  collects once and then ``gc.freeze()`` s what is alive at the first
  Runtime's start, so later full collections walk only what was made since;
  run actors leave no reference cycles when they stop (see
  :meth:`atomr.actors.dispatcher.DispatchedActor._teardown`), so a finished
  run is freed by reference counting, never by a collection;
* the GIL's switch interval: a thread that waits for the GIL asks for it
  after ``sys.getswitchinterval()`` seconds (5 ms by default), and with the
  runtime's few busy threads waiting too, the event loop's thread may wait
  several intervals in a row. :func:`tune_process` lowers the default
  interval to 1 ms (an interval the application set itself is kept);
* after the freeze, CPython's rule that a full collection waits until the
  objects promoted since the last one reach a quarter of the long-lived ones
  no longer spaces them out (the long-lived set left is small), so they come
  every 10th generation-1 collection: :func:`tune_process` sets the third
  threshold to 100 (Python's default thresholds only; an application's own are
  kept). Runs leave no cycles, so atomr loses nothing by collecting less often.

Both are process-wide and applied once, at the first Runtime made in the
process; ``ATOMR_PROCESS_TUNING=off`` in the environment turns them off.

Threads: any (the thread creating the first Runtime).
"""

from __future__ import annotations

import gc
import os
import sys
import threading

__all__ = ["tune_process", "SWITCH_INTERVAL_S", "GC_THRESHOLDS", "ENV"]

#: the GIL switch interval set when the process still has Python's default (5 ms)
SWITCH_INTERVAL_S = 0.001
ENV = "ATOMR_PROCESS_TUNING"
_PY_DEFAULT_INTERVAL = 0.005
#: the collector's thresholds set when the process still has Python's default (700, 10, 10)
GC_THRESHOLDS = (700, 10, 100)
_PY_DEFAULT_THRESHOLDS = (700, 10, 10)

_done = False
_lock = threading.Lock()


def tune_process() -> bool:
    """Freeze the start-up heap, space out full collections and shorten the GIL
    switch interval, once per process (see the module doc). Returns True when
    this call did it."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()
    if gc.get_threshold() == _PY_DEFAULT_THRESHOLDS:
        gc.set_threshold(*GC_THRESHOLDS)
    if abs(sys.getswitchinterval() - _PY_DEFAULT_INTERVAL) < 1e-9:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    return True
