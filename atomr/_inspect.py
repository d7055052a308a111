"""Reading runs back: state, history, checkpoints, summaries; and handles on runs.

Mixin of :class:`~atomr.Runtime`. Threads: the caller's; reads are LMDB read
transactions (any thread, no lock against the writer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomr import _maintain
from atomr._edge import view_of
from atomr._load import iter_checkpoints, load_progress
from atomr._maintain import check_run_id
from atomr.errors import RunNotFound
from atomr.graph import superstep as algo
from atomr.handle import RunHandle
from atomr.store.base import RunSummary
from atomr.types import Checkpoint, StateView

if TYPE_CHECKING:
    from atomr.runtime import Runtime
    from atomr.workflow import Workflow

__all__ = ["Inspection"]


class Inspection:
    """Mixin of :class:`~atomr.Runtime`: the read side."""

    def _progress(self: Runtime, workflow_id: str, run_id: str) -> tuple[Workflow, algo.RunProgress]:
        wf = self.workflow(workflow_id)
        p = load_progress(self.store, wf.plan, wf.id, check_run_id(run_id))
        if p is None:
            raise RunNotFound(workflow_id, run_id)
        return wf, p

    def get_state(self: Runtime, workflow_id: str, run_id: str) -> StateView:
        """The run as of its last committed event."""
        self._check_open()
        wf, p = self._progress(workflow_id, run_id)
        return view_of(wf, p)

    def history(self: Runtime, workflow_id: str, run_id: str) -> list[Checkpoint]:
        """Every checkpoint, oldest first (starting with "input" at super-step 0)."""
        self._check_open()
        wf = self.workflow(workflow_id)
        if self.store.summary(wf.id, check_run_id(run_id)) is None:
            raise RunNotFound(workflow_id, run_id)
        return [c for c, _ in iter_checkpoints(self.store, wf.plan, wf.id, run_id)]

    def state_at(self: Runtime, workflow_id: str, run_id: str, super_step: int) -> Checkpoint:
        """The last checkpoint of ``super_step``."""
        self._check_open()
        return _maintain.checkpoint_at(self, self.workflow(workflow_id), check_run_id(run_id), super_step)[0]

    def runs(self: Runtime, status: str | None = None, workflow_id: str | None = None, limit: int | None = None,
             before: str | None = None) -> list[RunSummary]:
        """Run summaries from the run index (no journal is read), newest first by
        creation. ``status`` / ``workflow_id``: only those; ``limit``: at most that
        many (None: every one); ``before``: the ``cursor`` of the last summary of
        the page before, to list the next page::

            page = rt.runs(status="paused", limit=50)
            more = rt.runs(status="paused", limit=50, before=page[-1].cursor)

        A page is read through the indexes the store keeps (by status, by
        workflow): it costs the same with 100 runs or a million. StoreError for an
        unknown status, a limit out of 1..1,000,000 or a cursor this API did not give."""
        self._check_open()
        return self.store.runs(status=status, workflow_id=workflow_id, limit=limit, before=before)

    def handle(self: Runtime, workflow_id: str, run_id: str) -> RunHandle:
        """A handle on an existing run, to watch it: ``stream``/``astream``
        from any cursor, and ``result()``/``await`` for its next outcome
        (a settled run's is at hand). Watching never drives a run."""
        self._check_open()
        wf = self.workflow(workflow_id)
        check_run_id(run_id)
        if self.store.summary(wf.id, run_id) is None and not self._core.supervisor.is_live(wf.id, run_id):
            raise RunNotFound(wf.id, run_id)
        return RunHandle(self, wf.id, run_id, None)
