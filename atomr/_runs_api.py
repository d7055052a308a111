"""Runtime's methods on stored runs and workers: recover, ref, fork, prune,
delete, purge, flush, workers (a mixin of :class:`~atomr.Runtime`).

Threads: the caller's; maintenance runs in the store's writer thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pykka

from atomr import _maintain
from atomr._edge import recover_runs
from atomr._maintain import check_run_id
from atomr.errors import AtomrError, RunOwnedElsewhere
from atomr.handle import RunHandle
from atomr.store.sql._owners import WorkerInfo
from atomr.types import Checkpoint

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["RunsAPI", "fork_target"]


def fork_target(at: Any, super_step: Any) -> Any:
    """``fork``'s point: ``at`` or ``super_step=``, exactly one of them."""
    if at is not None and super_step is not None:
        raise AtomrError("pass the fork point once: at=<super-step or Checkpoint> or super_step=<int>, not both")
    at = at if at is not None else super_step
    if at is None:
        raise AtomrError("fork needs a point: at=<super-step> or at=<a Checkpoint from rt.history()>")
    return at


class RunsAPI:
    def recover(self: Runtime, workflow_ids: Iterable[str] | None = None,
                max_active: int | None = 64) -> list[RunHandle]:
        """Carry on every run left "running" in the store (after a crash).

        Only runs of registered workflows are recovered (others are logged and
        skipped). Returns their handles at once. At most ``max_active`` of them
        execute at the same time (None: all at once); the rest start as
        those finish, from a feeder thread — a thousand runs fighting over
        the GIL at once finish later than in waves. A run that cannot be
        recovered raises its error from ``handle.result()``.
        """
        self._check_open()
        return recover_runs(self, workflow_ids, max_active)

    def ref(self: Runtime, workflow_id: str, run_id: str) -> pykka.ActorRef[Any]:
        """The run's ActorRef (spawning or rehydrating it): tell it Run/Resume.
        RunOwnedElsewhere when another worker executes the run."""
        self._check_open()
        wf = self.workflow(workflow_id)
        check_run_id(run_id)
        if self._core.follow is not None and not self._core.supervisor.is_live(wf.id, run_id):
            owner = self.store.live_owner(wf.id, run_id)  # type: ignore[attr-defined]
            if owner is not None:
                raise RunOwnedElsewhere(wf.id, run_id, owner)
        return self._core.supervisor.ref(wf, run_id)

    # -- fork / maintenance ------------------------------------------------

    def fork(
        self: Runtime,
        workflow_id: str,
        run_id: str,
        at: int | Checkpoint | None = None,
        edits: Mapping[str, Any] | None = None,
        new_run_id: str | None = None,
        *,
        super_step: int | None = None,
    ) -> str:
        """A new paused run starting from a checkpoint of ``run_id`` (edits go
        through the reducers). ``at``: a super-step (the state after it; its
        layer runs from the start) or a :class:`~atomr.Checkpoint` from
        :meth:`history` — exactly that one, also one inside a layer (a Loop's
        iteration: the fork goes on with the next). ``super_step=``: the same
        as an int ``at``. Resume it with ``Command()``. Returns its run id."""
        self._check_open()
        return _maintain.fork(self, self.workflow(workflow_id), check_run_id(run_id),
                              fork_target(at, super_step), edits, new_run_id)

    def prune(self: Runtime, workflow_id: str, run_id: str, keep_last: int = 1) -> int:
        """Drop the history of a run before its last ``keep_last`` checkpoints
        (a snapshot is kept at the cut). Returns the number of records removed."""
        self._check_open()
        return _maintain.prune(self, self.workflow(workflow_id), check_run_id(run_id), keep_last)

    def delete(self: Runtime, workflow_id: str, run_id: str) -> bool:
        """Remove a run from the store entirely (refused while it executes)."""
        self._check_open()
        return _maintain.delete(self, workflow_id, run_id)

    def purge(self: Runtime, older_than_s: float, statuses: Iterable[str] = ("done", "failed")) -> int:
        """Delete runs with one of ``statuses`` not updated for ``older_than_s``
        seconds (never a live run). Returns how many."""
        self._check_open()
        return _maintain.purge(self, older_than_s, statuses)

    def _maintain(self: Runtime, fn: Any) -> Any:
        """Run ``fn(store)`` in the store's writer thread."""
        return _maintain.maintain(self, fn)

    def flush(self) -> None:
        """Wait until everything queued for the store is committed."""
        self._check_open()
        _maintain.maintain(self, lambda store: None)

    def workers(self) -> list[WorkerInfo]:
        """The live workers of this runtime's shared store (id, host, pid, started,
        last heartbeat, lease, runs owned); [] for a store only one process opens."""
        self._check_open()
        if self._core.follow is None:
            return []
        return self.store.workers()  # type: ignore[attr-defined,no-any-return]

    def drain(self: Runtime) -> None:
        """Stop taking runs from the store (orphaned, expired or started by clients):
        the runs this worker executes go on, its lease is kept, and runs it starts
        itself still execute here. Before a graceful ``close()``: let in-flight runs
        settle, then close to give the rest up at once. No effect off a shared store."""
        self._check_open()
        if self._worker is not None:
            self._worker.drain()

    def _remote(self: Runtime, workflow_id: str, run_id: str) -> bool:
        """True when a stream of the run follows it through the store: on a shared
        store, unless this worker executes it (or holds it) now. A run another
        worker executes, one waiting in a queue or asleep (any worker may carry it on
        next) and a settled one are all read from the store."""
        if self._core.follow is None:
            return False
        if not self.execute:
            return True  # a client's actor only writes requests: it never streams a run
        key = (workflow_id, run_id)
        sup = self._core.supervisor
        if sup.is_driving(*key) or key in self.store._owned:  # type: ignore[attr-defined]
            return False
        # an actor here for a run the store does not hold yet: it is starting here
        return not (sup.is_live(*key) and self.store.summary(*key) is None)
