"""Step execution: the step context, step actors, and the executor that feeds them.

Threads: each :class:`StepActor` is one pykka thread running sync steps one at a
time; ``async def`` steps all share one event-loop thread. The executor picks
the least busy step actor, so the steps of one super-step run concurrently
(bounded by ``workers``). A step actor never lets an exception escape: every
outcome — writes, an interrupt, an error, even ``KeyboardInterrupt`` /
``SystemExit`` (which would make pykka stop *all* actors) — becomes a
:class:`~atomr.messages.StepDone` told to the run actor.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
import time
from typing import Any

import pykka

from atomr import events as ev
from atomr.codec import check_encodable
from atomr.errors import AtomrError, CodecError, StepCrashed, UnknownChannelError
from atomr.graph.state import normalize_writes
from atomr.messages import ERROR, INTERRUPT, ITEM, LOOP_BODY, OK, Execute, StepDone
from atomr.store import format as fmt

__all__ = ["StepContext", "StepActor", "LocalExecutor", "execute_sync", "finish", "safe_text"]

log = logging.getLogger("atomr.step")


class _InterruptSignal(BaseException):
    """Raised by ``ctx.interrupt`` to unwind a step (a BaseException so that a
    step's ``except Exception`` does not swallow it)."""

    def __init__(self, index: int, payload: Any) -> None:
        super().__init__(index, payload)
        self.index = index
        self.payload = payload


class StepContext:
    """What a step receives besides the state. Runs in the step's thread.

    ``idempotency_key`` is the same for this step of this super-step of this
    run across retries, crashes and resumes: use it to make side effects
    idempotent.
    """

    __slots__ = ("workflow_id", "run_id", "step_id", "super_step", "attempt",
                 "idempotency_key", "_resume", "_calls", "item")

    def __init__(self, workflow_id: str, run_id: str, step_id: str, super_step: int,
                 attempt: int, idempotency_key: str, resume: list[Any], item: int | None = None) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.step_id = step_id
        self.super_step = super_step
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self._resume = resume
        self._calls = 0
        self.item = item

    def interrupt(self, payload: Any = None) -> Any:
        """Pause the run; on resume the step runs again and this call returns
        the resume value. Several calls in one step are matched by order."""
        i = self._calls
        self._calls += 1
        if i < len(self._resume):
            return self._resume[i]
        raise _InterruptSignal(i, payload)

    def __repr__(self) -> str:
        return (f"StepContext({self.workflow_id}/{self.run_id} step={self.step_id!r} "
                f"super_step={self.super_step} attempt={self.attempt})")


def _ctx(msg: Execute) -> StepContext:
    return StepContext(msg.workflow_id, msg.run_id, msg.step, msg.super_step, msg.attempt,
                       msg.idempotency_key, msg.resume, msg.index if msg.mode == ITEM else None)


def _call(msg: Execute) -> Any:
    if msg.mode == ITEM:
        return msg.fn(msg.item, _ctx(msg))
    return msg.fn(msg.state, _ctx(msg))


def _error(msg: Execute, etype: str, message: str, retryable: bool) -> StepDone:
    return StepDone(msg.token, msg.step, msg.attempt, ERROR, error_type=etype, message=message,
                    retryable=retryable, part=msg.part)


def _record(msg: Execute, result: Any) -> StepDone:
    """The StepDone of a step that returned: its event, built and encoded once
    here (the run actor folds this same object)."""
    step = msg.step
    e: Any
    if msg.mode == ITEM:
        e = ev.ItemCompleted(step, msg.super_step, msg.index, result)
        return StepDone(msg.token, step, msg.attempt, OK, record=fmt.encode_event(e), part=msg.part,
                        result=result, event=e)
    writes = normalize_writes(step, result)
    channels = msg.channels
    for k, _ in writes:
        if k not in channels:
            raise UnknownChannelError(k, channels, step)
    if msg.mode == LOOP_BODY:
        e = ev.LoopIterated(step, msg.super_step, msg.index + 1, writes, int(time.time() * 1000))
    else:
        e = ev.StepCompleted(step, msg.super_step, writes)
    return StepDone(msg.token, step, msg.attempt, OK, writes=writes, record=fmt.encode_event(e),
                    part=msg.part, event=e)


def safe_text(exc: BaseException) -> str:
    """``str(exc)`` that never raises and always encodes: a ``__str__`` that
    raises gives the type's name; lone surrogates become escapes."""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - whatever a user's __str__ does
        text = f"<{type(exc).__name__}: str() failed>"
    if not isinstance(text, str):
        text = repr(text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def finish(msg: Execute, result: Any = None, exc: BaseException | None = None) -> StepDone:
    """Turn a step's return value or exception into the StepDone to send."""
    step = msg.step
    if exc is None:
        try:
            return _record(msg, result)
        except AtomrError as e:
            return _error(msg, type(e).__name__, safe_text(e), False)
    if isinstance(exc, _InterruptSignal):
        try:
            check_encodable(exc.payload, f"the interrupt payload of step {step!r}")
        except CodecError as e:
            return _error(msg, "CodecError", str(e), False)
        return StepDone(msg.token, step, msg.attempt, INTERRUPT, index=exc.index,
                        payload=exc.payload, part=msg.part)
    if isinstance(exc, AtomrError):
        return _error(msg, type(exc).__name__, safe_text(exc), False)
    if not isinstance(exc, Exception):
        return _error(
            msg, StepCrashed.__name__,
            f"step {step!r} raised {type(exc).__name__}({safe_text(exc)}); the run was failed "
            "and every other run goes on; resume it with Command() to retry", False,
        )
    text = safe_text(exc)
    if not text:
        try:
            text = repr(exc)
        except BaseException:  # noqa: BLE001
            text = type(exc).__name__
    return _error(msg, type(exc).__name__, text, isinstance(exc, msg.retry_on))


def _tell(ref: Any, done: StepDone) -> None:
    try:
        ref.tell(done)
    except pykka.ActorDeadError:
        pass  # the run stopped or timed this attempt out: nobody is waiting


def execute_sync(msg: Execute, loop: _AsyncLoop | None = None) -> StepDone:
    """Run a sync step in the calling thread (awaiting a returned awaitable on ``loop``)."""
    try:
        result = _call(msg)
        if inspect.isawaitable(result):
            if loop is None:
                result = asyncio.run(_await(result))
            else:
                result = loop.run(result)
    except BaseException as exc:  # noqa: BLE001 - see module docstring
        return finish(msg, exc=exc)
    return finish(msg, result)


async def _await(aw: Any) -> Any:
    return await aw


async def _settle(aw: Any) -> tuple[bool, Any]:
    """(True, result) or (False, exception): a KeyboardInterrupt / SystemExit
    escaping a task would stop the shared loop, so none escapes."""
    try:
        return True, await aw
    except BaseException as exc:  # noqa: BLE001 - re-raised in the step's thread
        return False, exc


class _Wake:
    """Tells an idle step actor that work is queued."""

    __slots__ = ()


_WAKE = _Wake()


class StepActor(pykka.ThreadingActor):
    """Runs sync steps from the executor's shared queue, one at a time.

    A wake-up makes it drain the queue. Each result is told to its run actor
    as soon as the step returns: holding results back to batch them would make
    a run wait on an unrelated step (and deadlock steps that wait for each other).
    """

    use_daemon_thread = True

    def __init__(self, executor: LocalExecutor, index: int) -> None:
        super().__init__()
        self._executor = executor
        self._index = index

    def on_receive(self, message: Any) -> Any:
        if message is not _WAKE:
            return None
        ex = self._executor
        while True:
            msg = ex._take(self._index, self.actor_ref)
            if msg is None:
                return None
            try:
                done = execute_sync(msg, ex._loop)
            except BaseException as exc:  # noqa: BLE001 - never let pykka see it
                done = finish(msg, exc=exc)
            ex._done(msg.token)
            _tell(msg.reply_to, done)


class _AsyncLoop:
    """One event-loop thread shared by all ``async def`` steps.

    Steps are handed over in batches: :meth:`submit` appends to a queue and
    wakes the loop only when no drain is pending, so a burst of steps costs
    one wake-up, not one each. Each step is a task on the loop (no thread).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._queue: collections.deque[Execute] = collections.deque()
        self._lock = threading.Lock()
        self._drain_pending = False
        self._closing = False
        #: token -> task of the steps running now
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: tokens the executor cancelled (timeout, any-join): their end is silent
        self._abandoned: set[int] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="atomr-async", daemon=True)
        self._thread.start()

    def submit(self, msg: Execute) -> None:
        """Any thread: run ``msg`` as a task on the loop."""
        with self._lock:
            self._queue.append(msg)
            if self._drain_pending:
                return
            self._drain_pending = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._drain_pending = False
        create = self.loop.create_task
        for msg in batch:
            if msg.token in self._abandoned:
                self._abandoned.discard(msg.token)
                continue
            self._tasks[msg.token] = create(self._run(msg))

    def abandon(self, token: int) -> None:
        """Any thread: cancel the step's task; its end is not reported."""
        self.loop.call_soon_threadsafe(self._abandon, token)

    def _abandon(self, token: int) -> None:
        task = self._tasks.pop(token, None)
        if task is not None:
            self._abandoned.add(token)
            task.cancel()
        elif any(m.token == token for m in self._queue):
            self._abandoned.add(token)

    async def _run(self, msg: Execute) -> None:
        try:
            result = await _call(msg)
            done = finish(msg, result)
        except asyncio.CancelledError as exc:
            if msg.token in self._abandoned or self._closing:
                self._abandoned.discard(msg.token)
                return  # we cancelled it: the run already counted the attempt (or we close)
            done = finish(msg, exc=exc)  # the step cancelled itself: a failed attempt
        except BaseException as exc:  # noqa: BLE001
            done = finish(msg, exc=exc)
        finally:
            self._tasks.pop(msg.token, None)
        _tell(msg.reply_to, done)

    def run(self, aw: Any) -> Any:
        ok, value = asyncio.run_coroutine_threadsafe(_settle(aw), self.loop).result()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        def stop() -> None:
            self._closing = True
            tasks = list(self._tasks.values())
            for t in tasks:
                t.cancel()
            if tasks:
                # let the cancelled tasks finish before the loop stops
                fut = asyncio.gather(*tasks, return_exceptions=True)
                fut.add_done_callback(lambda _f: self.loop.stop())
            else:
                self.loop.stop()

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return  # already closed
        self._thread.join(timeout=2)


class LocalExecutor:
    """Runs steps on a pool of step actors (and one async loop thread).

    Sync steps go to one shared queue; idle step actors are woken to drain it,
    so a slow step never holds up others queued behind it. Called from run
    actors' threads; thread-safe.
    """

    def __init__(self, workers: int = 4) -> None:
        if workers < 1:
            from atomr.errors import AtomrError as _E

            raise _E(f"step_workers must be >= 1, got {workers}; pass Runtime(step_workers=4) or more")
        self.workers = workers
        self._lock = threading.Lock()
        self._refs: list[pykka.ActorRef[Any]] = []
        self._idle: list[int] = []
        self._queue: collections.deque[Execute] = collections.deque()
        self._cancelled: set[int] = set()
        self._running: dict[int, int] = {}  # token -> worker slot
        self._loop: _AsyncLoop | None = None
        self._closed = False

    def start(self) -> None:
        with self._lock:
            for i in range(self.workers):
                self._refs.append(StepActor.start(self, i))
                self._idle.append(i)

    def submit(self, msg: Execute) -> None:
        if msg.is_async:
            with self._lock:
                if self._loop is None:
                    self._loop = _AsyncLoop()
                loop = self._loop
            loop.submit(msg)
            return
        with self._lock:
            self._queue.append(msg)
            if not self._idle:
                return  # a busy worker takes it when it is done
            ref = self._refs[self._idle.pop()]
        ref.tell(_WAKE)

    def _take(self, index: int, ref: Any) -> Execute | None:
        """The next queued step for worker ``index``, or None (it goes idle)."""
        with self._lock:
            if self._closed or index >= len(self._refs) or self._refs[index] is not ref:
                return None  # a retired (replaced) worker takes nothing more
            q = self._queue
            while q:
                msg = q.popleft()
                if msg.token in self._cancelled:
                    self._cancelled.discard(msg.token)
                    continue
                self._running[msg.token] = index
                return msg
            self._idle.append(index)
            return None

    def _done(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def abandon(self, token: int) -> None:
        """A step overran its timeout (or lost an any-join): cancel it if it is
        queued or async; if it is running, a fresh worker takes its slot and the
        stuck one stops once the step returns."""
        with self._lock:
            if self._closed:
                return
            i = self._running.pop(token, None)
            if i is None:
                if any(m.token == token for m in self._queue):
                    self._cancelled.add(token)
                    return
                loop = self._loop
        if i is None:
            if loop is not None:  # an async step (or one that just ended: harmless)
                loop.abandon(token)
            return
        with self._lock:
            if self._closed:
                return
            old = self._refs[i]
            new = self._refs[i] = StepActor.start(self, i)
            wake = bool(self._queue)
            if not wake:
                self._idle.append(i)
        if wake:
            new.tell(_WAKE)
        old.stop(block=False)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            refs, self._refs = self._refs, []
            self._queue.clear()
        for r in refs:
            r.stop(block=False)
        if self._loop is not None:
            self._loop.close()
