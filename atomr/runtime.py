"""Runtime and RunHandle: the public edge of atomr.

Threads: the methods of :class:`Runtime` run in the caller's thread and are
thread-safe. They read the store directly (read transactions) and talk to run
actors by message; waiting happens only here, always with a timeout.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pykka

from atomr import events as ev
from atomr._load import iter_checkpoints, load_progress, load_progress_at
from atomr.actors.checkpointer import Checkpointer
from atomr.actors.core import Core
from atomr.actors.dispatcher import Dispatcher
from atomr.actors.scheduler import Scheduler
from atomr.actors.step import LocalExecutor
from atomr.actors.supervisor import Supervisor
from atomr.codec import check_encodable
from atomr.errors import (
    AtomrError,
    CheckpointNotFound,
    ResultTimeout,
    RunExists,
    RunNotFound,
    RunNotPaused,
    RuntimeClosed,
    WorkflowExists,
    WorkflowNotFound,
)
from atomr.graph import superstep as algo
from atomr.graph.state import apply_writes, check_channels
from atomr.messages import Accepted, Maintain, Recover, Rejected, Resume, Run
from atomr.store import format as fmt
from atomr.store.base import AppendBatch, RunSummary, Store
from atomr.types import Checkpoint, Command, Outcome, StateView, StepEvent
from atomr.workflow import Workflow

__all__ = ["Runtime", "RunHandle", "DURABILITY_MODES"]

log = logging.getLogger("atomr.runtime")

DURABILITY_MODES = ("sync", "async", "exit")
_DEFAULT_TIMEOUT = 30.0


class _Inbox:
    """A thread-safe mailbox with a pykka-like ``tell`` for one RunHandle.

    Step events are appended without a lock (a deque append is atomic); the
    condition is touched only when a reader is waiting, or for the rare
    Accepted/outcome messages.
    """

    __slots__ = ("_cond", "accepted", "outcome", "events", "_waiting", "on_outcome")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.accepted: Any = None  # Accepted | Rejected
        self.outcome: Any = None
        self.events: collections.deque[StepEvent] = collections.deque(maxlen=100_000)
        self._waiting = 0
        self.on_outcome: Any = None  # called once when the outcome arrives

    def tell(self, message: Any) -> None:
        if type(message) is StepEvent:
            self.events.append(message)
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
            if self.outcome is not None and self.on_outcome is not None:
                callback, self.on_outcome = self.on_outcome, None
                callback()

    def wait(self, attr: str, timeout: float | None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: getattr(self, attr) is not None, timeout):
                return None
            return getattr(self, attr)

    def next_event(self, timeout: float | None) -> StepEvent | None:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self.events or self.outcome is not None, timeout)
            finally:
                self._waiting -= 1
            if self.events:
                return self.events.popleft()
            return None


class RunHandle:
    """A started or resumed run: wait for its outcome, or stream its events."""

    def __init__(self, runtime: Runtime, workflow_id: str, run_id: str, inbox: _Inbox) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.run_id = run_id
        self._inbox = inbox

    def __repr__(self) -> str:
        return f"RunHandle({self.workflow_id!r}, {self.run_id!r}, done={self.done()})"

    def done(self) -> bool:
        return self._inbox.outcome is not None

    def result(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Outcome:
        """Wait for the outcome: Done, Paused or Failed. Raises ResultTimeout."""
        out = self._inbox.wait("outcome", timeout)
        if out is None:
            raise ResultTimeout(
                f"run {self.workflow_id}/{self.run_id} has no outcome after {timeout}s; it is "
                "still running: wait longer (handle.result(timeout=...)) or inspect it with "
                "rt.get_state()"
            )
        if isinstance(out, Rejected):
            raise out.error
        return out  # type: ignore[no-any-return]

    def events(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Iterator[StepEvent]:
        """Step events as they happen (started, completed, failed, retrying,
        interrupted, committed), ending with one "outcome" event.

        ``timeout`` bounds the wait for each next event (ResultTimeout).
        """
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


_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - interpreter exit
    for rt in list(_RUNTIMES):
        try:
            rt.close()
        except Exception:  # noqa: BLE001
            pass


class Runtime:
    """Runs registered workflows on a store.

    ``store``: an :class:`~atomr.LmdbStore` (default: ``LmdbStore(".atomr")``) or
    :class:`~atomr.MemoryStore`; the runtime closes it on :meth:`close`.
    ``durability``: "sync" | "async" | "exit" (see :mod:`atomr._run.journal`).
    ``step_workers``: how many sync steps of one layer run at once (one thread each).
    ``inline_steps``: run a layer made of one sync step (without a timeout) in
    the run's own actor thread, saving two thread hops per super-step (default:
    True with the local executor; a remote ``executor`` turns it off).
    ``executor``: where steps run (default: local step actors).
    ``dispatcher_threads``: the threads that run every run actor's turns
    (however many runs execute); ``throughput``: messages a run actor handles
    per turn before its thread moves on to the next ready run.
    """

    def __init__(
        self,
        store: Store | None = None,
        durability: str = "sync",
        step_workers: int = 4,
        *,
        executor: Any = None,
        inline_steps: bool | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        dispatcher_threads: int = 4,
        throughput: int = 16,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise AtomrError(
                f"unknown durability {durability!r}; use one of {', '.join(DURABILITY_MODES)}"
            )
        if store is None:
            from atomr.store.lmdb import LmdbStore

            store = LmdbStore(".atomr")
        if not isinstance(store, Store):
            raise AtomrError(f"store must be an LmdbStore or MemoryStore, got {type(store).__name__}")
        self.store = store
        self.durability = durability
        self.timeout = timeout
        self._closed = False
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        if inline_steps is None:
            inline_steps = executor is None
        dispatcher = Dispatcher(dispatcher_threads, throughput)
        executor = executor if executor is not None else LocalExecutor(step_workers)
        self.executor = executor
        executor.start()
        supervisor = Supervisor()
        checkpointer = Checkpointer.start(store) if store.single_writer else None
        self._core = Core(store, checkpointer, executor, Scheduler(), supervisor, durability,
                          dispatcher, inline=bool(inline_steps))
        supervisor.core = self._core
        _RUNTIMES.add(self)

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every actor, commit what is queued, close the store.

        Runs still executing stay "running" in the store: ``recover()`` in the
        next runtime carries them on.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        core = self._core
        core.supervisor.stop_all(timeout)
        if core.checkpointer is not None:
            try:
                core.checkpointer.stop(block=True, timeout=timeout)
            except Exception:  # noqa: BLE001
                log.exception("checkpointer did not stop cleanly")
        core.executor.close()
        core.scheduler.close()
        core.dispatcher.close()
        self.store.close()
        _RUNTIMES.discard(self)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("this Runtime is closed; create a new one")

    # -- workflows -----------------------------------------------------------

    def register(self, workflow: Workflow) -> Workflow:
        """Make ``workflow`` runnable here. Raises WorkflowExists for a taken id."""
        self._check_open()
        if not isinstance(workflow, Workflow):
            raise AtomrError(f"register() takes a Workflow, got {type(workflow).__name__}")
        from atomr.kinds import Subgraph

        with self._lock:
            known = self._core.workflows.get(workflow.id)
            if known is workflow:
                return workflow  # already here (e.g. as a Subgraph's child)
            if known is not None:
                raise WorkflowExists(workflow.id)
            self._core.workflows[workflow.id] = workflow
        for fn in workflow.dag.steps.values():
            # a Subgraph given a Workflow object registers its child too
            if isinstance(fn, Subgraph) and not isinstance(fn.workflow, str):
                known = self._core.workflows.get(fn.workflow.id)
                if known is None:
                    self.register(fn.workflow)
                elif known is not fn.workflow:
                    raise WorkflowExists(fn.workflow.id)
        return workflow

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._core.workflows)

    def workflow(self, workflow_id: str) -> Workflow:
        wf = self._core.workflows.get(workflow_id)
        if wf is None:
            raise WorkflowNotFound(workflow_id, self._core.workflows)
        return wf

    # -- runs ------------------------------------------------------------------

    def start(
        self,
        workflow_id: str,
        input: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RunHandle:
        """Start a run. With durability "sync" it returns once the start is durable.

        Raises WorkflowNotFound, UnknownChannelError (input key not a channel),
        CodecError (input not storable), RunExists.
        """
        return self.start_many(workflow_id, [input], [run_id] if run_id is not None else None,
                               meta=meta, timeout=timeout)[0]

    def start_many(
        self,
        workflow_id: str,
        inputs: Iterable[Mapping[str, Any] | None],
        run_ids: Iterable[str] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> list[RunHandle]:
        """Start several runs at once: their starts share commits. Every input is
        validated before any run starts; returns the handles in input order."""
        self._check_open()
        wf = self.workflow(workflow_id)
        datas = []
        for input in inputs:
            if input is not None and not isinstance(input, Mapping):
                raise AtomrError(f"input must be a mapping of channel -> value, got {type(input).__name__}")
            data = dict(input or {})
            check_channels(wf.schema, data.items())
            check_encodable(data, "the run input")
            datas.append(data)
        ids = list(run_ids) if run_ids is not None else [uuid.uuid4().hex[:16] for _ in datas]
        if len(ids) != len(datas):
            raise AtomrError(f"{len(datas)} inputs but {len(ids)} run ids; pass one run id per input")
        if len(set(ids)) != len(ids):
            raise AtomrError("duplicate run ids in one start_many() call; make them unique")
        for rid in ids:
            if not isinstance(rid, str) or not rid:
                raise AtomrError(f"run_id must be a non-empty string, got {rid!r}")
            fmt.check_ids(wf.id, rid)
            if self.store.summary(wf.id, rid) is not None or self._core.supervisor.is_live(wf.id, rid):
                raise RunExists(wf.id, rid)
        pending = []
        for data, rid in zip(datas, ids):
            inbox = _Inbox()
            self._core.supervisor.ref(wf, rid).tell(Run(data, inbox, inbox, meta))
            pending.append((rid, inbox))
        return [self._accepted(wf.id, rid, inbox, timeout) for rid, inbox in pending]

    def _accepted(self, workflow_id: str, run_id: str, inbox: _Inbox, timeout: float | None) -> RunHandle:
        t = self.timeout if timeout is None else timeout
        got = inbox.wait("accepted", t)
        if got is None:
            raise ResultTimeout(
                f"run {workflow_id}/{run_id} was not accepted within {t}s (the store may be "
                "slow or stuck); check the store and retry"
            )
        if isinstance(got, Rejected):
            raise got.error
        return RunHandle(self, workflow_id, run_id, inbox)

    def resume(
        self,
        workflow_id: str,
        run_id: str,
        command: Command | None = None,
        *,
        timeout: float | None = None,
    ) -> RunHandle:
        """Resume a paused or failed run. Raises (and leaves the run untouched) on
        RunNotFound, RunNotPaused, UnknownStepError (goto), InterruptError, ..."""
        self._check_open()
        wf = self.workflow(workflow_id)
        command = command if command is not None else Command()
        if not isinstance(command, Command):
            raise AtomrError(f"resume() takes a Command, got {type(command).__name__}")
        summary = self.store.summary(wf.id, run_id)
        live = self._core.supervisor.is_live(wf.id, run_id)
        if summary is None and not live:
            raise RunNotFound(wf.id, run_id)
        if live and (summary is None or summary.status == "running"
                     or self._core.supervisor.is_driving(wf.id, run_id)):
            # its actor may be busy running a step inline: refuse here, at once
            raise RunNotPaused(wf.id, run_id, "running")
        inbox = _Inbox()
        self._core.supervisor.route(wf, run_id, Resume(command, inbox, inbox))
        return self._accepted(wf.id, run_id, inbox, timeout)

    def recover(self, workflow_ids: Iterable[str] | None = None,
                max_active: int | None = 64) -> list[RunHandle]:
        """Carry on every run left "running" in the store (after a crash).

        Only runs of registered workflows are recovered (others are logged and
        skipped). Returns their handles at once. At most ``max_active`` of them
        execute at the same time (None: all at once); the rest start as
        those finish, from a feeder thread — a thousand runs fighting over
        the GIL at once finish later than in waves. A run that cannot be
        recovered raises its error from ``handle.result()``.
        """
        self._check_open()
        if max_active is not None and max_active < 1:
            raise AtomrError(f"max_active must be >= 1 or None, got {max_active}")
        wanted = set(workflow_ids) if workflow_ids is not None else None
        todo: list[tuple[Workflow, str, _Inbox]] = []
        for s in self.store.runs(status="running"):
            if wanted is not None and s.workflow_id not in wanted:
                continue
            wf = self._core.workflows.get(s.workflow_id)
            if wf is None:
                log.warning("recover: workflow %r is not registered; run %s left as is",
                            s.workflow_id, s.run_id)
                continue
            if "parent" in s.meta:
                continue  # a Subgraph child: its parent run drives it
            todo.append((wf, s.run_id, _Inbox()))
        handles = [RunHandle(self, wf.id, rid, inbox) for wf, rid, inbox in todo]
        if max_active is None or len(todo) <= max_active:
            for wf, rid, inbox in todo:
                self._core.supervisor.route(wf, rid, Recover(inbox, inbox))
            return handles
        slots = threading.Semaphore(max_active)

        def feed() -> None:
            for wf, rid, inbox in todo:
                slots.acquire()
                if self._closed:
                    return
                inbox.on_outcome = slots.release
                try:
                    self._core.supervisor.route(wf, rid, Recover(inbox, inbox))
                except Exception as exc:  # noqa: BLE001 - reported on the handle
                    inbox.tell(Rejected(wf.id, rid, exc))

        threading.Thread(target=feed, name="atomr-recover", daemon=True).start()
        return handles

    def ref(self, workflow_id: str, run_id: str) -> pykka.ActorRef[Any]:
        """The run's ActorRef (spawning or rehydrating it): tell it Run/Resume."""
        self._check_open()
        return self._core.supervisor.ref(self.workflow(workflow_id), run_id)

    # -- inspection (reads, any thread) ------------------------------------

    def _progress(self, workflow_id: str, run_id: str) -> tuple[Workflow, algo.RunProgress]:
        wf = self.workflow(workflow_id)
        p = load_progress(self.store, wf.plan, wf.id, run_id)
        if p is None:
            raise RunNotFound(workflow_id, run_id)
        return wf, p

    def get_state(self, workflow_id: str, run_id: str) -> StateView:
        """The run as of its last committed event."""
        self._check_open()
        wf, p = self._progress(workflow_id, run_id)
        return _view(wf, p)

    def history(self, workflow_id: str, run_id: str) -> list[Checkpoint]:
        """Every checkpoint, oldest first (starting with "input" at super-step 0)."""
        self._check_open()
        wf = self.workflow(workflow_id)
        if self.store.summary(wf.id, run_id) is None:
            raise RunNotFound(workflow_id, run_id)
        return [c for c, _ in iter_checkpoints(self.store, wf.plan, wf.id, run_id)]

    def state_at(self, workflow_id: str, run_id: str, super_step: int) -> Checkpoint:
        """The last checkpoint of ``super_step``."""
        wf = self.workflow(workflow_id)
        found = self._checkpoint_at(wf, run_id, super_step)
        return found[0]

    def _checkpoint_at(self, wf: Workflow, run_id: str, super_step: int) -> tuple[Checkpoint, algo.RunProgress]:
        if self.store.summary(wf.id, run_id) is None:
            raise RunNotFound(wf.id, run_id)
        found = None
        seen: set[int] = set()
        for c, p in iter_checkpoints(self.store, wf.plan, wf.id, run_id):
            seen.add(c.super_step)
            if c.super_step == super_step:
                found = (c, p)
        if found is None:
            raise CheckpointNotFound(wf.id, run_id, super_step, sorted(seen))
        return found

    def runs(self, status: str | None = None, workflow_id: str | None = None) -> list[RunSummary]:
        """Run summaries from the run index (no journal is read)."""
        self._check_open()
        return self.store.runs(status=status, workflow_id=workflow_id)

    # -- fork / maintenance ------------------------------------------------

    def fork(
        self,
        workflow_id: str,
        run_id: str,
        super_step: int,
        edits: Mapping[str, Any] | None = None,
        new_run_id: str | None = None,
    ) -> str:
        """A new paused run starting from the state after ``super_step`` (edits go
        through the reducers). Resume it with ``Command()``. Returns its run id."""
        self._check_open()
        wf = self.workflow(workflow_id)
        cp, p = self._checkpoint_at(wf, run_id, super_step)
        new_id = new_run_id or f"{run_id}-fork-{uuid.uuid4().hex[:8]}"
        if self.store.summary(wf.id, new_id) is not None:
            raise RunExists(wf.id, new_id)
        now = int(time.time() * 1000)
        source_meta = dict(p.meta)
        meta = {**source_meta, "forked_from": f"{run_id}@{super_step}"}
        events: list[Any] = [ev.Forked(wf.id, run_id, super_step, dict(cp.values), p.layer,
                                       {k: list(v) for k, v in p.branches.items()}, meta, now)]
        if edits:
            pairs = list(edits.items())
            apply_writes(wf.schema, dict(cp.values), pairs)  # validate first
            events.append(ev.StateUpdated(pairs, "fork", now))
        events.append(ev.Paused("fork", [], super_step, now))
        fork = algo.RunProgress(wf.id, new_id)
        records = []
        for i, e in enumerate(events, 1):
            records.append(fmt.encode_event(e))
            algo.apply_event(wf.plan, fork, e, i)
        batch = AppendBatch(wf.id, new_id, 1, records, status="paused", super_step=super_step,
                            snapshot=fmt.encode_obj(algo.to_snapshot(fork)), meta=meta)
        self._write([batch])
        return new_id

    def _write(self, batches: list[AppendBatch]) -> None:
        err = self._maintain(lambda store: store.write(batches))
        for e in err:
            if e is not None:
                raise e

    def _maintain(self, fn: Any) -> Any:
        """Run ``fn(store)`` in the writer thread (or here for a MemoryStore)."""
        cp = self._core.checkpointer
        if cp is None:
            return fn(self.store)
        return cp.ask(Maintain(fn), timeout=self.timeout)

    def prune(self, workflow_id: str, run_id: str, keep_last: int = 1) -> int:
        """Drop the history of a run before its last ``keep_last`` checkpoints
        (a snapshot is kept at the cut). Returns the number of records removed."""
        self._check_open()
        if keep_last < 1:
            raise AtomrError(f"keep_last must be >= 1, got {keep_last}; use rt.delete() to remove a run entirely")
        wf = self.workflow(workflow_id)
        if self._core.supervisor.is_live(wf.id, run_id):
            raise AtomrError(f"run {wf.id}/{run_id} is executing; prune it once it pauses or ends")
        points = [p for _, p in iter_checkpoints(self.store, wf.plan, wf.id, run_id)]
        if not points:
            raise RunNotFound(workflow_id, run_id)
        if len(points) <= keep_last:
            return 0
        cut = points[-keep_last]
        base = load_progress_at(self.store, wf.plan, wf.id, run_id, cut.seq)
        snap = fmt.encode_obj(algo.to_snapshot(base))
        return int(self._maintain(lambda store: store.truncate(wf.id, run_id, cut.seq, snap)))

    def delete(self, workflow_id: str, run_id: str) -> bool:
        """Remove a run from the store entirely."""
        self._check_open()
        if self._core.supervisor.is_live(workflow_id, run_id):
            raise AtomrError(f"run {workflow_id}/{run_id} is executing; delete it once it pauses or ends")
        return bool(self._maintain(lambda store: store.delete_run(workflow_id, run_id)))

    def purge(self, older_than_s: float, statuses: Iterable[str] = ("done", "failed")) -> int:
        """Delete finished runs not updated for ``older_than_s`` seconds. Returns how many."""
        self._check_open()
        limit = int((time.time() - older_than_s) * 1000)
        wanted = set(statuses)
        victims = [s for s in self.store.runs() if s.status in wanted and s.updated_ms < limit]

        def work(store: Store) -> int:
            return sum(1 for s in victims if store.delete_run(s.workflow_id, s.run_id))

        return int(self._maintain(work))

    def flush(self) -> None:
        """Wait until everything queued for the store is committed."""
        self._maintain(lambda store: None)

    def live_runs(self) -> int:
        """How many runs hold an actor (and a thread) right now."""
        return len(self._core.supervisor.live())


def _view(wf: Workflow, p: algo.RunProgress) -> StateView:
    from atomr.types import Interrupt

    return StateView(
        p.workflow_id, p.run_id, p.values, p.super_step, p.status, p.next_steps(wf.plan),
        [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts], p.pause_reason,
        p.failure, dict(p.meta),
    )

