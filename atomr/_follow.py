"""Following runs that execute in another process (workers on a shared store).

A handle, a stream or a cancel of this process may watch a run that another
worker executes (or that this process, a client, handed to the workers).
:class:`Follower` watches such runs through the store: it reads the run index
rows of every watched run in one query per wake-up, and for a run whose
journal grew it reads the new events, tells them to the watching streams as
:class:`~atomr.messages.Tap` s, and once the run settles tells each handle its
outcome (and each stream :class:`~atomr.messages.StreamEnd`).

Wake-ups: on Postgres, a ``NOTIFY`` that every group commit sends (the
follower's own LISTENing connection; an outcome reaches a waiting client
within 20 ms of its commit: one look per 20 ms at most), looking at least every 100 ms; on
SQLite, a poll every ``poll_s`` (50 ms). ``ctx.emit`` items (never
journaled) come as NOTIFY payloads on Postgres (:mod:`atomr.store.sql._pgnotify`);
on SQLite they stay in the executing process.

Threads: one daemon thread per runtime (lazy, ``atomr-follow``); ``watch`` /
``subscribe`` from any thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atomr._hooks import logger
from atomr._load import load_progress
from atomr._run.subscribers import tell
from atomr.errors import RunNotFound
from atomr.graph.drive import outcome_of
from atomr.messages import Custom, Rejected, StreamEnd, Subscribed, Tap
from atomr.store.sql._pgnotify import decode_item

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Follower"]

log = logger("atomr.follow")

#: the least time between two looks (a burst of NOTIFYs is one look)
GAP_S = 0.02
#: statuses of a run that is not settled (a handle watches on)
_MOVING = ("running", "queued", "sleeping")


@dataclass
class _Watch:
    seq: int = -1  # journal position the sinks have been told up to (-1: not read yet)
    inboxes: list[Any] = field(default_factory=list)
    sinks: list[Any] = field(default_factory=list)


class Follower:
    """Watches runs executing elsewhere (see the module docstring)."""

    def __init__(self, rt: Runtime, poll_s: float = 0.05) -> None:
        self.rt = rt
        #: seconds between polls (without NOTIFY wake-ups)
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._conn: Any = None  # Postgres: the LISTENing connection
        self._retry_at = 0.0

    # -- any thread ----------------------------------------------------------------------

    def watch(self, key: tuple[str, str], inbox: Any) -> None:
        """Tell ``inbox`` the run's outcome once it settles (wherever it executes)."""
        with self._lock:
            self._watches.setdefault(key, _Watch()).inboxes.append(inbox)
        self._start()
        self._wake.set()

    def subscribe(self, key: tuple[str, str], sink: Any) -> None:
        """Answer a stream's Subscribe from the store: Subscribed at the journal's
        position now, then Taps as it grows, then StreamEnd."""
        s = self.rt.store.summary(*key)
        if s is None:
            sink.tell(Subscribed(0, "new", 1, []))
            return
        sink.tell(Subscribed(s.last_seq, s.status, s.last_seq + 1, []))
        if s.status not in _MOVING:
            return
        with self._lock:
            w = self._watches.setdefault(key, _Watch())
            w.sinks.append((sink, s.last_seq))
        self._start()

    def poke(self) -> None:
        """Something was committed (a NOTIFY): look now."""
        self._wake.set()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()

    def watching(self) -> int:
        with self._lock:
            return len(self._watches)

    # -- the follower's thread ------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="atomr-follow", daemon=True)
                    self._thread.start()

    def _wait(self) -> None:
        """Until a commit (Postgres NOTIFY), a poke, or ``poll_s``."""
        listen = getattr(self.rt.store, "listener", None)
        if listen is not None and self._conn is None and time.monotonic() >= self._retry_at:
            try:
                self._conn = listen()
            except Exception:  # noqa: BLE001 - poll until the server is back
                self._retry_at = time.monotonic() + 5
        if self._conn is None:
            self._wake.wait(self.poll_s)
            self._wake.clear()
            return
        try:
            for n in self._conn.notifies(timeout=0.0 if self._wake.is_set() else 0.1, stop_after=1):
                if n.payload:
                    self._custom(n.payload)
            while True:  # the rest that arrived meanwhile, without waiting
                got = [n for n in self._conn.notifies(timeout=0.0, stop_after=50) if n.payload]
                for n in got:
                    self._custom(n.payload)
                if not got:
                    break
        except Exception:  # noqa: BLE001 - the connection broke: poll, and listen again later
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            self._retry_at = time.monotonic() + 1
        self._wake.clear()

    def _custom(self, text: str) -> None:
        """A ``ctx.emit`` item another process sent (Postgres): to the streams of its run."""
        item = decode_item(text)
        if item is None:
            return
        wf, run, step, payload, seq = item
        with self._lock:
            w = self._watches.get((wf, run))
            sinks = [s for s, _ in w.sinks] if w is not None else []
        for sink in sinks:
            tell(sink, Custom(step, payload, seq))

    def _loop(self) -> None:
        try:
            self._run()
        finally:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()

    def _run(self) -> None:
        last = 0.0
        while not self._stopped:
            self._wait()
            if self._stopped:
                return
            # commits of busy workers NOTIFY hundreds of times a second: one look per GAP_S at most
            pause = last + GAP_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            last = time.monotonic()
            try:
                self._look()
            except Exception:  # noqa: BLE001 - the store may be away a while: look again later
                log.warning("following runs in other workers: a read failed; trying again", exc_info=True)
                self._wake.wait(0.5)

    def _look(self) -> None:
        with self._lock:
            streamed = [k for k, w in self._watches.items() if w.sinks]
            waited = [k for k, w in self._watches.items() if not w.sinks]
        if not streamed and not waited:
            return
        store = self.rt.store
        rows = store.positions(streamed) if streamed else {}
        if waited:  # a handle needs only the outcome: read back only the runs that settled
            rows.update(store.positions(waited, settled=True))
        for key in streamed + waited:
            row = rows.get(key)
            with self._lock:
                w = self._watches.get(key)
            if w is None or (row is None and not w.sinks):
                continue  # still moving
            if row is None:
                s = store.summary(*key)  # read once more, on its own, before saying it is gone
                if s is not None:
                    row = (s.last_seq, s.status)
                else:  # deleted meanwhile
                    self._settle(key, w, None)
                    continue
            last_seq, status = row
            if w.sinks and last_seq > min(seq for _, seq in w.sinks):
                self._feed(key, w, last_seq)
            if status not in _MOVING:
                self._settle(key, w, status)

    def _feed(self, key: tuple[str, str], w: _Watch, last_seq: int) -> None:
        with self._lock:
            sinks = list(w.sinks)
        low = min(seq for _, seq in sinks)
        events = list(self.rt.store.journal(key[0], key[1], low + 1, last_seq))
        moved = []
        for sink, seq in sinks:
            for n, e in events:
                if n > seq:
                    sink.tell(Tap(n, e))
            moved.append((sink, last_seq))
        with self._lock:
            w.sinks = moved + [s for s in w.sinks if s not in sinks]

    def _settle(self, key: tuple[str, str], w: _Watch, status: str | None) -> None:
        with self._lock:
            self._watches.pop(key, None)
            inboxes, sinks = w.inboxes, w.sinks
        if status is None:
            out: Any = Rejected(key[0], key[1], RunNotFound(*key))
        else:
            wf = self.rt._core.workflows.get(key[0])
            try:
                p = load_progress(self.rt.store, wf.plan, *key) if wf is not None else None
                out = outcome_of(p) if p is not None else None
            except Exception as exc:  # noqa: BLE001 - reported on the handle
                out = Rejected(key[0], key[1], exc)
        for inbox in inboxes:
            tell(inbox, out)
        for sink, _ in sinks:
            tell(sink, StreamEnd(out) if not isinstance(out, Rejected) else out)
