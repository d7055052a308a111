"""A run's events on their way to the store, and the durability mode as a strategy.

Runs in the run actor's turn. Every change of a run is an event: it is
encoded once (:meth:`Journal.emit`), the same object is folded into the run's
:class:`~atomr.graph.progress.RunProgress`, and the record waits in the
outbox until the durability strategy sends it:

* :class:`SyncDurability` — a super-step's events are durable before the next
  super-step's steps are sent and before any outcome is reported (one commit
  per super-step, shared with every run committing at the same moment); a
  completed step's writes are committed within ``PENDING_FLUSH_S`` even while
  its siblings still run;
* :class:`AsyncDurability` — events are sent as they happen and the run does
  not wait; a kill -9 can lose the last super-steps (they run again);
* :class:`ExitDurability` — events stay in the run until it pauses, ends or
  fails; a kill -9 loses the execution since the last pause (it runs again).

In every mode an outcome is reported only once it is durable. A batch goes to
the checkpointer actor (LMDB, SQLite, Postgres) — or, when the run waits for
it and nothing else is queued, into the store in the run's own turn (see
:class:`~atomr.actors.checkpointer.WriterGate`) — or straight into a store that
takes writes from any thread (MemoryStore); either way a refusal comes back as
``Committed(error)``.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from atomr.graph import superstep as algo
from atomr.messages import Append, Committed, Tap
from atomr.store import format as fmt
from atomr.store.base import AppendBatch

if TYPE_CHECKING:
    from atomr.actors.core import Core

__all__ = ["Journal", "Durability", "SyncDurability", "AsyncDurability", "ExitDurability",
           "durability_of", "batch_of", "now_ms", "PENDING_FLUSH_S", "FlushTick"]

#: commit tokens, unique in the process
_TOKENS = itertools.count(1)

#: with durability "sync", the longest a completed step's writes wait in the run
#: actor while its siblings still run
PENDING_FLUSH_S = 0.02


def now_ms() -> int:
    """Wall-clock milliseconds, as journaled in events."""
    return int(time.time() * 1000)


class FlushTick:
    """Timer message: send what the outbox holds (sync mode, steps still running)."""

    __slots__ = ()


FLUSH_TICK = FlushTick()


def batch_of(p: algo.RunProgress, first_seq: int, records: list[bytes], snapshot: bool,
             meta: dict[str, Any] | None = None) -> AppendBatch:
    """The store batch of ``records`` (events ``first_seq``...) of run ``p``."""
    return AppendBatch(
        p.workflow_id, p.run_id, first_seq, records,
        status="running" if p.status == "new" else p.status, super_step=p.super_step,
        snapshot=fmt.encode_obj(algo.to_snapshot(p)) if snapshot else None, meta=meta,
    )


class Journal:
    """The outbox of one run and the transport to the store."""

    __slots__ = ("core", "ref", "outbox", "first_seq", "meta_new", "ack_token", "ever_committed", "taps",
                 "first_token", "group")

    def __init__(self, core: Core, ref: Any, first_seq: int) -> None:
        self.core = core
        self.ref = ref
        self.outbox: list[bytes] = []
        self.first_seq = first_seq
        #: the run's meta, sent with its first batch
        self.meta_new: dict[str, Any] | None = None
        #: the token of the commit the run waits for, if any
        self.ack_token: int | None = None
        #: some event of this run is in the store already
        self.ever_committed = first_seq > 1
        #: the token of the batch that creates the run (its first event), if we sent it
        self.first_token: int | None = None
        #: live stream sinks: each gets a Tap per event (see atomr._stream)
        self.taps: list[Any] = []
        #: the StartGroup of a start_many this run was started in, until its first batch is sent
        self.group: Any = None

    def emit(self, plan: algo.Plan, p: algo.RunProgress, e: Any, record: bytes | None = None,
             values: dict[str, Any] | None = None) -> None:
        """Fold ``e`` into ``p`` and queue its record (encoded here unless given)."""
        if record is None:
            record = fmt.encode_event(e)
        algo.apply_event(plan, p, e, p.seq + 1, values)
        self.outbox.append(record)
        if self.taps:
            self.tap(Tap(p.seq, e))

    def tap(self, message: Any) -> None:
        """Tell every live stream sink (a closed one is dropped)."""
        for sink in list(self.taps):
            if getattr(sink, "closed", False):
                self.taps.remove(sink)
            else:
                sink.tell(message)

    def send(self, p: algo.RunProgress, wait: bool, snapshot: bool = False) -> bool:
        """Send the outbox. True: go on now. False: wait for ``Committed`` (the
        token is ``ack_token``)."""
        batch = batch_of(p, self.first_seq, self.outbox, snapshot, self.meta_new)
        self.meta_new = None
        self.outbox = []
        self.first_seq = p.seq + 1
        token = next(_TOKENS)
        if batch.first_seq == 1:
            self.first_token = token
            if self.group is not None:  # a start_many's run: stored with the others, or not at all
                group, self.group = self.group, None
                self.ack_token = token
                group.add(self.core, p.run_id, Append(batch, self.ref, token, True))
                return False
        cp = self.core.checkpointer
        if cp is None:
            gate = self.core.gate
            done, err = True, (gate.timed_write(self.core.store, [batch]) if gate is not None
                               else self.core.store.write([batch]))[0]
        elif wait:  # a lone run writes itself when the writer is idle (no hand-offs)
            done, err = self.core.gate.try_write(self.core.store, batch)
        else:
            done, err = False, None
        if done:
            if err is None:
                self.ever_committed = True
                return True
            # a refusal takes the same path as the checkpointer's
            self.ack_token = token
            self.ref.tell(Committed(token, err))
            return False
        self.core.gate.told()
        cp.tell(Append(batch, self.ref, token, wait))
        if wait:
            self.ack_token = token
            return False
        return True

    def committed(self, token: int) -> bool:
        """A Committed arrived; True when it is the one the run waits for."""
        if token != self.ack_token:
            return False
        self.ack_token = None
        self.ever_committed = True
        return True


class Durability:
    """When a run's events are sent, and whether it waits for them."""

    name = ""
    __slots__ = ("boundary", "snap_due", "tick")

    def __init__(self) -> None:
        #: a super-step committed and not yet sent (sync)
        self.boundary = False
        self.snap_due = False
        #: a flush tick is scheduled (sync)
        self.tick = False

    def on_accept(self, j: Journal, p: algo.RunProgress) -> bool:
        """A request was accepted; True: go on now."""
        return True

    def on_layer_committed(self, j: Journal, p: algo.RunProgress, snapshot: bool) -> None:
        """A SuperStepCommitted was emitted."""

    def before_dispatch(self, j: Journal, p: algo.RunProgress) -> bool:
        """The next steps are about to be sent; True: send them now."""
        return True

    def while_waiting(self, j: Journal, p: algo.RunProgress, schedule_tick: Any) -> None:
        """Steps are running; finished ones' writes may be sent meanwhile."""

    def before_inline(self, j: Journal, p: algo.RunProgress) -> None:
        """A lone step was lent a dispatcher thread (it runs right after this
        turn, on its thread): finished siblings' writes do not wait for it."""
        if j.outbox and p.pending:
            j.send(p, wait=False)

    def finish(self, j: Journal, p: algo.RunProgress) -> bool:
        """The run pauses, ends or fails: everything is sent with a snapshot."""
        self.boundary = self.snap_due = False
        return j.send(p, wait=True, snapshot=True)


class SyncDurability(Durability):
    name = "sync"
    __slots__ = ()

    def on_accept(self, j: Journal, p: algo.RunProgress) -> bool:
        return j.send(p, wait=True)

    def on_layer_committed(self, j: Journal, p: algo.RunProgress, snapshot: bool) -> None:
        self.boundary = True
        self.snap_due = self.snap_due or snapshot

    def before_dispatch(self, j: Journal, p: algo.RunProgress) -> bool:
        if not self.boundary:
            return True
        self.boundary = False
        snap, self.snap_due = self.snap_due, False
        return j.send(p, wait=True, snapshot=snap)

    def while_waiting(self, j: Journal, p: algo.RunProgress, schedule_tick: Any) -> None:
        if j.outbox and not self.tick:
            # completed siblings' writes reach the journal within
            # PENDING_FLUSH_S even while a slow sibling runs; a fast layer
            # commits them with its boundary instead
            self.tick = True
            schedule_tick(PENDING_FLUSH_S)



class AsyncDurability(Durability):
    name = "async"
    __slots__ = ()

    def on_accept(self, j: Journal, p: algo.RunProgress) -> bool:
        return j.send(p, wait=False)

    def on_layer_committed(self, j: Journal, p: algo.RunProgress, snapshot: bool) -> None:
        j.send(p, wait=False, snapshot=snapshot)

    def while_waiting(self, j: Journal, p: algo.RunProgress, schedule_tick: Any) -> None:
        if j.outbox:
            j.send(p, wait=False)



class ExitDurability(Durability):
    name = "exit"
    __slots__ = ()

    def before_inline(self, j: Journal, p: algo.RunProgress) -> None:
        """Nothing is sent before the run pauses, ends or fails."""


_MODES = {"sync": SyncDurability, "async": AsyncDurability, "exit": ExitDurability}


def durability_of(mode: str) -> Durability:
    return _MODES[mode]()
