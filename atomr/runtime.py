"""Runtime: the public edge of atomr (the asyncio methods come from :mod:`atomr._aio`).

Threads: the caller's; every method is thread-safe. Store reads are read
transactions; run actors are told messages; waits always have a timeout.
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any


from atomr._hooks import logger
from atomr.actors.checkpointer import Checkpointer, WriterGate
from atomr.actors.core import Core
from atomr.actors.dispatcher import Dispatcher
from atomr.actors.admission import Admission, check_priority
from atomr.actors.startgroup import send_starts
from atomr.actors.limits import Limiter
from atomr.actors.sleeper import Sleeper
from atomr.actors.scheduler import Scheduler
from atomr.actors.pool import LocalExecutor
from atomr.actors.supervisor import Supervisor
from atomr.errors import (AtomrError, RunNotFound, RunNotPaused, RuntimeClosed, WorkflowExists,
                          WorkflowNotFound)
from atomr._follow import Follower
from atomr._worker import Worker, check_worker_args
from atomr._observe import Observation
from atomr._runs_api import RunsAPI
from atomr._check import check_number
from atomr._maintain import check_run_id
from atomr._aio import AsyncAPI
from atomr._tuning import tune_process
from atomr._control import RunControl
from atomr._schedule import Schedules
from atomr._retention import Retention
from atomr._inspect import Inspection
from atomr._edge import check_meta, prepare_starts, record_spec, run_meta
from atomr.handle import DEFAULT_TIMEOUT, RunHandle, _Inbox
from atomr.messages import Rejected, Resume
from atomr.kinds import child_workflows
from atomr.store.base import Store
from atomr.store.lmdb import LmdbStore
from atomr.store.url import open_store
from atomr.types import Command
from atomr.workflow import Workflow

__all__ = ["Runtime", "RunHandle", "DURABILITY_MODES"]

log = logger("atomr.runtime")

DURABILITY_MODES = ("sync", "async", "exit")


_RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - interpreter exit
    for rt in list(_RUNTIMES):
        try:
            rt.close()
        except Exception:  # noqa: BLE001
            pass


class Runtime(RunsAPI, Inspection, RunControl, Schedules, AsyncAPI, Observation):
    """Runs registered workflows on a store.

    ``store``: a store — :class:`~atomr.LmdbStore` (default: ``LmdbStore(".atomr")``),
    :class:`~atomr.SqliteStore`, :class:`~atomr.PostgresStore` or
    :class:`~atomr.MemoryStore` — or a store URL opened with
    :func:`~atomr.open_store` (``"sqlite:///runs.db"``, ``"postgresql://…"``);
    the runtime closes it on :meth:`close`.
    ``durability``: "sync" | "async" | "exit" (see :mod:`atomr._run.journal`).
    ``step_workers``: how many sync steps of one layer run at once (one thread each).
    ``inline_steps``: run a layer made of one sync step (without a timeout) on
    the dispatcher thread that ran the run's turn, right after the turn (never
    in it: the run hears every message meanwhile), saving two thread hops per
    super-step (default: True with the local executor; a remote ``executor``
    turns it off).
    ``executor``: where steps run (default: local step actors).
    ``dispatcher_threads``: the threads that run every run actor's turns
    (however many runs execute); ``throughput``: messages a run actor handles
    per turn before its thread moves on to the next ready run.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        durability: str = "sync",
        step_workers: int = 4,
        *,
        executor: Any = None,
        inline_steps: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        dispatcher_threads: int = 4,
        throughput: int = 16,
        worker_id: str | None = None,
        lease_s: float = 10.0,
        execute: bool = True,
        concurrency: int = 1000,
    ) -> None:
        tune_process()  # once per process: the start-up heap frozen, a 1 ms GIL switch interval
        if durability not in DURABILITY_MODES:
            raise AtomrError(f"unknown durability {durability!r}; use one of {', '.join(DURABILITY_MODES)}")
        if store is None:
            store = LmdbStore(".atomr")
        elif isinstance(store, (str, os.PathLike)):
            store = open_store(store)
        if not isinstance(store, Store):
            raise AtomrError(
                f"store must be a Store (LmdbStore, SqliteStore, PostgresStore or MemoryStore) or a store "
                f"URL (a path, lmdb:PATH, sqlite:///FILE, postgresql://USER@HOST/DB, memory:), got "
                f"{type(store).__name__}")
        owner = getattr(store, "_atomr_runtime", None)
        if owner is not None and not owner._closed:
            raise AtomrError("this store object is already used by an open Runtime; share that Runtime, "
                             "or close it before creating another on the same store")
        shared = getattr(store, "shared", False)
        worker_id, lease_s, concurrency = check_worker_args(store, shared, worker_id, lease_s, execute, concurrency)
        if not execute:
            durability = "sync"  # a client hands a request over once it is durable
        self.store = store
        store._atomr_runtime = self  # type: ignore[attr-defined]
        #: this runtime's worker id on a shared store (None: LMDB / memory, or a client)
        self.worker_id: str | None = worker_id if shared and execute else None
        #: False: a client (starts, resumes, cancels, reads, waits; executes nothing)
        self.execute = execute
        #: every handle's inbox, told RuntimeClosed on close()
        self._inboxes: weakref.WeakSet[_Inbox] = weakref.WeakSet()
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()  # open streams (atomr._stream.Stream)
        self._starts: Any = None  # the asyncio API's starter thread (lazy)
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
        gate = WriterGate()
        checkpointer = Checkpointer.start(store, gate) if store.single_writer else None
        self._core = Core(store, checkpointer, executor, Scheduler(), supervisor, durability,
                          dispatcher, inline=bool(inline_steps), gate=gate, observer=gate.observer)
        self._core.execute = execute
        supervisor.core = self._core
        self._core.sleeper = Sleeper(self._core)
        self._core.limiter = Limiter(self._core)
        self._core.admission = Admission(self._core)
        self._worker: Worker | None = None
        self._retention = Retention(self)  # Workflow(retention_s=...): a thread once a workflow asks
        if shared:
            self._core.follow = Follower(self)
            if execute:
                self._worker = Worker(self, worker_id, lease_s, concurrency)
                try:
                    self._worker.start()
                except BaseException:
                    self._worker = None
                    self.close()
                    raise
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
        deadline = time.monotonic() + timeout
        if self._worker is not None:
            self._worker.stop()  # takes no more runs
        self._retention.close()
        core.supervisor.refuse_new()  # from here on a start or a resume gets RuntimeClosed
        # whoever waits on a run of this runtime hears it now, not at its timeout
        closed = RuntimeClosed("the Runtime was closed; the run is kept as last committed: open the "
                               "store again and call rt.recover()")
        for inbox in list(self._inboxes):
            if inbox.outcome is None:
                inbox.tell(Rejected(inbox.key[0], inbox.key[1], closed))
        for stream in list(self._streams):  # also one still opening, waiting for a busy run
            stream.close(closed)
        # run actors send what they hold (finished steps' writes) as they stop
        core.supervisor.stop_all(timeout)
        if core.checkpointer is not None:
            try:
                core.checkpointer.stop(block=True, timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                log.exception("checkpointer did not stop cleanly")
        if self._worker is not None:
            self._worker.close()  # its runs go to the other workers at once
        if core.follow is not None:
            core.follow.close()
        core.limiter.close()
        core.executor.close()
        core.scheduler.close()
        core.dispatcher.close(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
        if self._starts is not None:
            self._starts.shutdown(wait=False)
        self.store.close()
        self.store._atomr_runtime = None  # type: ignore[attr-defined]
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
        check_run_id(workflow.id, "the workflow id")
        record_spec(workflow, sys._getframe(1).f_globals.get("__name__"))  # where the CLI finds it
        with self._lock:
            known = self._core.workflows.get(workflow.id)
            if known is workflow:
                return workflow  # already here (e.g. as a Subgraph's child)
            if known is not None:
                raise WorkflowExists(workflow.id)
            if not getattr(self.store, "shared", False) and any(
                    lim.scope == "global" for lim in workflow.step_limits.values()):
                raise AtomrError(f"workflow {workflow.id!r} has a step Limit with scope='global', which counts "
                                 f"the executions of every worker of a shared store; {type(self.store).__name__} "
                                 "is opened by one process: use scope='worker', or an SqliteStore / PostgresStore")
            self._core.workflows[workflow.id] = workflow
        if self.execute:  # a client leaves timers, queues and schedules to the workers
            self._arm_sleepers(workflow)  # its runs that were sleeping when a process stopped
            self._core.admission.on_register(workflow)  # and its queued runs
            self._arm_schedules(workflow)  # its stored schedules start runs while this runtime is open
            self._retention.watch(workflow)  # its finished runs are deleted once retention_s is over
        if self._worker is not None:
            self._worker.poke()  # its runs that wait for a worker
        for child in child_workflows(workflow):
            # a Subgraph given a Workflow object, a Loop's Dag body: registered too
            known = self._core.workflows.get(child.id)
            if known is None:
                self.register(child)
            elif known is not child:
                raise WorkflowExists(child.id)
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
        if_exists: str = "error",
        priority: int = 0,
    ) -> RunHandle:
        """Start a run. With durability "sync" it returns once the start is durable.

        ``if_exists``: "error" raises RunExists when ``run_id`` is taken;
        "attach" returns a handle on that run instead, whatever its status (two
        concurrent starts of one run id make exactly one run); "continue" gives
        a done run another turn with ``input`` (RunNotContinuable otherwise) and
        starts a run that does not exist. ``priority``: among queued runs of a
        workflow with ``max_concurrent_runs``, higher starts first (FIFO within a
        priority). Raises WorkflowNotFound, UnknownChannelError (input key not a
        channel), MissingInput (a typed state's field without a default not
        given), CodecError, RunExists.
        """
        return self.start_many(workflow_id, [input], [run_id] if run_id is not None else None,
                               meta=meta, timeout=timeout, if_exists=if_exists, priority=priority)[0]

    def start_many(
        self,
        workflow_id: str,
        inputs: Iterable[Mapping[str, Any] | None],
        run_ids: Iterable[str] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        if_exists: str = "error",
        priority: int = 0,
    ) -> list[RunHandle]:
        """Start several runs at once: their starts share one commit, all or
        nothing (when one cannot be stored, none starts and the error names it).
        Every input is validated before any run starts; returns the handles in
        input order. ``priority``: as in :meth:`start`, for every run."""
        self._check_open()
        self._wait_s(timeout)  # a bad timeout is refused before anything is sent
        wf, pending = self._send_starts(workflow_id, inputs, run_ids, meta, if_exists, priority)
        return [self._accepted(wf.id, rid, inbox, timeout) for rid, inbox in pending]

    def _send_starts(self, workflow_id: str, inputs: Any, run_ids: Any, meta: Any,
                     if_exists: str = "error", priority: Any = 0) -> tuple[Workflow, list[tuple[str, _Inbox | None]]]:
        self._check_open()
        wf = self.workflow(workflow_id)
        meta = run_meta(wf, check_meta(meta))
        datas, ids, existing, found = prepare_starts(self, wf, inputs, run_ids, if_exists)
        check_priority(priority)

        def new_inbox(rid: str) -> _Inbox:
            inbox = self._inbox(wf.id, rid, attach=if_exists == "attach")
            inbox.own = True  # its handle streams from its own request (a turn: from the turn)
            return inbox
        return wf, send_starts(self._core, wf, datas, ids, existing, meta, priority, new_inbox,
                               turn=if_exists == "continue", found=found)

    def _inbox(self, workflow_id: str, run_id: str, attach: bool = False) -> _Inbox:
        inbox = _Inbox((workflow_id, run_id))
        inbox.attach = attach
        self._inboxes.add(inbox)
        return inbox

    def _wait_s(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else check_number(
            timeout, "timeout", lo=0, hi=1e9, error=AtomrError, hint="pass seconds to wait, e.g. timeout=30")

    def _accepted(self, workflow_id: str, run_id: str, inbox: _Inbox | None, timeout: float | None) -> RunHandle:
        if inbox is None:
            return RunHandle(self, workflow_id, run_id, None)
        t = self._wait_s(timeout)
        return self._handle(workflow_id, run_id, inbox, inbox.wait("accepted", t), t)

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
        self._wait_s(timeout)  # a bad timeout is refused before anything is sent
        wf, inbox = self._send_resume(workflow_id, run_id, command)
        return self._accepted(wf.id, run_id, inbox, timeout)

    def _send_resume(self, workflow_id: str, run_id: str, command: Command | None) -> tuple[Workflow, _Inbox]:
        self._check_open()
        wf = self.workflow(workflow_id)
        check_run_id(run_id)
        command = command if command is not None else Command()
        if not isinstance(command, Command):
            raise AtomrError(f"resume() takes a Command, got {type(command).__name__}")
        summary = self.store.summary(wf.id, run_id)
        live = self._core.supervisor.is_live(wf.id, run_id)
        if summary is None and not live:
            raise RunNotFound(wf.id, run_id)
        if live and (summary is None or summary.status == "running" or (
                summary.status != "paused" and self._core.supervisor.is_driving(wf.id, run_id))):
            # refused here, at once; a run the index shows paused is left to its actor, which
            # may be reporting that pause right now (it refuses a resume that raced another)
            raise RunNotPaused(wf.id, run_id, "running")
        inbox = self._inbox(wf.id, run_id)
        inbox.own = True  # its handle streams from the resume on
        self._core.supervisor.route(wf, run_id, Resume(command, inbox, inbox))
        return wf, inbox

    def live_runs(self) -> int:
        """How many runs hold an actor right now (none holds a thread)."""
        return len(self._core.supervisor.live())
