"""A conformance suite every Store backend must pass (in the spirit of a journal spec).

Subclass :class:`StoreConformance` in a test module and say how to open a
fresh store; pytest then runs every ``test_*`` method against it::

    from atomr import MemoryStore
    from atomr.testing import StoreConformance

    class TestMemory(StoreConformance):
        def make_store(self, tmp_path):
            return MemoryStore(snapshot_every=2)

A backend that keeps data across processes also implements
:meth:`StoreConformance.reopen_store` (close, then open the same data again);
the reopen tests are skipped for one that does not.

The suite talks to the store only through the :class:`~atomr.store.base.Store`
protocol, plus the ``_corrupt(workflow_id, run_id, seq, data)`` test hook that
overwrites one journal record in place (the corruption tests are skipped for a
backend without it). Run state is rebuilt with the same pure fold the runtime
uses (:mod:`atomr.graph.superstep`) over a small real workflow plan.

The tests are grouped in mixins (journal, history, robustness, schedules, ids
and values of every kind) over a shared
base of hooks and helpers; the plan and journals they use come from
:mod:`atomr.testing.journals`.
"""

from __future__ import annotations

from atomr.testing._history_tests import HistoryTests
from atomr.testing._ids_tests import IdsTests
from atomr.testing._journal_tests import JournalTests
from atomr.testing._robustness_tests import RobustnessTests
from atomr.testing._schedule_tests import ScheduleTests
from atomr.testing.journals import (
    check_rehydration,
    demo_events,
    demo_plan,
    encode_batch,
    filler_events,
    fold,
    full_replay,
)

__all__ = [
    "StoreConformance",
    "demo_plan",
    "demo_events",
    "filler_events",
    "encode_batch",
    "fold",
    "full_replay",
    "check_rehydration",
]


class StoreConformance(JournalTests, HistoryTests, RobustnessTests, ScheduleTests, IdsTests):
    """Behaviour every Store backend shares. Subclass it and implement :meth:`make_store`
    (and :meth:`reopen_store` for a backend that keeps data across close())."""
