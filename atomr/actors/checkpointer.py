"""The checkpointer: the one writer of an LMDB store, with group commit.

Threads: one pykka thread. It is the only thread that opens LMDB write
transactions. Run actors ``tell`` it :class:`~atomr.messages.Append` s; it
buffers them while more messages are queued and, once its inbox is empty (or
the buffer is large), writes the whole buffer in ONE transaction with ONE
fsync, then tells each sender :class:`~atomr.messages.Committed`. Many
concurrent runs therefore share the cost of a sync.

A refused batch (map full past ``max_map_size``, disk full, a journal gap) is
reported to the run that sent it; other runs' batches in the same group are
written (the store isolates failures), and the checkpointer keeps going. The
first batches of a ``start_many``'s runs arrive together
(:class:`~atomr.messages.AppendGroup`) and are written all or none
(:mod:`atomr.actors.startgroup`).

A lone run need not pay two thread hand-offs per commit: when no batch is
queued for the checkpointer (the :class:`WriterGate`'s count is zero) and
nobody writes, a run actor that waits for its commit writes its batch itself,
in its own turn (:meth:`WriterGate.try_write`). The gate's lock serializes
those writes with the checkpointer's, so the store still has one writer at a
time; a run's earlier batches were all written before (the count is zero), so
its journal stays in order. Under load the count is rarely zero and every
batch goes through group commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pykka

from atomr._hooks import logger
from atomr.actors.observe import Observer
from atomr.actors.startgroup import refusal
from atomr.messages import Append, AppendGroup, Committed, Flush, Maintain
from atomr.store.base import Store

__all__ = ["Checkpointer", "WriterGate"]

log = logger("atomr.checkpointer")

#: Commit at the latest after this many buffered batches, even under load.
MAX_GROUP = 512


class WriterGate:
    """Who writes the store now, and how many batches wait for the checkpointer.

    Threads: any. ``lock`` is held around every write (the checkpointer's and
    an inline one); ``queued`` counts batches told to the checkpointer and not
    yet written.
    """

    __slots__ = ("lock", "queued", "_count", "inline_writes", "observer")

    def __init__(self, observer: Observer | None = None) -> None:
        self.lock = threading.Lock()
        self.queued = 0
        self._count = threading.Lock()
        self.inline_writes = 0
        #: records every write transaction's seconds and batches (rt.stats())
        self.observer = observer if observer is not None else Observer()

    def timed_write(self, store: Store, batches: Sequence[Any],
                    groups: Sequence[int] | None = None) -> list[BaseException | None]:
        """``store.write(batches)``, its seconds and size recorded (the writing thread)."""
        t0 = time.perf_counter()
        try:
            return store.write(batches) if groups is None else store.write(batches, groups=groups)
        finally:
            self.observer.commit(time.perf_counter() - t0, len(batches))

    def told(self) -> None:
        with self._count:
            self.queued += 1

    def written(self, n: int) -> None:
        with self._count:
            self.queued -= n

    def try_write(self, store: Store, batch: Any) -> tuple[bool, BaseException | None]:
        """Write ``batch`` in this thread when nothing is queued and nobody
        writes: ``(True, error or None)``; ``(False, None)``: send it instead."""
        if self.queued or not self.lock.acquire(blocking=False):
            return False, None
        try:
            if self.queued:
                return False, None
            self.inline_writes += 1
            try:
                return True, self.timed_write(store, [batch])[0]
            except Exception as exc:  # noqa: BLE001 - reported to the run, as the checkpointer does
                return True, exc
        finally:
            self.lock.release()


class Checkpointer(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, store: Store, gate: WriterGate | None = None) -> None:
        super().__init__()
        self.store = store
        self.gate = gate if gate is not None else WriterGate()
        self._buf: list[Append] = []
        #: per buffered batch: the AppendGroup it came in, or None
        self._groups: list[AppendGroup | None] = []
        self.commits = 0  # transactions written (for stats)
        self.batches = 0

    def on_receive(self, message: Any) -> Any:
        try:
            t = type(message)
            if t is Append:
                self._buf.append(message)
                self._groups.append(None)
                if len(self._buf) >= MAX_GROUP or self.actor_inbox.empty():
                    self._flush()
                return None
            if t is AppendGroup:
                self._buf.extend(message.appends)
                self._groups.extend([message] * len(message.appends))
                if len(self._buf) >= MAX_GROUP or self.actor_inbox.empty():
                    self._flush()
                return None
            if t is Flush:
                self._flush()
                return True
            if t is Maintain:
                self._flush()
                with self.gate.lock:
                    return message.fn(self.store)
        except Exception:
            if t is Maintain:
                raise  # asked: the caller gets the exception
            log.exception("checkpointer: unexpected error (continuing)")
        return None

    def _flush(self) -> None:
        buf, groups = self._buf, self._groups
        if not buf:
            return
        self._buf, self._groups = [], []
        ids: dict[int, int] = {}
        for g in groups:
            if g is not None:
                ids.setdefault(id(g), len(ids))
        try:
            with self.gate.lock:
                batches = [m.batch for m in buf]
                if ids:  # a start_many's batches: all or none
                    results = self.gate.timed_write(self.store, batches, groups=[-1 if g is None else ids[id(g)] for g in groups])
                else:
                    results = self.gate.timed_write(self.store, batches)
                results = self._name_refusals(batches, groups, results)
        except Exception as exc:  # noqa: BLE001 - reported to every sender
            results = [exc] * len(buf)
        finally:
            self.gate.written(len(buf))
        self.commits += 1
        self.batches += len(buf)
        for m, err in zip(buf, results):
            if m.ack or err is not None:
                try:
                    m.sender.tell(Committed(m.token, err))
                except pykka.ActorDeadError:
                    pass

    def _name_refusals(self, batches: list[Any], groups: list[AppendGroup | None],
                       results: list[BaseException | None]) -> list[BaseException | None]:
        """A refused start_many group: each of its runs hears which run did not fit."""
        named: dict[int, BaseException] = {}
        out = list(results)
        for i, (g, err) in enumerate(zip(groups, results)):
            if g is None or err is None:
                continue
            if id(g) not in named:
                members = [b for b, h in zip(batches, groups) if h is g]
                named[id(g)] = refusal(self.store, g.group, members, err)
            out[i] = named[id(g)]
        return out

    def on_stop(self) -> None:
        self._flush()
