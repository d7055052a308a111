"""Run control: cancel a run, wake a sleeping one.

Mixin of :class:`~atomr.Runtime`. Threads: the caller's (the asyncio twins
await). Every control is durable: it is a journal event of the run, replayed
on rehydration, visible in ``get_state`` / ``runs()`` / the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atomr._load import load_progress
from atomr._maintain import check_run_id
from atomr.errors import AtomrError, RunNotFound, RunOver
from atomr.graph import superstep as algo
from atomr.messages import Cancel
from atomr.types import Cancelled

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["RunControl"]


class RunControl:
    """Mixin of :class:`~atomr.Runtime`: ``cancel``, ``acancel``, ``wake``."""

    def wake(self: Runtime, workflow_id: str, run_id: str) -> None:
        """Wake a sleeping run now (its ``ctx.sleep`` returns early). Raises
        RunNotFound, or AtomrError when the run has no pending sleep."""
        self._check_open()
        wf = self.workflow(workflow_id)
        p = load_progress(self.store, wf.plan, wf.id, check_run_id(run_id))
        if p is None:
            raise RunNotFound(wf.id, run_id)
        sleeps = algo.pending_sleeps(p)
        if not sleeps:
            raise AtomrError(f"run {wf.id}/{run_id} is {p.status} and has no pending sleep; nothing to wake")
        self._core.sleeper.wake_now(wf, run_id, sorted(sleeps))

    def _arm_sleepers(self: Runtime, wf: Any) -> None:
        for s in self.store.runs(status="sleeping", workflow_id=wf.id):
            p = load_progress(self.store, wf.plan, wf.id, s.run_id)
            if p is not None:
                self._core.sleeper.arm(wf, s.run_id, algo.pending_sleeps(p))

    def _send_cancel(self: Runtime, workflow_id: str, run_id: str, reason: Any, local: bool = False) -> Any:
        self._check_open()
        wf = self.workflow(workflow_id)
        check_run_id(run_id)
        if not isinstance(reason, str):
            raise AtomrError(f"reason must be a str, got {type(reason).__name__}")
        try:
            reason.encode("utf-8")
        except UnicodeEncodeError:
            raise AtomrError(f"reason {reason!r} cannot be stored (a lone surrogate); pass plain text") from None
        summary = self.store.summary(wf.id, run_id)
        if summary is None and not self._core.supervisor.is_live(wf.id, run_id):
            raise RunNotFound(wf.id, run_id)
        if summary is not None and summary.status == "done":
            raise RunOver(f"run {wf.id}/{run_id} is done: there is nothing to cancel; "
                          "fork it (rt.fork) to run it again")
        if not local and summary is not None and summary.status == "running" and self._core.follow is not None \
                and not self._core.supervisor.is_live(wf.id, run_id):
            # it executes in another worker (or waits for one): ask its owner, follow the outcome
            inbox = self._inbox(wf.id, run_id)
            if self.store.ask_cancel(wf.id, run_id, reason):  # type: ignore[attr-defined]
                self._core.follow.watch((wf.id, run_id), inbox)
                if self._worker is not None:
                    self._worker.poke()
                return inbox
        flag = self._core.cancel_flags.get((wf.id, run_id))
        if flag is not None:
            flag.reason = reason
            flag.set()  # a plain step sees ctx.cancelled at once, even mid-step
        inbox = self._inbox(wf.id, run_id)
        self._core.supervisor.route(wf, run_id, Cancel(reason, inbox, inbox))
        return inbox

    def cancel(self: Runtime, workflow_id: str, run_id: str, reason: str = "", *,
               timeout: float | None = None) -> Cancelled:
        """Cancel a running, paused, failed or sleeping run; returns its
        :class:`~atomr.Cancelled` outcome once durable. An ``async def`` step in
        flight gets ``asyncio.CancelledError``; a plain step can poll
        ``ctx.cancelled`` (it cannot be killed, and the cancel does not wait
        for it: the outcome comes at once). Writes of steps that finish later
        are discarded, the super-step in flight is not committed, a Subgraph's
        child runs are cancelled too. A cancelled run cannot be resumed; it can be forked.
        Cancelling a cancelled run returns its outcome again. Raises
        RunNotFound, RunOver (the run is done)."""
        t = self._wait_s(timeout)
        inbox = self._send_cancel(workflow_id, run_id, reason)
        return self._cancelled(workflow_id, run_id, inbox.wait("outcome", t), t)

    async def acancel(self: Runtime, workflow_id: str, run_id: str, reason: str = "", *,
                      timeout: float | None = None) -> Cancelled:
        """:meth:`cancel`, awaited."""
        t = self._wait_s(timeout)
        inbox = await self._on_starter(self._send_cancel, workflow_id, run_id, reason)
        return self._cancelled(workflow_id, run_id, await inbox.await_attr("outcome", t), t)

    def _cancelled(self: Runtime, workflow_id: str, run_id: str, out: Any, t: float) -> Cancelled:
        self._check_reply(workflow_id, run_id, out, t)
        if not isinstance(out, Cancelled):
            raise AtomrError(f"run {workflow_id}/{run_id} ended as {type(out).__name__} before the cancel "
                             "took effect")
        return out
