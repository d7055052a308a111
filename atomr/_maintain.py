"""Fork, prune, delete, purge: the store maintenance behind :class:`~atomr.Runtime`.

Threads: the checks run in the caller's thread; every write runs in the
store's writer thread (the checkpointer; the caller's for a MemoryStore).
Maintenance never touches a live run: in the writer thread, the runs to be
changed are *held* in the supervisor first (a run that has an actor, or is
getting one, is skipped or refused), and a request for a held run waits
until the change is done — whatever the interleaving with resume() or
recover().
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atomr import events as ev
from atomr._check import check_int, check_number
from atomr._load import fork_point, iter_checkpoints, load_progress_at
from atomr._run.journal import batch_of
from atomr.actors.admission import QUEUE_KEY
from atomr.errors import AtomrError, CheckpointNotFound, RunExists, RunNotFound
from atomr.graph import superstep as algo
from atomr.graph.state import apply_writes
from atomr.messages import Maintain
from atomr.store import format as fmt
from atomr.store.base import Store
from atomr.types import Checkpoint

if TYPE_CHECKING:
    from atomr.runtime import Runtime
    from atomr.workflow import Workflow

__all__ = ["fork", "checkpoint_by_seq", "prune", "delete", "purge", "purge_batch", "checkpoint_at", "maintain",
           "check_run_id"]

RUN_STATUSES = ("running", "paused", "done", "failed", "cancelled", "sleeping", "queued")


def check_run_id(run_id: Any, what: str = "run_id") -> str:
    if not isinstance(run_id, str) or not run_id:
        raise AtomrError(f"{what} must be a non-empty str, got {type(run_id).__name__} {run_id!r}")
    try:
        n = len(run_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise AtomrError(f"{what} {run_id!r} cannot be encoded as UTF-8 (lone surrogate); "
                         "use a plain text id") from None
    if n > fmt.MAX_KEY_BYTES - 12:
        raise AtomrError(f"{what} is {n} bytes long; the store takes ids of at most "
                         f"{fmt.MAX_KEY_BYTES - 12} bytes (with the workflow id): use a shorter id")
    return run_id


def maintain(rt: Runtime, fn: Any) -> Any:
    """Run ``fn(store)`` in the writer thread (or here for a MemoryStore)."""
    cp = rt._core.checkpointer
    if cp is None:
        return fn(rt.store)
    return cp.ask(Maintain(fn), timeout=rt.timeout)


def _held(rt: Runtime, keys: list[tuple[str, str]], fn: Any) -> Any:
    """``fn(held_keys)`` with ``keys`` held (the live ones left out), in the writer thread."""
    sup = rt._core.supervisor

    def work(store: Store) -> Any:
        held = sup.hold(keys)
        try:
            return fn(store, held)
        finally:
            sup.let_go(held)

    return maintain(rt, work)


def checkpoint_at(rt: Runtime, wf: Workflow, run_id: str, super_step: Any) -> tuple[Checkpoint, algo.RunProgress]:
    super_step = check_int(super_step, "super_step", lo=0, error=AtomrError,
                           hint="pass a super-step number from rt.history()")
    if rt.store.summary(wf.id, run_id) is None:
        raise RunNotFound(wf.id, run_id)
    found = None
    seen: set[int] = set()
    for c, p in iter_checkpoints(rt.store, wf.plan, wf.id, run_id):
        seen.add(c.super_step)
        if c.super_step == super_step:
            found = (c, p)
    if found is None:
        raise CheckpointNotFound(wf.id, run_id, super_step, sorted(seen))
    return found


def fork_at_seq(rt: Runtime, wf: Workflow, run_id: str, seq: Any) -> tuple[Checkpoint, algo.RunProgress, list[Any]]:
    """The checkpoint of event ``seq``, the run as its layer began, and the layer's results up to it."""
    seq = check_int(seq, "seq", lo=1, error=AtomrError, hint="pass the seq of a checkpoint from rt.history()")
    if rt.store.summary(wf.id, run_id) is None:
        raise RunNotFound(wf.id, run_id)
    found = fork_point(rt.store, wf.plan, wf.id, run_id, seq)
    if found is None:
        seqs = [c.seq for c, _ in iter_checkpoints(rt.store, wf.plan, wf.id, run_id)]
        raise CheckpointNotFound(wf.id, run_id, -1, seqs, seq=seq)
    return found


def checkpoint_by_seq(points: list[Checkpoint], workflow_id: str, run_id: str, seq: Any) -> Checkpoint:
    """The checkpoint of ``points`` (a run's history) with ``seq``; CheckpointNotFound otherwise."""
    seq = check_int(seq, "seq", lo=1, error=AtomrError, hint="pass the seq of a checkpoint from the run's history")
    for c in points:
        if c.seq == seq:
            return c
    raise CheckpointNotFound(workflow_id, run_id, -1, [c.seq for c in points], seq=seq)


def fork(rt: Runtime, wf: Workflow, run_id: str, at: Any, edits: Mapping[str, Any] | None,
         new_run_id: str | None) -> str:
    """``at``: a super-step (its last checkpoint; the fork runs that layer from its
    start) or a :class:`~atomr.Checkpoint` (exactly that one, by its seq: results of
    its layer journaled before it are kept, e.g. a Loop's earlier iterations)."""
    if edits is not None and not isinstance(edits, Mapping):
        raise AtomrError(f"edits must be a mapping of channel -> value, got {type(edits).__name__}")
    if new_run_id is not None:
        check_run_id(new_run_id, "new_run_id")
        fmt.check_ids(wf.id, new_run_id)
    tail: list[Any] = []
    if isinstance(at, Checkpoint):
        cp, p, tail = fork_at_seq(rt, wf, run_id, at.seq)
        if (cp.label, cp.super_step) != (at.label, at.super_step):  # e.g. a checkpoint of another run
            seqs = [c.seq for c, _ in iter_checkpoints(rt.store, wf.plan, wf.id, run_id)]
            raise CheckpointNotFound(wf.id, run_id, at.super_step, seqs, seq=at.seq)
        values = p.values
    else:
        cp, p = checkpoint_at(rt, wf, run_id, at)
        values = cp.values
    super_step = cp.super_step
    new_id = new_run_id or f"{run_id}-fork-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    meta = {**dict(p.meta), "forked_from": f"{run_id}@{super_step}"}
    meta.pop(QUEUE_KEY, None)  # a fork waits in line (max_concurrent_runs) by its own resume, not its source's start
    if wf.spec is not None and not meta.get("module"):
        meta["module"] = wf.spec  # `atomr resume` of the fork loads the workflow by it
    if isinstance(at, Checkpoint):
        meta["forked_from_seq"] = cp.seq
    events: list[Any] = [ev.Forked(wf.id, run_id, super_step, dict(values), p.layer,
                                   {k: list(v) for k, v in p.branches.items()}, meta, now), *tail]
    if edits:
        pairs = list(edits.items())
        apply_writes(wf.schema, dict(cp.values), pairs)  # validate first
        events.append(ev.StateUpdated(pairs, "fork", now))
    events.append(ev.Paused("fork", [], super_step, now))
    new = algo.RunProgress(wf.id, new_id)
    records = []
    for i, e in enumerate(events, 1):
        records.append(fmt.encode_event(e))
        algo.apply_event(wf.plan, new, e, i)
    batch = batch_of(new, 1, records, snapshot=True, meta=meta)

    def write(store: Store, held: list[tuple[str, str]]) -> None:
        if not held or store.summary(wf.id, new_id) is not None:
            raise RunExists(wf.id, new_id)
        err = store.write([batch])[0]
        if err is not None:
            raise err

    _held(rt, [(wf.id, new_id)], write)
    return new_id


def prune(rt: Runtime, wf: Workflow, run_id: str, keep_last: Any) -> int:
    keep_last = check_int(keep_last, "keep_last", lo=1, error=AtomrError,
                          hint="use rt.delete() to remove a run entirely")
    if rt._core.supervisor.is_live(wf.id, run_id):
        raise AtomrError(f"run {wf.id}/{run_id} is executing; prune it once it pauses or ends")
    summary = rt.store.summary(wf.id, run_id)
    points = [p for _, p in iter_checkpoints(rt.store, wf.plan, wf.id, run_id)]
    if summary is None or not points:
        raise RunNotFound(wf.id, run_id)
    if len(points) <= keep_last:
        return 0
    cut = points[-keep_last]
    base = load_progress_at(rt.store, wf.plan, wf.id, run_id, cut.seq)
    snap = fmt.encode_obj(algo.to_snapshot(base))
    last_seq = summary.last_seq

    def work(store: Store, held: list[tuple[str, str]]) -> int:
        s = store.summary(wf.id, run_id)
        if not held or s is None or s.last_seq != last_seq:
            raise AtomrError(f"run {wf.id}/{run_id} moved on while it was being pruned; "
                             "prune it once it pauses or ends")
        return int(store.truncate(wf.id, run_id, cut.seq, snap))

    return int(_held(rt, [(wf.id, run_id)], work))


def delete(rt: Runtime, workflow_id: str, run_id: str) -> bool:
    check_run_id(run_id)

    def work(store: Store, held: list[tuple[str, str]]) -> bool:
        if not held:
            raise AtomrError(f"run {workflow_id}/{run_id} is executing; delete it once it pauses or ends")
        return bool(store.delete_run(workflow_id, run_id))

    return bool(_held(rt, [(workflow_id, run_id)], work))


def purge(rt: Runtime, older_than_s: Any, statuses: Iterable[str]) -> int:
    older = check_number(older_than_s, "older_than_s", lo=0, error=AtomrError,
                         hint="pass how many seconds a run must have been idle, e.g. 86400")
    if isinstance(statuses, str) or not isinstance(statuses, Iterable):
        raise AtomrError(f"statuses must be a collection of statuses, got {statuses!r}; "
                         f"e.g. ('done', 'failed')")
    wanted = set(statuses)
    bad = wanted - set(RUN_STATUSES) or wanted & {"running"}
    if bad:
        raise AtomrError(f"cannot purge runs with status {sorted(bad)}; choose from 'paused', 'done', 'failed', 'cancelled' "
                         "(a running run is never purged)")
    limit = int((time.time() - older) * 1000)
    victims = [(s.workflow_id, s.run_id, limit) for s in rt.store.runs()
               if s.status in wanted and s.updated_ms < limit]
    return purge_batch(rt, victims, wanted)


def purge_batch(rt: Runtime, victims: list[tuple[str, str, int]], statuses: Iterable[str]) -> int:
    """Delete each ``(workflow, run, limit_ms)`` still in one of ``statuses`` and not
    updated since ``limit_ms``, checked again in the writer thread (never a live run)."""
    wanted = set(statuses)
    limits = {(wid, rid): limit for wid, rid, limit in victims}

    shared = getattr(rt.store, "shared", False)

    def work(store: Store, held: list[tuple[str, str]]) -> int:
        n = 0
        for wid, rid in held:
            s = store.summary(wid, rid)  # as of now, not as of the listing
            if s is None or s.status not in wanted or s.updated_ms >= limits[(wid, rid)]:
                continue
            if shared:  # checked again in the delete's transaction: another worker may write it
                done = store.delete_run(wid, rid, only_if=(sorted(wanted), limits[(wid, rid)]))  # type: ignore[call-arg]
            else:
                done = store.delete_run(wid, rid)
            n += bool(done)
        return n

    return int(_held(rt, list(limits), work))
