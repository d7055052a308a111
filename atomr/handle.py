"""RunHandle: watch a started or resumed run; its inbox is what the run actor tells.

Threads: the run actor's turn tells the inbox (:meth:`_Inbox.tell`); any
caller thread waits on it, always with a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from atomr import _stream
from atomr._check import check_int, check_number
from atomr._stream import StreamItem
from atomr._wake import resolve
from atomr.errors import AtomrError, ResultTimeout
from atomr.messages import Accepted, Rejected
from atomr.types import Outcome, Paused, StepEvent

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["RunHandle", "DEFAULT_TIMEOUT"]

#: how long a blocking call waits unless told otherwise (seconds)
DEFAULT_TIMEOUT = 30.0


_WATCH = object()


def _sleeping(out: Any) -> bool:
    """A sleep or a place in the queue is not an outcome: the handle watches on."""
    return isinstance(out, Paused) and out.reason in ("sleeping", "queued")


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    return check_number(timeout, "timeout", lo=0, hi=1e9, error=AtomrError,
                        hint="pass seconds to wait, e.g. timeout=30, or None to wait for ever")


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _compact(e: StepEvent) -> tuple[Any, ...]:
    """A StepEvent as a plain tuple (its list of writes as a tuple): the collector
    stops tracking a plain tuple of plain values at its first pass, so the events
    a handle keeps until they are read never weigh on a full collection."""
    d = e.data
    return (*e[:6], tuple(d), True) if type(d) is list else (*e[:6], d, False)


def _expand(t: tuple[Any, ...]) -> StepEvent:
    """The StepEvent :func:`_compact` kept."""
    return StepEvent(*t[:6], list(t[6]) if t[7] else t[6])


class _Inbox:
    """A thread-safe mailbox with a pykka-like ``tell`` for one RunHandle.

    StepEvents are appended without a lock (a deque append is atomic); the
    condition is touched only when a reader is waiting, or for the rare
    Accepted/outcome messages. They arrive as the run emits them, also while
    its turn runs a step: ``events()`` shows a step start before it ends.
    """

    __slots__ = ("_cond", "accepted", "outcome", "events", "_waiting", "on_outcome", "key", "_afuts", "attach",
                 "own", "__weakref__")

    def __init__(self, key: tuple[str, str] = ("", "")) -> None:
        self.key = key
        self.attach = False  # a start with if_exists="attach": RunExists means "watch that run"
        #: a start or resume: its handle streams from where its request's events begin
        self.own = False
        self._cond = threading.Condition()
        self.accepted: Any = None  # Accepted | Rejected
        self.outcome: Any = None
        #: StepEvents kept as plain tuples (see :func:`_compact`) until read
        self.events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=100_000)
        self._waiting = 0
        self.on_outcome: Any = None  # called once when the outcome arrives
        #: asyncio waiters: (loop, future, attribute awaited)
        self._afuts: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], str]] = []

    def tell(self, message: Any) -> None:
        if type(message) is StepEvent:
            self.events.append(_compact(message))
            if self._waiting:
                with self._cond:
                    self._cond.notify_all()
            return
        with self._cond:
            t = type(message)
            if t is Accepted:
                if self.accepted is None:
                    self.accepted = message
            elif t is Rejected:
                if self.accepted is None:
                    self.accepted = message
                self.outcome = self.outcome or message
            else:
                if self.accepted is None:
                    self.accepted = message
                self.outcome = message
            self._cond.notify_all()
            woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], str]] = []
            if self._afuts:
                woken = [w for w in self._afuts if getattr(self, w[2]) is not None]
                self._afuts = [w for w in self._afuts if getattr(self, w[2]) is None]
            if self.outcome is not None and self.on_outcome is not None:
                callback, self.on_outcome = self.on_outcome, None
                callback()
        for _loop, fut, _ in woken:
            resolve(fut)

    async def await_attr(self, attr: str, timeout: float | None) -> Any:
        """Await ``accepted`` / ``outcome`` on the running loop (never blocks it).
        Cancelling the awaiting task only stops the watching."""
        loop = asyncio.get_running_loop()
        with self._cond:
            got = getattr(self, attr)
            if got is not None:
                return got
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut, attr)
            self._afuts.append(entry)
        timer = loop.call_later(timeout, _expire, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if not fut.done() or getattr(self, attr) is None:
                with self._cond:
                    if entry in self._afuts:
                        self._afuts.remove(entry)
        return getattr(self, attr)

    def next_event(self, timeout: float | None) -> StepEvent | None:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self.events or self.outcome is not None, timeout)
            finally:
                self._waiting -= 1
            if self.events:
                return _expand(self.events.popleft())
            return None

    def wait(self, attr: str, timeout: float | None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: getattr(self, attr) is not None, timeout):
                return None
            return getattr(self, attr)


class RunHandle:
    """A started or resumed run: wait for its outcome, or stream its events."""

    def __init__(self, runtime: Runtime, workflow_id: str, run_id: str, inbox: _Inbox | None) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.run_id = run_id
        self._inbox = inbox

    def __repr__(self) -> str:
        return f"RunHandle({self.workflow_id!r}, {self.run_id!r}, done={self.done()})"

    @property
    def attached(self) -> bool:
        """True when this handle watches a run it neither started nor resumed: one
        from ``rt.handle()``, or a start with ``if_exists="attach"`` that found the run."""
        return self._inbox is None

    def done(self) -> bool:
        if self._inbox is None:  # a handle from rt.handle(): ask the store
            s = self.runtime.store.summary(self.workflow_id, self.run_id)
            return s is not None and s.status != "running"
        return self._inbox.outcome is not None

    def result(self, timeout: float | None = DEFAULT_TIMEOUT) -> Outcome:
        """Wait for the outcome: Done, Paused or Failed. Raises ResultTimeout."""
        timeout = _check_timeout(timeout)
        out = self._inbox.wait("outcome", timeout) if self._inbox is not None else _WATCH
        while out is _WATCH or _sleeping(out):  # a sleep is not an outcome: watch for the next
            out = None
            for item in self.stream("events", after=self._position(), timeout=timeout):
                out = item.data
        return self._outcome(out, timeout)

    async def aresult(self, timeout: float | None = DEFAULT_TIMEOUT) -> Outcome:
        """Await the outcome on the running loop (``await handle`` does the same).
        Cancelling the awaiting task does not cancel the run: awaiting is watching."""
        timeout = _check_timeout(timeout)
        out = await self._inbox.await_attr("outcome", timeout) if self._inbox is not None else _WATCH
        while out is _WATCH or _sleeping(out):
            out = None
            async for item in self.astream("events", after=self._position(), timeout=timeout):
                out = item.data
        return self._outcome(out, timeout)

    def _from(self) -> int:
        """The default stream cursor: where this handle's request began (a resume,
        a run's new turn; 0 for a start or a handle that only watches)."""
        inbox = self._inbox
        got = inbox.accepted if inbox is not None and inbox.own else None
        return got.after if isinstance(got, Accepted) else 0

    def _position(self) -> int:
        s = self.runtime.store.summary(self.workflow_id, self.run_id)
        return s.last_seq if s is not None else 0

    def __await__(self) -> Generator[Any, None, Outcome]:
        return self.aresult().__await__()

    def _outcome(self, out: Any, timeout: float | None) -> Outcome:
        if out is None:
            raise ResultTimeout(
                f"run {self.workflow_id}/{self.run_id} has no outcome after {timeout}s; it is "
                "still running: wait longer (handle.result(timeout=...)) or inspect it with "
                "rt.get_state()"
            )
        if isinstance(out, Rejected):
            raise out.error
        return out  # type: ignore[no-any-return]

    def stream(self, mode: str | Iterable[str] = "updates", *, after: int | None = None,
               timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[StreamItem]:
        """The run's :class:`~atomr.StreamItem` s (blocking): the journal after
        ``after``, then live; the last item is the outcome. Default cursor: the
        handle's own request — from the start for a start, from the resume for
        ``resume()``, from the turn for a run's new turn (``after=0``: all of it).
        ``mode``: "values", "updates", "events", "custom" or a list."""
        return _stream.iterate(self._open_stream(mode, after), _check_timeout(timeout))

    def astream(self, mode: str | Iterable[str] = "updates", *, after: int | None = None,
                timeout: float | None = DEFAULT_TIMEOUT) -> AsyncIterator[StreamItem]:
        """:meth:`stream` for asyncio: ``async for item in h.astream("values")``."""
        return _stream.aiterate(self._open_stream(mode, after), _check_timeout(timeout))

    def _open_stream(self, mode: str | Iterable[str], after: int | None) -> _stream.Stream:
        if after is not None:
            check_int(after, "after", lo=0, error=AtomrError, hint="pass a cursor from a StreamItem")
        else:
            after = self._from()
        return _stream.Stream(self.runtime, self.workflow_id, self.run_id, _stream.check_modes(mode), after)

    def events(self, timeout: float | None = DEFAULT_TIMEOUT, *, after: int | None = None) -> Iterator[StepEvent]:
        """Step events as they happen (started, completed, failed, retrying,
        interrupted, committed), ending with one "outcome" event.

        ``timeout`` bounds the wait for each next event (ResultTimeout).
        ``after``: replay the journal after that cursor first (a reopened
        stream; see :meth:`stream`).
        """
        timeout = _check_timeout(timeout)
        rt = self.runtime
        if after is not None or self._inbox is None or not rt.execute:  # a client: events come from the store
            for item in self.stream("events", after=after if after is not None else self._from(), timeout=timeout):
                if item.mode == "outcome":
                    yield StepEvent("outcome", self.workflow_id, self.run_id,
                                    getattr(item.data, "super_step", -1), None, 0, item.data)
                else:
                    yield item.data
            return
        while True:
            e = self._inbox.next_event(timeout)
            if e is None:
                out = self._inbox.outcome
                if out is None:
                    raise ResultTimeout(f"no event from run {self.workflow_id}/{self.run_id} in {timeout}s")
                if isinstance(out, Rejected):
                    raise out.error
                yield StepEvent("outcome", self.workflow_id, self.run_id,
                                getattr(out, "super_step", -1), None, 0, out)
                return
            yield e
            if e.kind == "outcome":
                return
