"""The supervisor: spawns run actors, routes messages to them, restarts the dead.

Not an actor itself (routing through a mailbox would add a hop to every
request): a lock-protected registry called from any thread.

* :meth:`Supervisor.ref` returns the live actor of a run, or rehydrates the
  run from the store (snapshot + journal tail) and spawns one.
* A run actor that pauses, ends or fails calls :meth:`release` before stopping,
  so the next request spawns a fresh actor from the (already durable) journal.
* A run actor that hit an internal error calls :meth:`crashed`: the supervisor
  waits for the checkpointer to drain, rehydrates the run and starts a new actor
  that carries on (at most ``max_restarts`` times, then the run is reported failed).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pykka

from atomr import events as ev
from atomr._hooks import logger
from atomr._load import load_progress
from atomr._run.actor import WorkflowActor
from atomr._run.journal import batch_of
from atomr._run.subscribers import tell
from atomr.actors.step import safe_text
from atomr.graph.progress import apply_event
from atomr.errors import RuntimeClosed
from atomr.messages import Flush, Maintain, Recover
from atomr.store import format as fmt
from atomr.types import Failed

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.workflow import Workflow

__all__ = ["Supervisor"]

log = logger("atomr.supervisor")


class Supervisor:
    def __init__(self, max_restarts: int = 3) -> None:
        self.core: Core | None = None
        self.max_restarts = max_restarts
        self._lock = threading.Lock()
        self._live: dict[tuple[str, str], pykka.ActorRef[Any]] = {}
        self._restarts: dict[tuple[str, str], int] = {}
        self._starting: dict[tuple[str, str], threading.Event] = {}
        #: runs whose live actor is executing them (not just holding them)
        self._driving: set[tuple[str, str]] = set()
        #: set by stop_all (the runtime is closing): no restarts, runs stop advancing
        self.closed = False

    def ref(self, wf: Workflow, run_id: str) -> pykka.ActorRef[Any]:
        """The run's actor, spawned if needed; concurrent callers for one run
        get the same actor. Spawning is cheap (no thread, no I/O: the actor
        rehydrates itself from the store in its first turn), so it happens
        under the registry lock. A run held by a restart or by maintenance
        is waited for.
        """
        key = (wf.id, run_id)
        assert self.core is not None
        while True:
            with self._lock:
                if self.closed:
                    raise RuntimeClosed("this Runtime is closed; create a new one (the run is kept as committed)")
                ref = self._live.get(key)
                if ref is not None:
                    return ref
                held = self._starting.get(key)
                if held is None:
                    ref = self._live[key] = WorkflowActor.start(self.core, wf, run_id)
                    return ref
            held.wait(30)

    def hold(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Keep runs from getting an actor (maintenance is changing them): the
        held keys, i.e. those with no live or starting actor. A request for a
        held run waits in :meth:`ref` until :meth:`let_go`."""
        held = []
        with self._lock:
            for key in keys:
                if key in self._live or key in self._starting:
                    continue
                self._starting[key] = threading.Event()
                held.append(key)
        return held

    def let_go(self, keys: list[tuple[str, str]]) -> None:
        with self._lock:
            events = [self._starting.pop(key, None) for key in keys]
        for e in events:
            if e is not None:
                e.set()

    def is_live(self, workflow_id: str, run_id: str) -> bool:
        with self._lock:
            return (workflow_id, run_id) in self._live

    def route(self, wf: Workflow, run_id: str, message: Any) -> None:
        """Tell the run's live actor (spawning one if needed).

        The tell happens under the registry lock, and an actor releases itself
        under that lock before it stops: a routed message is therefore either
        in the actor's inbox before its stop (it is then forwarded to the next
        actor) or goes to a new actor; it is never dropped by a stopping one.
        """
        key = (wf.id, run_id)
        for _ in range(100):
            ref = self.ref(wf, run_id)
            with self._lock:
                if self._live.get(key) is not ref:
                    continue  # released meanwhile: get the next actor
                try:
                    ref.tell(message)
                    return
                except pykka.ActorDeadError:
                    if self._live.get(key) is ref:
                        del self._live[key]  # died without releasing (crash)
                        self._driving.discard(key)
        raise RuntimeError(f"could not deliver {type(message).__name__} to run {wf.id}/{run_id}")

    def mark_driving(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._driving.add(key)

    def is_driving(self, workflow_id: str, run_id: str) -> bool:
        """The run is executing now (whatever the store says yet, e.g. under
        durability "exit")."""
        return (workflow_id, run_id) in self._driving

    def release(self, key: tuple[str, str], ref: pykka.ActorRef[Any]) -> None:
        with self._lock:
            if self._live.get(key) is ref:
                del self._live[key]
                self._driving.discard(key)
            self._restarts.pop(key, None)

    def crashed(self, wf: Workflow, run_id: str, ref: pykka.ActorRef[Any], exc: BaseException,
                subscribers: tuple[list[Any], list[Any]]) -> None:
        """Called from the dying actor's thread."""
        key = (wf.id, run_id)
        with self._lock:
            if self._live.get(key) is ref:
                del self._live[key]
                self._driving.discard(key)
            n = self._restarts[key] = self._restarts.get(key, 0) + 1
        reply_to, listeners = subscribers
        assert self.core is not None
        if self.closed:
            return  # the runtime is closing: the run stays as last committed
        if n > self.max_restarts:
            with self._lock:
                self._restarts.pop(key, None)
                barrier = self._starting.setdefault(key, threading.Event())
            threading.Thread(target=self._give_up, args=(wf, run_id, n, exc, reply_to + listeners, barrier),
                             name=f"atomr-fail-{run_id}", daemon=True).start()
            return

        # until the dead actor's queued events are committed, nobody may
        # rehydrate this run (ref() waits on this marker)
        with self._lock:
            barrier = self._starting.setdefault(key, threading.Event())

        def restart() -> None:
            try:
                try:
                    if self.core is not None and self.core.checkpointer is not None:
                        self.core.checkpointer.ask(Flush(), timeout=30)
                finally:
                    with self._lock:
                        if self._starting.get(key) is barrier:
                            del self._starting[key]
                    barrier.set()
                new = self.ref(wf, run_id)
                targets = max(len(reply_to), len(listeners))
                for i in range(max(targets, 1)):
                    new.tell(Recover(reply_to[i] if i < len(reply_to) else None,
                                     listeners[i] if i < len(listeners) else None))
            except Exception:  # noqa: BLE001
                log.exception("could not restart run %s/%s", wf.id, run_id)

        threading.Thread(target=restart, name=f"atomr-restart-{run_id}", daemon=True).start()

    def _give_up(self, wf: Workflow, run_id: str, n: int, exc: BaseException, targets: list[Any],
                 barrier: threading.Event) -> None:
        """A run whose actor crashed ``n`` times ends durably as Failed with the
        cause (resumable with ``Command()`` once the cause is fixed)."""
        key = (wf.id, run_id)
        text = safe_text(exc)
        message = (f"run actor crashed {n} times ({type(exc).__name__}: {text}); the run is failed "
                   "as it was last committed: fix the cause and resume it with Command()")
        super_step = -1
        try:
            assert self.core is not None
            core = self.core
            if core.checkpointer is not None:
                core.checkpointer.ask(Flush(), timeout=30)
            p = load_progress(core.store, wf.plan, wf.id, run_id)
            if p is not None and p.status == "running":
                super_step = p.super_step
                e = ev.RunFailed(None, "InternalError", message, p.super_step, int(time.time() * 1000))
                first = p.seq + 1
                records = [fmt.encode_event(e)]
                apply_event(wf.plan, p, e, first)
                batch = batch_of(p, first, records, snapshot=True)
                if core.checkpointer is not None:
                    errs = core.checkpointer.ask(Maintain(lambda store: store.write([batch])), timeout=30)
                else:
                    errs = core.store.write([batch])
                if errs[0] is not None:
                    raise errs[0]
        except Exception:  # noqa: BLE001
            log.exception("run %s/%s: could not record its failure", wf.id, run_id)
        finally:
            with self._lock:
                if self._starting.get(key) is barrier:
                    del self._starting[key]
            barrier.set()
        failed = Failed(wf.id, run_id, None, super_step, "InternalError", message)
        for t in targets:
            tell(t, failed)

    def live(self) -> list[pykka.ActorRef[Any]]:
        with self._lock:
            return list(self._live.values())

    def refuse_new(self) -> None:
        """The runtime is closing: no run gets an actor or a message any more."""
        with self._lock:
            self.closed = True

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every run actor, waiting at most ``timeout`` seconds in all (a
        run actor never waits for a step, so each stops in its next turn; a
        step still running answers nobody, and its run stays as last
        committed)."""
        with self._lock:
            self.closed = True
            live = list(self._live.items())
            self._live.clear()
            self._driving.clear()
        futures = []
        for _key, r in live:
            try:
                futures.append(r.stop(block=False))
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + timeout
        for f in futures:
            try:
                f.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                pass
