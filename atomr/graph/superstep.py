"""The super-step algebra: pure functions over a run's folded state.

No threads, no I/O. The run actor and rehydration call the same functions.
This module gathers them under one name; each lives in a module of its own:

* :mod:`atomr.graph.plan` — :class:`Plan`, a workflow compiled for execution;
* :mod:`atomr.graph.progress` — :class:`RunProgress` and :func:`apply_event`
  (a run's state *is* the fold of its journal), ids, snapshots;
* :mod:`atomr.graph.actions` — :func:`next_action`: what a running run does next;
* :mod:`atomr.graph.commands` — :func:`command_events`: how a Command changes a run;
* :mod:`atomr.graph.drive` — the decisions of the step kinds (Map, Loop,
  Subgraph, any-join) and turning a progress into an outcome.
"""

from __future__ import annotations

from atomr.graph.actions import (
    CommitLayer,
    Complete,
    Dispatch,
    FailRun,
    PauseBefore,
    PauseInterrupt,
    Route,
    Wait,
    after_breakpoint,
    next_action,
)
from atomr.graph.commands import command_events
from atomr.graph.plan import Plan
from atomr.graph.progress import (
    PendingInterrupt,
    RunProgress,
    apply_event,
    commit_values,
    executed_ms,
    pending_sleeps,
    sleep_until,
    idempotency_key,
    interrupt_id,
    looks_like_interrupt_id,
    replay,
    resume_values,
    skipped_steps,
)
from atomr.graph.snapshot import from_snapshot, to_snapshot

__all__ = [
    "Plan",
    "RunProgress",
    "PendingInterrupt",
    "Dispatch",
    "CommitLayer",
    "PauseBefore",
    "PauseInterrupt",
    "Complete",
    "FailRun",
    "Route",
    "Wait",
    "skipped_steps",
    "apply_event",
    "replay",
    "next_action",
    "after_breakpoint",
    "command_events",
    "interrupt_id",
    "looks_like_interrupt_id",
    "idempotency_key",
    "resume_values",
    "to_snapshot",
    "from_snapshot",
    "commit_values",
    "executed_ms",
    "pending_sleeps",
    "sleep_until",
]
