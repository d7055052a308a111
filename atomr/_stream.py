"""Streams of a run: its journal replayed after a cursor, then live.

Threads: the consumer's (a caller thread, or an asyncio loop with the store
reads sent to a worker thread); the run actor only ``tell`` s the
:class:`Sink`, which never blocks it.

A stream subscribes to the run's actor (:class:`~atomr.messages.Subscribe`),
which answers with the journal position it has reached and, from then on,
taps every event it journals. The stream first replays from the store what
lies between its cursor and that position (plus the records the run holds
but has not sent yet), then goes live: no event is lost and none comes
twice. Every item carries its cursor (the journal seq of the event it comes
from): ``after=cursor`` reopens a stream where it stopped. ``"custom"``
payloads (``ctx.emit``) are live only, never journaled.

The sink holds at most ``capacity`` messages; a consumer that falls that far
behind gets :class:`~atomr.errors.StreamOverflow` naming its last cursor,
while the run goes on at full speed.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atomr import events as ev
from atomr._load import load_progress_at
from atomr._wake import resolve
from atomr.errors import AtomrError, ResultTimeout, RunNotFound, RuntimeClosed, StreamOverflow
from atomr.graph import superstep as algo
from atomr.graph.drive import outcome_of
from atomr.messages import Custom, Flush, Rejected, StreamEnd, StreamLost, Subscribe, Subscribed, Tap
from atomr.store import format as fmt
from atomr.types import Interrupt, StepEvent

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["MODES", "StreamItem", "Sink", "Stream", "check_modes"]

MODES = ("values", "updates", "events", "custom")
#: messages a sink holds before its consumer is cut off
CAPACITY = 10_000
_RESUBSCRIBE = 20


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a run's stream.

    ``mode``: "values" (``data`` = the whole state after a committed super-step
    or a state change), "updates" (``data`` = ``{step: {channel: value}}`` as a
    step completes), "events" (``data`` = a :class:`~atomr.StepEvent`),
    "custom" (``data`` = ``{"step": ..., "payload": ...}``), and last of all
    "outcome" (``data`` = Done, Paused or Failed). ``cursor``: pass it as
    ``after=`` to reopen the stream after this item.
    """

    mode: str
    cursor: int
    data: Any
    super_step: int = 0
    step: str | None = None


def check_modes(mode: str | Iterable[str]) -> frozenset[str]:
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, Iterable) else [mode]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise AtomrError(f"unknown stream mode {bad[0] if bad else mode!r}; use one of {', '.join(MODES)} "
                         "or a list of them")
    return frozenset(modes)


class Sink:
    """A bounded buffer between one run actor (``tell``, any thread) and one consumer."""

    __slots__ = ("_q", "_cond", "capacity", "closed", "overflowed", "_waiter")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._q: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.capacity = capacity
        #: set when its stream stops (see close): the run drops the sink
        self.closed = False
        self.overflowed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def tell(self, message: Any) -> None:
        with self._cond:
            if self.closed or self.overflowed:
                return
            if len(self._q) >= self.capacity:
                self.overflowed = True
            else:
                self._q.append(message)
            self._cond.notify()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            resolve(waiter[1])

    def close(self) -> None:
        """Any thread: hold nothing more, and wake the consumer waiting in get / aget."""
        with self._cond:
            self.closed = True
            self._q.clear()
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            resolve(waiter[1])

    def _take(self) -> Any:
        if self._q:
            return self._q.popleft()
        if self.overflowed:
            return _OVERFLOW
        if self.closed:
            return _CLOSED
        return None

    def get(self, timeout: float | None) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._q or self.overflowed or self.closed, timeout)
            return self._take()

    async def aget(self, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                got = self._take()
                if got is not None:
                    return got
                fut: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                return None


_OVERFLOW = object()
#: what a closed sink gives its consumer
_CLOSED = object()


class Stream:
    """The state of one stream: the fold at its cursor, the sink, the modes."""

    def __init__(self, rt: Runtime, workflow_id: str, run_id: str, modes: frozenset[str],
                 after: int | None, capacity: int = CAPACITY) -> None:
        self.rt = rt
        self.wf = rt.workflow(workflow_id)
        self.run_id = run_id
        self.modes = modes
        self.cursor = after or 0
        self.capacity = capacity
        self.sink: Sink | None = None
        self.done = False
        self.reopened = 0
        #: closed (by its consumer, or by rt.close()): it subscribes no more; ``error`` says why
        self._lock = threading.Lock()
        self._closed = False
        self.error: BaseException | None = None
        rt._streams.add(self)
        self._p: algo.RunProgress | None = None
        self._attempts: dict[str, int] = {}

    # -- opening (blocking: store reads) -----------------------------------

    def open(self, timeout: float | None) -> list[StreamItem]:
        """Subscribe, replay up to the run's position; the items so far."""
        rt, wf = self.rt, self.wf
        if rt._closed:
            raise RuntimeClosed("this Runtime is closed; create a new one")
        if self._p is None:
            if self.cursor:
                self._p = load_progress_at(rt.store, wf.plan, wf.id, self.run_id, self.cursor)
            else:
                self._p = algo.RunProgress(wf.id, self.run_id)
        with self._lock:  # a close() from now on closes this sink; one before stops us here
            if self._closed:
                raise self._end_error()
            if self.sink is not None:
                self.sink.close()  # the last subscription's (its actor went away)
            sink = self.sink = Sink(self.capacity)
        try:
            return self._subscribe(sink, timeout)
        except BaseException:
            sink.close()  # nobody will read it: the run drops it
            raise

    def _subscribe(self, sink: Sink, timeout: float | None) -> list[StreamItem]:
        rt, wf = self.rt, self.wf
        if rt._remote(wf.id, self.run_id):  # it executes in another process: follow it via the store
            rt._core.follow.subscribe((wf.id, self.run_id), sink)
        else:
            rt._core.supervisor.route(wf, self.run_id, Subscribe(sink))
        sub = sink.get(timeout)
        if sub is _CLOSED:
            raise self._end_error()
        if isinstance(sub, Rejected):  # the run cannot be loaded: say why
            raise sub.error
        if not isinstance(sub, Subscribed):
            raise ResultTimeout(f"run {wf.id}/{self.run_id} did not answer a stream request within {timeout}s")
        if sub.status == "new":
            raise RunNotFound(wf.id, self.run_id)
        out: list[StreamItem] = []
        stored_to = sub.pending_first - 1
        if self.cursor < stored_to:
            cp = rt._core.checkpointer
            if cp is not None:
                cp.ask(Flush(), timeout=timeout)  # what the run sent is in the store now
            for seq, e in rt.store.journal(wf.id, self.run_id, self.cursor + 1, stored_to):
                out.extend(self._items(seq, e))
        for i, record in enumerate(sub.pending):
            seq = sub.pending_first + i
            if seq > self.cursor:
                out.extend(self._items(seq, fmt.decode_event(record)))
        if sub.status not in ("running", "sleeping", "queued"):  # settled: nothing follows
            assert self._p is not None
            out.append(self._end(outcome_of(self._p)))
        return out

    def close(self, error: BaseException | None = None) -> None:
        """Any thread, any time (also while :meth:`open` runs): unsubscribe and
        wake the consumer; it then raises ``error`` (default RuntimeClosed)."""
        with self._lock:
            if not self._closed:
                self._closed, self.error = True, error
            sink = self.sink
        if sink is not None:
            sink.close()

    def _end_error(self) -> BaseException:
        return self.error or RuntimeClosed(f"the stream of run {self.wf.id}/{self.run_id} was closed; reopen it "
                                           f"with after={self.cursor}")

    # -- live --------------------------------------------------------------------

    def on_message(self, msg: Any) -> list[StreamItem] | None:
        """Items for one sink message; None: the run's actor is gone (open again)."""
        t = type(msg)
        if t is Tap:
            return self._items(msg.seq, msg.event) if msg.seq > self.cursor else []
        if t is Custom:
            if "custom" in self.modes:
                return [StreamItem("custom", msg.seq, {"step": msg.step, "payload": msg.payload},
                                   self._p.super_step + 1 if self._p else 0, msg.step)]
            return []
        if t is StreamEnd:
            return [self._end(msg.outcome)]
        if t is StreamLost:
            return None
        if msg is _CLOSED:
            raise self._end_error()
        if msg is _OVERFLOW:
            self.close()
            raise StreamOverflow(
                f"the stream of run {self.wf.id}/{self.run_id} fell {self.capacity} messages behind and "
                f"was cut off; reopen it with after={self.cursor} (the run goes on)")
        return []

    # -- journal events -> items -------------------------------------------------------

    def _end(self, outcome: Any) -> StreamItem:
        self.done = True
        self.close()
        return StreamItem("outcome", self.cursor, outcome, getattr(outcome, "super_step", 0))

    def _items(self, seq: int, e: Any) -> list[StreamItem]:
        p = self._p
        assert p is not None
        algo.apply_event(self.wf.plan, p, e, seq)
        self.cursor = seq
        modes, out = self.modes, []
        t = type(e)
        if "values" in modes and t in _VALUES:
            out.append(StreamItem("values", seq, dict(p.values), p.super_step))
        if "updates" in modes and t in (ev.StepCompleted, ev.LoopIterated):
            if e.writes:
                out.append(StreamItem("updates", seq, {e.step: dict(e.writes)}, e.super_step, e.step))
        if "events" in modes:
            se = self._event(t, e, p)
            if se is not None:
                out.append(StreamItem("events", seq, se, se.super_step, se.step))
        return out

    def _event(self, t: type, e: Any, p: algo.RunProgress) -> StepEvent | None:
        wid, rid = self.wf.id, self.run_id
        if t is ev.StepStarted:
            self._attempts[e.step] = e.attempt
            return StepEvent("started", wid, rid, e.super_step, e.step, e.attempt)
        if t is ev.StepCompleted:
            return StepEvent("completed", wid, rid, e.super_step, e.step, self._attempts.get(e.step, 0), e.writes)
        if t is ev.ItemCompleted:
            unit = f"{e.step}[{e.index}]"
            return StepEvent("completed", wid, rid, e.super_step, unit, self._attempts.get(unit, 0), e.result)
        if t is ev.LoopIterated:
            unit = f"{e.step}#{e.iteration - 1}"
            return StepEvent("completed", wid, rid, e.super_step, unit, self._attempts.get(unit, 0), e.writes)
        if t is ev.StepFailed:
            return StepEvent("failed" if e.final else "retrying", wid, rid, e.super_step, e.step, e.attempt,
                             (e.error_type, e.message))
        if t is ev.Interrupted and e.index >= 0:
            return StepEvent("interrupted", wid, rid, e.super_step, e.step, 0,
                             Interrupt(e.interrupt_id, e.step, e.payload))
        if t is ev.StepCancelled:
            return StepEvent("cancelled", wid, rid, e.super_step, e.step, 0)
        if t is ev.SuperStepCommitted:
            return StepEvent("committed", wid, rid, e.super_step, None, 0)
        return None


_VALUES = (ev.RunStarted, ev.SuperStepCommitted, ev.StateUpdated, ev.Forked, ev.LoopIterated, ev.TurnStarted)


def iterate(stream: Stream, timeout: float | None) -> Iterator[StreamItem]:
    """The blocking consumer (a caller thread)."""
    try:
        yield from _wanted(stream, stream.open(timeout))
        while not stream.done:
            assert stream.sink is not None
            items = _received(stream, stream.sink.get(timeout), timeout)
            yield from _wanted(stream, stream.open(timeout) if items is None else items)
    finally:
        stream.close()


async def aiterate(stream: Stream, timeout: float | None) -> AsyncIterator[StreamItem]:
    """The asyncio consumer: store reads go to a worker thread; waits are awaits."""
    try:
        for item in _wanted(stream, await asyncio.to_thread(stream.open, timeout)):
            yield item
        while not stream.done:
            assert stream.sink is not None
            items = _received(stream, await stream.sink.aget(timeout), timeout)
            if items is None:
                items = await asyncio.to_thread(stream.open, timeout)
            for item in _wanted(stream, items):
                yield item
    finally:
        stream.close()


def _received(stream: Stream, msg: Any, timeout: float | None) -> list[StreamItem] | None:
    """The items of one sink message; None: subscribe again (the run's actor went away)."""
    if msg is None:
        raise ResultTimeout(f"no stream item from run {stream.wf.id}/{stream.run_id} in {timeout}s")
    items = stream.on_message(msg)
    if items is None:
        stream.reopened += 1
        if stream.reopened > _RESUBSCRIBE:
            raise AtomrError(f"run {stream.wf.id}/{stream.run_id} keeps restarting; "
                             f"reopen the stream later with after={stream.cursor}")
    return items


def _wanted(stream: Stream, items: list[StreamItem]) -> list[StreamItem]:
    return [i for i in items if i.mode in stream.modes or i.mode == "outcome"]
