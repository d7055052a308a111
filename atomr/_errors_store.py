"""The store errors of :mod:`atomr.errors`: ``StoreError`` and its subclasses.

Import them from :mod:`atomr.errors`; they live here only to keep that module
short, and each says it belongs to ``atomr.errors`` (tracebacks, pickles, Ray).
"""

from __future__ import annotations

from atomr._errors_base import AtomrError
from atomr._text import human_bytes as _human

__all__ = [
    "CopyError", "CorruptRecord", "CorruptStore", "FormatVersionError", "StoreClosed", "StoreError",
    "StoreFull", "StoreLocked", "StoreNotEmpty", "StoreUnavailable", "StoreUrlError", "WorkerIdInUse",
    "OwnershipLost", "RunOwnedElsewhere", "StoreNotShared",
]


class StoreError(AtomrError):
    """The store cannot be opened, read or written."""


class StoreLocked(StoreError):
    def __init__(self, path: str, pid: int | None, same_process: bool = False, detail: str | None = None) -> None:
        self.path, self.pid = path, pid
        if detail is not None:
            msg = detail
        elif same_process:
            msg = (f"store {path!r} is already open in this process (process {pid}, by another "
                   "LmdbStore object); use that object, or close() it before opening the path again")
        else:
            holder = f"process {pid}" if pid else "another process"
            msg = (f"store {path!r} is locked by {holder}; only one process may open an LMDB store "
                   "for writing: stop that process or wait for it to close the store, open it "
                   "with readonly=True to read it, or open a different path; to run several "
                   "processes (workers) on one store, use an SqliteStore or a PostgresStore")
        super().__init__(msg)


class StoreFull(StoreError):
    def __init__(self, map_size: int, path: str = "", new_run: str | None = None, *,
                 limit: str = "map size", option: str = "map_size", more: str = " (or a larger max_map_size)") -> None:
        self.map_size = map_size
        self.new_run = new_run
        where = f" in {path!r}" if path else ""
        grow = f"open the store with {option}={map_size * 2}{more}"
        if new_run is None:
            tail = f"{grow} and call rt.recover() to carry the run on: nothing committed was lost"
        else:
            tail = f"run {new_run} was not started (nothing of it was written): {grow} and start it again"
        super().__init__(f"{limit} {_human(map_size)} reached{where}; {tail}")


class CorruptRecord(StoreError):
    def __init__(self, workflow_id: str, run_id: str, seq: int, detail: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.seq = seq
        what = f"record {seq}" if seq else "index entry"
        super().__init__(
            f"corrupt {what} of run {workflow_id}/{run_id}: {detail}; other runs are unaffected; "
            f"restore this run from a backup or delete it (atomr prune {workflow_id} {run_id} --delete)"
        )


class CorruptStore(StoreError):
    """The files of a store are damaged (its B-tree, not one run's records)."""

    def __init__(self, path: str, detail: str, *, restore: str = "made with `atomr backup`, or LMDB's "
                 "compacting copy env.copy(path, compact=True)") -> None:
        self.path = path
        super().__init__(
            f"store {path!r} is damaged: {detail}; it was not opened, to keep reading it from "
            f"crashing the process. Restore it from a backup ({restore}); `atomr verify` reports "
            "what is damaged"
        )


class FormatVersionError(StoreError):
    pass


class StoreUrlError(StoreError):
    """A store URL or a Postgres schema name atomr cannot use (never shows a password)."""


class StoreUnavailable(StoreError):
    """The store's database server cannot be reached (never shows a password)."""


class StoreClosed(StoreError):
    pass


class CopyError(StoreError):
    """A store copy failed (the source changed or is damaged, or the copy reads back different)."""


class StoreNotEmpty(CopyError):
    """A copy's destination already holds runs or schedules (it is left unchanged)."""


class WorkerIdInUse(StoreLocked):
    """A live worker on this store already has the worker id (one worker per id at a time)."""

    def __init__(self, worker_id: str, where: str) -> None:
        self.worker_id = worker_id
        super().__init__(where, None, detail=(
            f"worker id {worker_id!r} is in use by a live worker of {where}; give this worker another id "
            "(Runtime(worker_id=...), atomr worker --id), or leave worker_id=None for a fresh one"))


class OwnershipLost(StoreError):
    """A write for a run this worker no longer owns was refused (another worker
    took the run over: this one was fenced). Nothing of the write was stored."""

    def __init__(self, workflow_id: str, run_id: str, owner: str | None) -> None:
        self.workflow_id, self.run_id, self.owner = workflow_id, run_id, owner
        now = f"worker {owner!r} owns it now" if owner else "it was released meanwhile"
        super().__init__(
            f"run {workflow_id}/{run_id} was taken over by another worker ({now}); this worker's write was "
            "refused and nothing of it was stored: the run carries on there")


class RunOwnedElsewhere(StoreError):
    """The run executes in another worker: this process may not write it or hold its actor."""

    def __init__(self, workflow_id: str, run_id: str, owner: str) -> None:
        self.workflow_id, self.run_id, self.owner = workflow_id, run_id, owner
        super().__init__(
            f"run {workflow_id}/{run_id} is executing in worker {owner!r}; follow it with rt.handle() "
            "(result, events, streams work from any process) or cancel it with rt.cancel()")


class StoreNotShared(StoreError):
    """Workers (``atomr worker``, ``atomr serve --workers``) need a store several
    processes share, SQLite or Postgres; this one (LMDB, memory) is opened by one process."""


for _cls in (StoreError, StoreLocked, StoreFull, CorruptRecord, CorruptStore, FormatVersionError, StoreUrlError,
             StoreUnavailable, StoreClosed, CopyError, StoreNotEmpty, WorkerIdInUse, OwnershipLost,
             RunOwnedElsewhere, StoreNotShared):
    _cls.__module__ = "atomr.errors"
del _cls
