"""The checks and the plumbing behind :class:`~atomr.Runtime`'s public methods.

Threads: the caller's, except the feeder thread of :func:`recover_runs`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atomr._check import check_int
from atomr._hooks import logger
from atomr._maintain import check_run_id
from atomr._specs import find_spec
from atomr.codec import check_encodable
from atomr.errors import AtomrError, RunExists, RunNotContinuable
from atomr.graph import superstep as algo
from atomr.graph.state import check_channels, check_required
from atomr.handle import RunHandle, _Inbox
from atomr.messages import Recover, Rejected
from atomr.store import format as fmt
from atomr.types import Interrupt, StateView

if TYPE_CHECKING:
    from atomr.runtime import Runtime
    from atomr.workflow import Workflow

__all__ = ["check_meta", "view_of", "prepare_starts", "record_spec", "recover_runs", "run_meta"]

log = logger("atomr.runtime")


def check_meta(meta: Any) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        raise AtomrError(f"meta must be a mapping with str keys, got {type(meta).__name__} {meta!r}")
    for key in ("parent", "workflow_version", "atomr_trace", "atomr_queue"):
        if key in meta:
            raise AtomrError(f"meta key {key!r} is reserved (atomr records it); use another key")
    out = dict(meta)
    check_encodable(out, "the run meta")
    return out


def record_spec(wf: Workflow, caller: str | None) -> None:
    """At ``register()``: give ``wf`` the ``module:attr`` the CLI loads it by, when
    it has none (its module's, else the caller's module-level name bound to it)."""
    if wf.spec is None:
        wf.spec = find_spec(wf, wf.defined_in, caller)


def run_meta(wf: Workflow, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """A start's meta with what atomr records: the workflow's version, and its
    spec as ``module`` (unless given) so that ``atomr show`` / ``resume`` load it."""
    if wf.version is not None:
        meta = {**(meta or {}), "workflow_version": wf.version}
    if wf.spec is not None and not (meta or {}).get("module"):
        meta = {**(meta or {}), "module": wf.spec}
    return meta


def view_of(wf: Workflow, p: algo.RunProgress) -> StateView:
    return StateView(
        p.workflow_id, p.run_id, p.values, p.super_step, p.status, p.next_steps(wf.plan),
        [Interrupt(i.id, i.step_id, i.payload) for i in p.interrupts], p.pause_reason,
        p.failure, dict(p.meta), min(algo.pending_sleeps(p).values(), default=None), p.cancel_reason,
        p.traceback,
    )


#: what a start does with a run id that exists: refuse it (RunExists), watch that
#: run, or give that run (done) another turn (see :class:`~atomr.events.TurnStarted`)
IF_EXISTS = ("error", "attach", "continue")


def prepare_starts(rt: Runtime, wf: Workflow, inputs: Any, run_ids: Any,
                   if_exists: str = "error") -> tuple[list[dict[str, Any]], list[str], set[str], set[str]]:
    """Check every input and run id of a start before any run starts. Returns
    the inputs, the run ids, and (``if_exists="attach"``) the ids that exist.
    With "continue" the run actor decides: start, another turn, or RunNotContinuable."""
    if if_exists not in IF_EXISTS:
        raise AtomrError(f"if_exists must be 'error', 'attach' or 'continue', got {if_exists!r}")
    if isinstance(inputs, Mapping) or not isinstance(inputs, Iterable):
        raise AtomrError(f"inputs must be a list of input mappings, got {type(inputs).__name__}")
    datas = []
    for input in inputs:
        if input is not None and not isinstance(input, Mapping):
            raise AtomrError(f"input must be a mapping of channel -> value, got {type(input).__name__}")
        data = dict(input or {})
        check_channels(wf.schema, data.items())
        check_encodable(data, "the run input")
        datas.append(data)
    if run_ids is not None and (isinstance(run_ids, (str, Mapping)) or not isinstance(run_ids, Iterable)):
        raise AtomrError(f"run_ids must be a list of str, got {type(run_ids).__name__}")
    ids = list(run_ids) if run_ids is not None else [uuid.uuid4().hex[:16] for _ in datas]
    if len(ids) != len(datas):
        raise AtomrError(f"{len(datas)} inputs but {len(ids)} run ids; pass one run id per input")
    for rid in ids:
        check_run_id(rid)
    if len(set(ids)) != len(ids):
        raise AtomrError("duplicate run ids in one start_many() call; make them unique")
    existing: set[str] = set()
    turns: set[str] = set()  # done runs a continue gives another turn: their state holds what they need
    for rid in ids:
        fmt.check_ids(wf.id, rid)
        if if_exists == "continue":  # refused here at once unless done (the run's actor decides for sure)
            s = rt.store.summary(wf.id, rid)
            status = "running" if rt._core.supervisor.is_driving(wf.id, rid) else s.status if s else None
            if status not in (None, "done"):  # None: no such run, it starts
                raise RunNotContinuable(wf.id, rid, status)
            if status == "done":
                turns.add(rid)
            continue
        if rt.store.summary(wf.id, rid) is not None or rt._core.supervisor.is_live(wf.id, rid):
            if if_exists == "error":
                raise RunExists(wf.id, rid)
            existing.add(rid)
    for data, rid in zip(datas, ids):
        if rid not in existing and rid not in turns:  # a fresh run: its typed state's required fields
            check_required(wf.schema, data)
    return datas, ids, existing, turns


def _recoverable(rt: Runtime, wanted: set[str] | None) -> Iterable[Any]:
    """The runs recover() carries on: every running one; on a shared store those
    this worker executes or takes now (dead owners, expired leases: claimed here
    first), never one a live worker executes."""
    store = rt.store
    if rt._worker is None:
        yield from reversed(store.runs(status="running"))  # oldest first
        return
    store.reap()  # type: ignore[attr-defined]
    wfs = [w for w in rt._core.workflows if wanted is None or w in wanted]
    for own in (False, True):  # orphans first: this worker's own runs would crowd them out
        while True:
            found = store.claimable(wfs, 500, own=own)  # type: ignore[attr-defined]
            took = sum(1 for wf_id, run_id, epoch in found if (wf_id, run_id) not in store._owned  # type: ignore[attr-defined]
                       and store.claim(wf_id, run_id, epoch))  # type: ignore[attr-defined]
            if len(found) < 500 or not took:
                break
    mine = dict(store._owned)  # type: ignore[attr-defined]
    for s in reversed(store.runs(status="running")):  # oldest first
        if (s.workflow_id, s.run_id) in mine:
            yield s


def recover_runs(rt: Runtime, workflow_ids: Iterable[str] | None, max_active: int | None) -> list[RunHandle]:
    """See :meth:`Runtime.recover`."""
    if max_active is not None:
        check_int(max_active, "max_active", lo=1, error=AtomrError, hint="or pass None for all at once")
    wanted = set(workflow_ids) if workflow_ids is not None else None
    todo: list[tuple[Workflow, str, _Inbox]] = []
    for s in _recoverable(rt, wanted):
        if wanted is not None and s.workflow_id not in wanted:
            continue
        wf = rt._core.workflows.get(s.workflow_id)
        if wf is None:
            log.warning("recover: workflow %r is not registered; run %s left as is",
                        s.workflow_id, s.run_id)
            continue
        if "parent" in s.meta:
            continue  # a Subgraph child: its parent run drives it
        todo.append((wf, s.run_id, rt._inbox(wf.id, s.run_id)))
    handles = [RunHandle(rt, wf.id, rid, inbox) for wf, rid, inbox in todo]
    if max_active is None or len(todo) <= max_active:
        for wf, rid, inbox in todo:
            rt._core.supervisor.route(wf, rid, Recover(inbox, inbox))
        return handles
    slots = threading.Semaphore(max_active)

    def feed() -> None:
        for wf, rid, inbox in todo:
            while not slots.acquire(timeout=0.2):
                if rt._closed:
                    return
            if rt._closed:
                return
            inbox.on_outcome = slots.release
            try:
                rt._core.supervisor.route(wf, rid, Recover(inbox, inbox))
            except Exception as exc:  # noqa: BLE001 - reported on the handle
                inbox.tell(Rejected(wf.id, rid, exc))

    threading.Thread(target=feed, name="atomr-recover", daemon=True).start()
    return handles
