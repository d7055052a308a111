"""Step execution: the step context, and turning a step call into a StepDone.

Threads: whichever runs the step — a step actor of the pool
(:mod:`atomr.actors.pool`), the async loop (:mod:`atomr.actors.asyncloop`), a
dispatcher thread lent to a lone sync step (:class:`LentStep`, outside any
actor's turn), or a Ray worker. Every outcome —
writes, an interrupt, an error, even ``KeyboardInterrupt`` / ``SystemExit``
(which would make pykka stop *all* actors) — becomes a
:class:`~atomr.messages.StepDone`, whose event is built and encoded once here.
"""

from __future__ import annotations

import asyncio
import math
import inspect
import time
from typing import Any

import pykka

from atomr import _trace
from atomr import events as ev
from atomr._hooks import logger
from atomr._usertb import user_traceback
from atomr.codec import check_encodable
from atomr.errors import AtomrError, CodecError, StepCrashed, UnknownChannelError
from atomr.graph.progress import SLEEP_KEY
from atomr.graph.state import normalize_writes
from atomr.messages import ERROR, INTERRUPT, ITEM, LOOP_BODY, OK, Execute, StepDone
from atomr.store import format as fmt

__all__ = ["StepContext", "LentStep", "execute_sync", "finish", "safe_text", "call", "tell_done"]

log = logger("atomr.step")


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
                 "idempotency_key", "_resume", "_calls", "item", "_emit", "_cancel")

    def __init__(self, workflow_id: str, run_id: str, step_id: str, super_step: int,
                 attempt: int, idempotency_key: str, resume: list[Any], item: int | None = None,
                 emit: Any = None, cancel: Any = None) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.step_id = step_id
        self.super_step = super_step
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self._resume = resume
        self._calls = 0
        self.item = item
        self._emit = emit
        self._cancel = cancel

    def interrupt(self, payload: Any = None) -> Any:
        """Pause the run; on resume the step runs again and this call returns
        the resume value. Several calls in one step are matched by order."""
        i = self._calls
        self._calls += 1
        if i < len(self._resume):
            return self._resume[i]
        raise _InterruptSignal(i, payload)

    def sleep(self, seconds: float) -> None:
        """Suspend the run durably for ``seconds`` (a timer answers it, like an
        interrupt that the clock answers): the run's status is "sleeping", it
        holds no thread, and it wakes on time in this process or after a
        restart (an overdue timer fires at once); then the step runs again and
        this call returns. Calls are matched by order, with ``interrupt``."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise AtomrError(f"ctx.sleep takes a finite number of seconds, got {seconds!r}")
        self.sleep_until(time.time() + max(0.0, float(seconds)))

    def sleep_until(self, epoch_seconds: float) -> None:
        """Like :meth:`sleep`, until the wall-clock time ``epoch_seconds``."""
        if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, (int, float)) \
                or not math.isfinite(epoch_seconds):
            raise AtomrError(f"ctx.sleep_until takes epoch seconds (a finite number), got {epoch_seconds!r}")
        i = self._calls
        self._calls += 1
        if i < len(self._resume):
            return  # the timer answered: the sleep is over
        raise _InterruptSignal(i, {SLEEP_KEY: float(epoch_seconds)})

    @property
    def cancelled(self) -> bool:
        """True once the run is cancelled (or timed out): a long plain step
        should poll it and return early (its writes are discarded anyway)."""
        return self._cancel is not None and self._cancel.is_set()

    def emit(self, payload: Any) -> None:
        """Send ``payload`` live to the run's ``"custom"`` streams (e.g. an LLM's
        tokens). Not journaled: a stream reopened later does not see it.
        Any thread; never blocks; a no-op when nobody streams the run."""
        if self._emit is not None:
            self._emit(self.step_id, payload)

    def __repr__(self) -> str:
        return (f"StepContext({self.workflow_id}/{self.run_id} step={self.step_id!r} "
                f"super_step={self.super_step} attempt={self.attempt})")


def _ctx(msg: Execute) -> StepContext:
    return StepContext(msg.workflow_id, msg.run_id, msg.step, msg.super_step, msg.attempt,
                       msg.idempotency_key, msg.resume, msg.index if msg.mode == ITEM else None, msg.emit,
                       msg.cancelled)


def call(msg: Execute) -> Any:
    if msg.mode == ITEM:
        return msg.fn(msg.item, _ctx(msg))
    return msg.fn(msg.state, _ctx(msg))


def _error(msg: Execute, etype: str, message: str, retryable: bool, exc: BaseException | None = None) -> StepDone:
    return StepDone(msg.token, msg.step, msg.attempt, ERROR, error_type=etype, message=message,
                    retryable=retryable, part=msg.part, traceback=None if exc is None else user_traceback(exc))


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
    try:
        if not isinstance(text, str):
            text = f"<{type(exc).__name__}: str() gave {type(text).__name__}>"
        plain = str.join("", (text,)) if type(text) is not str else text  # a str subclass's own methods stay out
        return str.encode(plain, "utf-8", "backslashreplace").decode("utf-8")
    except BaseException:  # noqa: BLE001
        return f"<{type(exc).__name__}: unprintable>"


def finish(msg: Execute, result: Any = None, exc: BaseException | None = None) -> StepDone:
    """Turn a step's return value or exception into the StepDone to send.
    Never raises: whatever a result or an exception does when looked at
    fails the attempt (not retried: the step's own code ran)."""
    try:
        return _finish(msg, result, exc)
    except BaseException as e:  # noqa: BLE001
        return _error(msg, type(e).__name__ if isinstance(e, Exception) else StepCrashed.__name__,
                      f"the result of step {msg.step!r} could not be read: {safe_text(e)}", False)


def _finish(msg: Execute, result: Any, exc: BaseException | None) -> StepDone:
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
        return _error(msg, type(exc).__name__, safe_text(exc), False, exc)
    if not isinstance(exc, Exception):
        return _error(
            msg, StepCrashed.__name__,
            f"step {step!r} raised {type(exc).__name__}({safe_text(exc)}); the run was failed "
            "and every other run goes on; resume it with Command() to retry", False, exc,
        )
    text = safe_text(exc)
    if not text:
        try:
            text = repr(exc)
        except BaseException:  # noqa: BLE001
            text = type(exc).__name__
    return _error(msg, type(exc).__name__, text, isinstance(exc, msg.retry_on), exc)


def tell_done(ref: Any, done: StepDone) -> None:
    try:
        ref.tell(done)
    except pykka.ActorDeadError:
        pass  # the run stopped or timed this attempt out: nobody is waiting


def execute_sync(msg: Execute, loop: Any = None) -> StepDone:
    """Run a sync step in the calling thread (awaiting a returned awaitable on ``loop``)."""
    if _trace.enabled:
        return _trace.in_span(msg, _execute_sync, loop)
    return _execute_sync(msg, loop)


def _execute_sync(msg: Execute, loop: Any = None) -> StepDone:
    try:
        result = call(msg)
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


class LentStep:
    """A lone sync step as work lent to a dispatcher thread
    (:meth:`~atomr.actors.dispatcher.Dispatcher.lend`): it runs outside its
    run actor's turn, so the run hears every message meanwhile; its StepDone
    goes to the run like a pool step's. Runs on the lent thread."""

    __slots__ = ("msg", "stepping", "key")

    def __init__(self, msg: Execute, stepping: set[Any], key: Any) -> None:
        self.msg = msg
        #: runs with a step on a lent thread now (close() does not wait for them)
        self.stepping = stepping
        self.key = key

    def __call__(self) -> tuple[Any, StepDone] | None:
        msg = self.msg
        if msg.cancelled is not None and msg.cancelled.is_set():
            return None  # its run was cancelled before it started: it must not start
        self.stepping.add(self.key)
        try:
            return msg.reply_to, execute_sync(msg)
        finally:
            self.stepping.discard(self.key)
