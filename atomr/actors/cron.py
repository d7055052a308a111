"""Schedule timers: start each schedule's runs on time while a runtime has the store open.

Like the sleeper (:mod:`atomr.actors.sleeper`), this keeps one timer per
armed schedule on the runtime's timer heap — no thread per schedule. When a
timer fires, the timer thread only queues the firing; one short-lived worker
thread (``atomr-schedules``, started when something is queued, gone when the
queue is empty) does what may block: read the schedule, check the previous
run, start the run (durable before it returns), record the firing in the
store through the writer thread, arm the next due time.

A firing starts run ``<schedule id>@<due time>`` with ``if_exists="attach"``:
a due time fired twice (a restart after the run started but before the
firing was recorded, two timers for one schedule) still makes one run.
Threads: ``arm``/``disarm`` from any thread; ``tell`` from the timer thread.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from atomr._hooks import logger
from atomr.actors.cron_rules import ACTIVE, due_text, iso_ms, merge, plan, run_id_for
from atomr.errors import AtomrError, RuntimeClosed, StoreError
from atomr.store.base import Store, now_ms
from atomr.store.schedules import ScheduleRecord

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Cron", "upsert", "record_firing"]

log = logger("atomr.schedules")


def upsert(store: Store, new: ScheduleRecord) -> ScheduleRecord:
    """Store ``new`` over the schedule of the same id (writer thread); returns
    what is stored (see :func:`~atomr.actors.cron_rules.merge`)."""
    try:
        old = store.get_schedule(new.schedule_id)
    except StoreError:
        old = None  # a damaged record is replaced
    rec = merge(old, new)
    if rec is not old:
        store.put_schedule(rec)
    return rec


def record_firing(store: Store, schedule_id: str, due_ms: int, **changes: Any) -> ScheduleRecord | None:
    """Record that due time ``due_ms`` was handled (writer thread). Keeps the
    definition as stored now (it may have changed meanwhile); None when the
    schedule was removed."""
    cur = store.get_schedule(schedule_id)
    if cur is None:
        return None
    if cur.last_due_ms is not None and cur.last_due_ms >= due_ms:
        return cur  # handled already
    new = replace(cur, last_due_ms=due_ms, **changes)
    store.put_schedule(new)
    return new


@dataclass(frozen=True, slots=True)
class _Due:
    schedule_id: str
    due_ms: int
    version: int


class Cron:
    """The schedule timers of one runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        #: held by a firing and by every change of a schedule record (a MemoryStore writes in the
        #: caller's thread): once unschedule() returns, no firing of that schedule is under way
        self.write_lock = threading.RLock()
        self._armed: dict[str, tuple[int, _Due]] = {}
        self._owned: set[str] = set()  # armed, or firing (re-armed once done)
        self._queue: deque[_Due] = deque()
        self._worker: threading.Thread | None = None

    # -- timers ----------------------------------------------------------------

    def arm(self, rec: ScheduleRecord) -> None:
        """Arm the schedule's next due time (replacing a timer armed before)."""
        if self.rt._closed:
            return
        now = now_ms()
        msg = _Due(rec.schedule_id, plan(rec, now), rec.version)
        with self._lock:
            old = self._armed.get(rec.schedule_id)
            if old is not None:
                if old[1] == msg or old[1].version > msg.version:
                    return  # armed already, or for a newer definition (a firing raced a redefinition)
                self.rt._core.scheduler.cancel(old[0])
            handle = self.rt._core.scheduler.tell_later(max(0, msg.due_ms - now) / 1000, self, msg)
            self._armed[rec.schedule_id] = (handle, msg)
            self._owned.add(rec.schedule_id)

    def disarm(self, schedule_id: str) -> None:
        with self._lock:
            self._owned.discard(schedule_id)
            old = self._armed.pop(schedule_id, None)
            if old is not None:
                self.rt._core.scheduler.cancel(old[0])

    def is_armed(self, schedule_id: str) -> bool:
        """True while this runtime fires the schedule (a timer armed, or a firing under way)."""
        with self._lock:
            return schedule_id in self._owned

    def armed(self) -> int:
        with self._lock:
            return len(self._armed)

    def tell(self, msg: _Due) -> None:
        """A timer fired (timer thread): queue the firing for the worker."""
        with self._lock:
            cur = self._armed.get(msg.schedule_id)
            if cur is None or cur[1] != msg:
                return  # re-armed or disarmed meanwhile
            del self._armed[msg.schedule_id]
            self._queue.append(msg)
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, name="atomr-schedules", daemon=True)
                self._worker.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self.rt._closed:
                    self._queue.clear()
                    self._worker = None
                    return
                msg = self._queue.popleft()
            try:
                self._fire(msg)
            except Exception:  # noqa: BLE001 - one schedule's trouble must not stop the others
                if not self.rt._closed:
                    log.exception("schedule %s: firing for %s failed", msg.schedule_id, iso_ms(msg.due_ms))

    # -- one firing (worker thread) ---------------------------------------------

    def _forget(self, schedule_id: str) -> None:
        with self._lock:
            if schedule_id not in self._armed:
                self._owned.discard(schedule_id)

    def _fire(self, msg: _Due) -> None:
        with self.write_lock:
            self._fire_locked(msg)

    def _fire_locked(self, msg: _Due) -> None:
        rt = self.rt
        if rt._closed:
            return
        rec = rt.store.get_schedule(msg.schedule_id)
        if rec is None or rec.version != msg.version:
            if rec is None:
                self._forget(msg.schedule_id)
            return  # removed, or redefined (the new definition was armed)
        wf = rt._core.workflows.get(rec.workflow_id)
        if wf is None:
            self._forget(rec.schedule_id)
            return
        due = msg.due_ms
        if rec.last_due_ms is not None and rec.last_due_ms >= due:
            self.arm(rec)
            return
        rid = run_id_for(rec, due)
        if rec.overlap == "skip" and rec.last_run_id not in (None, rid) and self._active(rec):
            log.info("schedule %s: skipped %s, run %s is still active", rec.schedule_id, iso_ms(due),
                     rec.last_run_id)
            self._record(rec, due, skipped=rec.skipped + 1, last_error=None)
            return
        meta = {**rec.meta, "schedule": rec.schedule_id, "due": due_text(rec, due)}
        try:
            # a run for this due time may exist: started before a crash cut the firing's record
            again = rt.store.summary(wf.id, rid) is not None
            rt.start(wf.id, rec.input, run_id=rid, meta=meta, if_exists="attach")
        except RuntimeClosed:
            return
        except AtomrError as exc:
            if rt._closed:
                return
            text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.warning("schedule %s: could not start run %s: %s", rec.schedule_id, rid, text)
            self._record(rec, due, last_error=text[:500])
            return
        self._record(rec, due, last_run_id=rid, last_fired_ms=now_ms(), fired=rec.fired + (not again),
                     last_error=None)

    def _active(self, rec: ScheduleRecord) -> bool:
        try:
            s = self.rt.store.summary(rec.workflow_id, rec.last_run_id or "")
        except StoreError:
            return False  # a damaged run index entry does not hold the schedule up
        return s is not None and s.status in ACTIVE

    def _record(self, rec: ScheduleRecord, due: int, **changes: Any) -> None:
        """Record the firing durably, then arm the next due time."""
        sid = rec.schedule_id
        try:
            with self.write_lock:
                new = self.rt._maintain(lambda store: record_firing(store, sid, due, **changes))
        except Exception as exc:  # noqa: BLE001 - closed meanwhile, or the store refused
            if self.rt._closed:
                return
            log.warning("schedule %s: could not record the firing for %s (%s); going on", sid, iso_ms(due), exc)
            new = replace(rec, last_due_ms=due, **changes)  # run ids keep a re-fire from duplicating
        if new is not None and self.rt._core.workflows.get(new.workflow_id) is not None:
            self.arm(new)
        else:
            self._forget(sid)
