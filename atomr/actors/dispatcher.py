"""A pykka actor type whose instances share a few threads: the dispatcher.

A :class:`~pykka.ThreadingActor` owns an OS thread for its whole life, so a
thousand executing runs make a thousand threads fighting over the GIL. A
:class:`DispatchedActor` owns none: its inbox is a :class:`Mailbox` that, when
a message lands in it while the actor is idle, puts the actor on its
:class:`Dispatcher`'s ready queue. One of the dispatcher's threads then takes
the actor and handles up to ``throughput`` messages in one *turn* (Akka's
dispatcher setting) before yielding the thread to the next ready actor. An
actor is on the ready queue at most once and is never run by two threads at
once (the mailbox's ``scheduled`` flag changes under its lock), so an actor
still sees its messages one at a time, in order, as with pykka's own types.

Everything public stays pykka's: ``start()`` returns a :class:`pykka.ActorRef`;
``tell``, ``ask`` (a :class:`pykka.ThreadingFuture` that a dispatcher thread
completes), ``stop``, :class:`pykka.ActorRegistry`, ``on_start`` (run in the
first turn), ``on_stop`` and ``on_failure`` keep their meaning. One difference
on purpose: a ``BaseException`` escaping a message handler stops *that* actor
(and is logged), never every actor of the process.

Blocking work never runs inside a turn: an actor's mailbox must not wait for
a user's code. An actor may *lend* blocking work (a user's step) to a
dispatcher thread with :meth:`Dispatcher.lend`: the work runs on that thread
*after* the lending turn ended (the same thread, when the turn ran on one: no
hand-off), its answer goes to the actor's mailbox, and when that finds the
actor idle the same thread runs the actor's next turn (again no hand-off). At
most ``threads - 1`` threads are lent at once (:meth:`Dispatcher.try_block`),
so one thread is always left to run turns; when none may be lent, the caller
hands the work to a pool instead.

Threads: ``threads`` daemon threads per dispatcher, started with it.
"""

from __future__ import annotations

import queue
import sys
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import pykka
from pykka import ActorDeadError, ActorRegistry, ThreadingFuture
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from atomr._hooks import logger
from atomr.actors.mailbox import Mailbox
from atomr.errors import AtomrError

__all__ = ["Dispatcher", "DispatchedActor", "Mailbox", "default_dispatcher"]

log = logger("atomr.dispatcher")

_STOP = object()
#: a dispatcher thread's lending slot outside a turn (work lent now goes to the ready queue)
_NO_SLOT = object()
#: no first message for a turn
_NOTHING = object()
#: the messages pykka's own Actor._handle_receive handles itself
_PYKKA_MESSAGES = frozenset({_ActorStop, ProxyCall, ProxyGetAttr, ProxySetAttr})

#: lent work: runs once on a dispatcher thread; returns (actor ref, message) to deliver, or None
Work = Callable[[], "tuple[Any, Any] | None"]


class Dispatcher:
    """A fixed set of threads running the turns of many :class:`DispatchedActor` s.

    ``threads``: how many actors run at once (a few: the GIL runs one at a
    time anyway). ``throughput``: messages an actor handles per turn before
    the thread moves on to the next ready actor (fairness vs. hand-offs).
    """

    def __init__(self, threads: int = 4, throughput: int = 16, name: str = "atomr-dispatch") -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise AtomrError(f"dispatcher threads must be an int in 1..256, got {threads!r}")
        if isinstance(throughput, bool) or not isinstance(throughput, int) or throughput < 1:
            raise AtomrError(f"dispatcher throughput must be an int >= 1, got {throughput!r}")
        self.threads = threads
        self.throughput = throughput
        self.name = name
        self._ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: one token per thread that may be lent (threads - 1): list.pop and
        #: list.append are atomic, so a loan costs no lock
        self._loans: list[None] = [None] * (threads - 1)
        self._closed = False
        #: per thread: the work lent in the turn it runs now (see lend)
        self._local = threading.local()
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._workers:
            t.start()

    # -- lending a thread to blocking work ------------------------------------

    def try_block(self) -> bool:
        """May the calling dispatcher thread run blocking work now? Pair a True
        with :meth:`unblock`. Always False off the dispatcher's threads' budget."""
        try:
            self._loans.pop()
        except IndexError:
            return False
        return True

    def unblock(self) -> None:
        self._loans.append(None)

    def lend(self, work: Work) -> bool:
        """Run ``work`` (blocking: a user's step) on a dispatcher thread outside
        any turn, and deliver what it returns (``(actor_ref, message)``) to that
        actor. Called in a turn, the work runs on the turn's thread as soon as
        the turn ends (which it does after the current message): no hand-off.
        False: no thread may be lent now (:meth:`try_block`); use a pool."""
        if self._closed or not self.try_block():
            return False
        local = self._local
        if getattr(local, "lent", _NO_SLOT) is None:
            local.lent = work
        else:  # off a turn (or a second loan in one turn): any thread takes it
            self._ready.put((work,))
        return True

    # -- the threads --------------------------------------------------------

    def _work(self) -> None:
        ready = self._ready
        self._local.lent = _NO_SLOT
        while True:
            item = ready.get()
            if item is _STOP:
                return
            try:
                nxt = self._run_lent(item[0]) if type(item) is tuple else (item, _NOTHING)
                while nxt is not None:
                    nxt = self._run_turn(*nxt)
            except BaseException:  # noqa: BLE001 - a dispatcher thread never dies
                log.exception("dispatcher: unexpected error in the turn of %s", item)

    def _run_turn(self, actor: DispatchedActor, first: Any) -> tuple[DispatchedActor, Any] | None:
        """One turn of ``actor`` (``first``: a message to handle before its
        inbox), then the work it lent, if any; returns the actor this thread
        runs next with its first message (the work's answer found it idle)."""
        local = self._local
        local.lent = None
        try:
            if actor._turn(self.throughput, local, first):
                self._ready.put(actor)
        except BaseException:  # noqa: BLE001 - a dispatcher thread never dies (what it lent still runs)
            log.exception("dispatcher: unexpected error in the turn of %s", actor)
        work, local.lent = local.lent, _NO_SLOT
        return None if work is None else self._run_lent(work)

    def _run_lent(self, work: Work) -> tuple[DispatchedActor, Any] | None:
        """Run lent work (this thread is lent: see lend) and deliver its answer;
        returns (actor, answer) when the actor was idle: this thread runs its
        turn now, handing it the answer first (it is not queued)."""
        try:
            out = work()
        finally:
            self.unblock()
        if out is None:
            return None
        ref, message = out
        mb = ref.actor_inbox
        if type(mb) is Mailbox and mb._dispatcher is self:
            if ref.actor_stopped.is_set():
                return None  # the actor stopped (its run was cancelled, closed): nobody waits
            return (mb._actor, message) if mb._claim_or_put(message) else None
        try:
            ref.tell(message)
        except ActorDeadError:
            pass
        return None

    def depth(self) -> int:
        """Actors waiting for a thread (a gauge)."""
        return self._ready.qsize()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the threads once the actors queued before the call have had
        their turn, waiting ``timeout`` seconds in all (a thread lent to a
        step that does not return is a daemon: it ends with the step)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._ready.put(_STOP)
        current = threading.current_thread()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            if t is not current:
                t.join(max(0.0, deadline - time.monotonic()))


_default: Dispatcher | None = None
_default_lock = threading.Lock()


def default_dispatcher() -> Dispatcher:
    """The process-wide dispatcher, for actors started without one (lazy)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Dispatcher(name="atomr-dispatch-default")
        return _default


class StopFlag:
    """``Actor.actor_stopped`` for dispatched actors: what pykka reads of it
    (``is_set``, ``set``; ``wait`` too) at a fraction of a ``threading.Event``'s
    cost to make — an actor is made per run."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._event is None:
            self._event = threading.Event()
            if self._set:
                self._event.set()
        return self._event.wait(timeout)


_URNS = itertools.count(1)
_URN_PREFIX = f"urn:atomr:{uuid.uuid4().hex}:"


class DispatchedActor(pykka.Actor):
    """A pykka actor run by a :class:`Dispatcher` instead of a thread of its own.

    Subclasses pick the dispatcher with :meth:`use_dispatcher` in ``__init__``
    (default: a class's ``dispatcher``, else :func:`default_dispatcher`).
    Making one is cheap (no thread, no uuid4, no Event), as a run needs one.
    """

    #: set for every instance in __init__; a class may set a default
    dispatcher: ClassVar[Dispatcher | None] = None

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # what pykka.Actor.__init__ sets, made cheaply: a URN unique in the
        # process (a random prefix and a counter), a StopFlag for the Event
        self.actor_urn = _URN_PREFIX + str(next(_URNS))
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = StopFlag()  # type: ignore[assignment]
        self._actor_ref = pykka.ActorRef(self)

    @staticmethod
    def _create_actor_inbox() -> Mailbox:  # type: ignore[override]
        return Mailbox()

    @staticmethod
    def _create_future() -> ThreadingFuture[Any]:
        return ThreadingFuture()

    def _start_actor_loop(self) -> None:
        d = self.__dict__.get("_dispatcher") or type(self).dispatcher or default_dispatcher()
        self._dispatcher = d
        self._started = False
        mb: Mailbox = self.actor_inbox  # type: ignore[assignment]
        mb._bind(self, d)
        d._ready.put(self)  # the first turn runs on_start

    def use_dispatcher(self, dispatcher: Dispatcher) -> None:
        """Call from ``__init__``: run this actor on ``dispatcher``."""
        self._dispatcher = dispatcher

    # -- one turn (a dispatcher thread) ----------------------------------------

    def _turn(self, throughput: int, local: Any = None, first: Any = _NOTHING) -> bool:
        """Handle ``first`` (a message claimed for this turn, see
        Mailbox._claim_or_put), then up to ``throughput`` messages; True when
        the actor must be put back on the ready queue. The turn ends early
        once a handler lent work (``local.lent``): this thread runs it next."""
        mb: Mailbox = self.actor_inbox  # type: ignore[assignment]
        if not self._started:
            self._started = True
            self._actor_loop_setup()
        stopped: StopFlag = self.actor_stopped  # type: ignore[assignment]
        n = 0
        if first is not _NOTHING:
            n = 1
            self._handle(first, None)
            if local.lent is not None and not stopped._set:
                return mb._reschedule_or_idle()
        while not stopped._set:
            if n >= throughput:
                return mb._reschedule_or_idle()
            envelope = mb._next_or_idle()
            if envelope is None:
                return False
            n += 1
            self._handle(envelope.message, envelope.reply_to)
            if local is not None and local.lent is not None and not stopped._set:
                return mb._reschedule_or_idle()
        self._teardown()
        return False

    def _handle_receive(self, message: Any) -> Any:
        """pykka's, without its four isinstance checks for an ordinary message."""
        if type(message) in _PYKKA_MESSAGES:
            return super()._handle_receive(message)
        return self.on_receive(message)

    def _handle(self, message: Any, reply_to: Any) -> None:
        try:
            response = self._handle_receive(message)
            if reply_to is not None:
                reply_to.set(response)
        except Exception:
            if reply_to is not None:
                reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # noqa: BLE001 - stops this actor only (pykka would stop all)
            info = sys.exc_info()
            log.error("%r in %s: stopping this actor", info[1], self)
            if reply_to is not None:
                reply_to.set_exception(info)
            self._stop()

    def _teardown(self) -> None:
        """Answer what is still queued (asks get ActorDeadError) and go idle for good."""
        mb: Mailbox = self.actor_inbox  # type: ignore[assignment]
        with mb._lock:
            rest = list(mb._q)
            mb._q.clear()
            mb._scheduled = True  # never scheduled again
            mb._actor = None  # no cycle left: a stopped actor is freed by refcount, not by the gc
        for envelope in rest:
            if envelope.reply_to is None:
                continue
            if isinstance(envelope.message, _ActorStop):
                envelope.reply_to.set(None)
            else:
                envelope.reply_to.set_exception(
                    exc_info=(ActorDeadError, ActorDeadError(f"{self.actor_ref} stopped before handling the message"),
                              None))

    def _stop(self) -> None:
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:  # noqa: BLE001
            self._handle_failure(*sys.exc_info())
