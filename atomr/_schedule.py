"""Schedules: start runs of a workflow on a cron expression or every N seconds.

Mixin of :class:`~atomr.Runtime`. A schedule is a record in the store (see
:mod:`atomr.store.schedules`); whichever runtime has the store open and the
schedule's workflow registered starts its runs on time (the timers are in
:mod:`atomr.actors.cron`, the rules in :mod:`atomr.actors.cron_rules`). The
run for a due time is ``<schedule id>@<due time, ISO 8601 UTC>``, started
with ``if_exists="attach"``, so a restart never starts one twice.

Threads: the caller's; records are written in the store's writer thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from atomr._hooks import logger
from atomr.actors.cron import Cron, upsert
from atomr.actors.cron_rules import Schedule, ScheduleError, ScheduleNotFound, define, describe
from atomr.errors import ScheduleExists, StoreError
from atomr.store.base import Store, now_ms
from atomr.store.schedules import ScheduleRecord

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Schedules", "Schedule", "ScheduleError", "ScheduleExists", "ScheduleNotFound"]

log = logger("atomr.schedules")
_CREATE = threading.Lock()


class Schedules:
    """Mixin of :class:`~atomr.Runtime`: ``schedule``, ``unschedule``, ``schedules``."""

    #: Set to False (before registering workflows) in a process that must not
    #: start scheduled runs, e.g. a short-lived tool that only inspects runs.
    fire_schedules: bool = True

    def schedule(self: Runtime, schedule_id: str, workflow_id: str, *, cron: str | None = None,
                 every_s: float | None = None, input: Mapping[str, Any] | None = None,
                 overlap: str = "skip", catch_up: str = "none",
                 meta: Mapping[str, Any] | None = None, replace: bool = True) -> Schedule:
        """Start runs of ``workflow_id`` on ``cron`` (5 fields, UTC; needs the
        ``croniter`` package) or every ``every_s`` seconds (due on the multiples
        of it since the epoch), each with ``input``.

        ``overlap``: "skip" (default) skips a due time while the schedule's
        previous run is running, paused, sleeping or queued; "allow" starts it
        anyway. ``catch_up``: what to do about due times missed while no
        runtime had the store open — "none" (default) waits for the next one,
        "one" starts one run at once for the latest missed. ``meta`` goes to
        every run's meta (with ``schedule`` and ``due``).

        Stored durably; defining an existing id again replaces its definition
        and keeps its firing state (the same definition changes nothing, so an
        app may call this at every start); ``replace=False`` raises
        ScheduleExists for an existing id instead (checked in the store's writer
        thread: two concurrent definitions of one id make one schedule). The
        schedule fires while a runtime with its workflow registered has the
        store open. Returns its description. Raises ScheduleError (naming the bad argument),
        UnknownChannelError / MissingInput (input, when the workflow is registered).
        """
        return self._define_schedule(schedule_id, workflow_id, cron=cron, every_s=every_s, input=input,
                                     overlap=overlap, catch_up=catch_up, meta=meta, replace=bool(replace))

    def _define_schedule(self: Runtime, schedule_id: str, workflow_id: str, *, cron: str | None,
                         every_s: float | None, input: Mapping[str, Any] | None, overlap: str, catch_up: str,
                         meta: Mapping[str, Any] | None, replace: bool) -> Schedule:
        """:meth:`schedule`; with ``replace=False`` an existing id raises
        ScheduleExists instead (checked in the store's writer thread, so two
        concurrent definitions of one id make one schedule)."""
        self._check_open()
        wf = self._core.workflows.get(workflow_id) if isinstance(workflow_id, str) else None
        new = define(schedule_id, workflow_id, cron=cron, every_s=every_s, input=input, overlap=overlap,
                     catch_up=catch_up, meta=meta, schema=wf.schema if wf is not None else None)
        cron_ = self._cron()
        armed = wf is not None and self._fires()
        with cron_.write_lock:
            rec = self._maintain(lambda store: upsert(store, new) if replace else _create(store, new))
            if armed:
                cron_.arm(rec)
            else:
                cron_.disarm(rec.schedule_id)  # e.g. moved to a workflow not registered here
        return describe(rec, now_ms(), armed)

    def unschedule(self: Runtime, schedule_id: str) -> None:
        """Remove a schedule: once this returns no run starts for it (a
        firing under way is waited for; runs it started are not touched).
        Raises ScheduleNotFound."""
        self._check_open()
        if not isinstance(schedule_id, str) or not schedule_id:
            raise ScheduleError(f"schedule_id must be a non-empty str, got {schedule_id!r}")
        cron_ = self._cron()
        cron_.disarm(schedule_id)
        with cron_.write_lock:  # waits for a firing under way
            found = self._maintain(lambda store: store.delete_schedule(schedule_id))
            cron_.disarm(schedule_id)
        if not found:
            raise ScheduleNotFound(schedule_id, [r.schedule_id for r in self.store.list_schedules()])

    def schedules(self: Runtime, workflow_id: str | None = None) -> list[Schedule]:
        """The stored schedules (of ``workflow_id``, or all), by id."""
        self._check_open()
        cron_ = self._cron()
        now = now_ms()
        return [describe(r, now, cron_.is_armed(r.schedule_id)) for r in self.store.list_schedules()
                if workflow_id is None or r.workflow_id == workflow_id]

    # -- plumbing ------------------------------------------------------------------

    def _cron(self: Runtime) -> Cron:
        c = self.__dict__.get("_schedule_timers")
        if c is None:
            with _CREATE:
                c = self.__dict__.setdefault("_schedule_timers", Cron(self))
        return c

    def _fires(self: Runtime) -> bool:
        return bool(self.fire_schedules) and not getattr(self.store, "readonly", False)

    def _arm_schedules(self: Runtime, wf: Any) -> None:
        """Arm the timers of the stored schedules of ``wf`` (called by register)."""
        if not self._fires():
            return
        cron_ = None
        for rec in self.store.list_schedules():
            if rec.workflow_id == wf.id:
                cron_ = cron_ or self._cron()
                try:
                    cron_.arm(rec)
                except ScheduleError as exc:  # e.g. a cron schedule where croniter is missing
                    log.warning("schedule %s of workflow %s is not armed: %s", rec.schedule_id, wf.id, exc)


def _create(store: Store, new: ScheduleRecord) -> ScheduleRecord:
    """Store ``new`` unless a schedule of its id exists (writer thread): ScheduleExists."""
    try:
        old = store.get_schedule(new.schedule_id)
    except StoreError:
        old = None  # a damaged record is replaced, as by upsert
    if old is not None:
        raise ScheduleExists(new.schedule_id)
    return upsert(store, new)
