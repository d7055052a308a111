"""The one exception tree of atomr.

Every misuse raises a subclass of :class:`AtomrError` whose message says what
happened and what to do about it::

    AtomrError
    ├── GraphError            the DAG or a workflow definition is invalid
    │   └── CycleError, UnknownStepError, DuplicateStepError, EntryError,
    │       UnreachableStepError, NotCallableError, BranchError, JoinError
    ├── StateError            a write or a reducer went wrong
    │   └── UnknownChannelError, ReducerError (StateValidationError), StepResultError, SchemaError,
    │       MissingInput
    ├── CodecError            a value cannot be encoded / a record cannot be decoded
    │   └── UnregisteredType, StoredTypeMismatch   a sound record this process's classes cannot read
    ├── StoreError            the store cannot be opened, read or written
    │   └── StoreLocked (WorkerIdInUse), StoreFull, CorruptRecord, CorruptStore, FormatVersionError,
    │       StoreClosed, StoreUrlError, StoreUnavailable, CopyError (StoreNotEmpty),
    │       OwnershipLost, RunOwnedElsewhere   (workers: a run executes in one worker at a time),
    │       StoreNotShared   (workers need SQLite or Postgres)
    ├── WorkflowSpecError     a MODULE:WORKFLOW spec cannot be loaded
    ├── ScheduleError         a schedule is invalid (ScheduleNotFound, ScheduleExists)
    └── RunError              a run-level request was refused or a run failed
        ├── WorkflowNotFound, WorkflowExists
        ├── RunNotFound, RunExists, RunNotPaused, RunNotContinuable, StartRefused (start_many: none started)
        ├── InterruptError (UnknownInterruptError, AmbiguousResumeError, InvalidResumeValue)
        ├── CheckpointNotFound
        ├── StepTimeout, LoopLimitError, Rejected, StepCrashed, VersionMismatch
        ├── ResultTimeout, StreamOverflow, RunOver
        └── RuntimeClosed

Errors raised *inside* a run (by a step, a reducer, a timeout) do not reach the
caller as exceptions: they end the run with a :class:`~atomr.Failed` outcome
whose ``error_type`` is the exception's class name. :meth:`atomr.Failed.raise_error`
turns it back into the exception when it is one of ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from atomr._errors_base import AtomrError, RunError, StartRefused  # RunError's tree starts there
from atomr._errors_state import (  # apart to keep this module short
    MissingInput,
    ReducerError,
    SchemaError,
    StateError,
    StateValidationError,
    StepResultError,
    UnknownChannelError,
)
from atomr._errors_store import (  # defined apart to keep this module short; they belong here
    CopyError,
    CorruptRecord,
    CorruptStore,
    FormatVersionError,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreNotEmpty,
    StoreUnavailable,
    StoreUrlError,
    WorkerIdInUse,
    OwnershipLost,
    RunOwnedElsewhere,
    StoreNotShared,
)
from atomr._text import names as _names

__all__ = [
    "AtomrError", "GraphError", "CycleError", "UnknownStepError", "DuplicateStepError",
    "EntryError", "UnreachableStepError", "NotCallableError", "BranchError", "StateError",
    "UnknownChannelError", "ReducerError", "StepResultError", "CodecError", "StoreError",
    "StoreLocked", "StoreFull", "CorruptRecord", "CorruptStore", "FormatVersionError",
    "StoreClosed", "RunError", "WorkflowNotFound", "WorkflowExists", "RunNotFound",
    "RunExists", "RunNotPaused", "InterruptError", "UnknownInterruptError",
    "AmbiguousResumeError", "InvalidResumeValue", "CheckpointNotFound", "StepTimeout",
    "LoopLimitError", "Rejected", "StepCrashed", "ResultTimeout", "RuntimeClosed",
    "error_class", "JoinError", "SchemaError", "StreamOverflow", "WorkflowSpecError", "RunOver",
    "VersionMismatch", "ScheduleError", "ScheduleNotFound", "ScheduleExists", "StateValidationError", "UnregisteredType", "StoreUrlError",
    "StoreUnavailable", "CopyError", "StoreNotEmpty", "StoredTypeMismatch", "WorkerIdInUse", "OwnershipLost",
    "RunOwnedElsewhere", "StoreNotShared", "MissingInput", "RunNotContinuable", "StartRefused",
]


class GraphError(AtomrError):
    """The DAG or the workflow around it is not valid."""


class CycleError(GraphError):
    """The graph has a cycle; ``cycle`` lists its steps, first step repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(
            "cycle: " + " -> ".join(self.cycle) + "; a workflow must be acyclic: "
            "remove one of these edges and repeat with a Loop step instead (its body may be a Dag of "
            "the repeated steps, e.g. Loop(model -> tools, while_=...))"
        )


class UnknownStepError(GraphError):
    """A name refers to a step the DAG does not have."""

    def __init__(self, step: str, known: Iterable[str], where: str = "") -> None:
        self.step = step
        self.known = sorted(known)
        ctx = f" ({where})" if where else ""
        super().__init__(
            f"unknown step {step!r}{ctx}; known steps: {_names(self.known)}; "
            "add the step with .step() or fix the name"
        )


class DuplicateStepError(GraphError):
    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(
            f"duplicate step id {step!r}; every step needs a unique id: rename one of them"
        )


class EntryError(GraphError):
    def __init__(self, entry: str, known: Iterable[str]) -> None:
        self.entry = entry
        super().__init__(
            f"entry {entry!r} is not a step of the DAG (steps: {_names(known)}); "
            f"add it with .step({entry!r}, fn) or pass an existing step to Dag.builder()"
        )


class UnreachableStepError(GraphError):
    def __init__(self, steps: Iterable[str]) -> None:
        self.steps = sorted(steps)
        super().__init__(
            f"steps unreachable from any root: {_names(self.steps)}; "
            "connect them to a step that runs, or remove them"
        )


class NotCallableError(GraphError):
    def __init__(self, step: str, value: object) -> None:
        self.step = step
        super().__init__(
            f"step {step!r} is not callable (got {type(value).__name__}); "
            "pass a function fn(state, ctx) or a step kind such as Loop/Map/Human"
        )


class BranchError(GraphError):
    """A branch is misdeclared, or its router picked a label it does not know."""






class CodecError(AtomrError):
    """A value cannot be encoded, or bytes cannot be decoded safely."""


class UnregisteredType(CodecError):
    """A stored value names a type not registered in this process (atomr.codec.register)."""


class StoredTypeMismatch(CodecError):
    """A stored value's shape no longer fits the class registered under its name.

    The record is sound: the class changed since the value was stored (a
    required field added, a field's type narrowed, an enum member removed).
    ``type_name``: the stored name; ``class_name``: the class registered under
    it (``module.QualName``); ``where``: the record (run and seq) when known."""

    def __init__(self, type_name: str, cls: type | str, detail: str, where: str = "") -> None:
        name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        self.type_name, self.class_name, self.detail, self.where = type_name, name, detail, where
        short = name.rsplit(".", 1)[-1]
        at = f" in {where}" if where else ""
        super().__init__(
            f"the stored {type_name!r} value{at} does not fit the registered class {name} any more ({detail}): "
            "the class changed after the value was stored. The record is sound, not damaged: keep it. Read "
            f"it by registering the class with a decoder for the stored shape, atomr.codec.register({short}, "
            "encode=..., decode=...) (a new dataclass or pydantic field only needs a default); or migrate: "
            f"keep the old class registered as {type_name!r} and register the new one under another name=")

    def located(self, where: str) -> StoredTypeMismatch:
        """The same error, naming the record it was read from."""
        return StoredTypeMismatch(self.type_name, self.class_name, self.detail, where)

    def __reduce__(self) -> tuple[object, ...]:
        return (StoredTypeMismatch, (self.type_name, self.class_name, self.detail, self.where))


class WorkflowNotFound(RunError):
    def __init__(self, workflow_id: str, known: Iterable[str]) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"no workflow {workflow_id!r} is registered (registered: {_names(known)}); "
            "call rt.register(workflow) first"
        )


class WorkflowExists(RunError):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"workflow {workflow_id!r} is already registered; give the new one another id "
            "or register it in another Runtime"
        )


class RunNotFound(RunError):
    def __init__(self, workflow_id: str, run_id: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        super().__init__(
            f"no run {workflow_id}/{run_id} in the store; check the ids with rt.runs() "
            "or `atomr runs`"
        )


class RunExists(RunError):
    def __init__(self, workflow_id: str, run_id: str) -> None:
        super().__init__(
            f"run {workflow_id}/{run_id} already exists; pick another run_id, or resume it "
            "with rt.resume()"
        )


class RunNotPaused(RunError):
    def __init__(self, workflow_id: str, run_id: str, status: str) -> None:
        self.status = status
        hint = {
            "done": "it has finished: give it another turn (rt.start(..., run_id=..., if_exists=\"continue\")) "
                    "or fork it (rt.fork) to run again from a checkpoint",
            "cancelled": "it was cancelled: fork it (rt.fork) to run again from a checkpoint",
            "queued": "it waits for a slot (max_concurrent_runs) and starts by itself",
            "running": "it is still running: wait for its outcome (handle.result()); if the "
                       "process that ran it died, carry it on with rt.recover()",
        }.get(status, "only paused or failed runs can be resumed")
        super().__init__(f"cannot resume run {workflow_id}/{run_id}: it is {status}; {hint}")


class RunNotContinuable(RunError):
    """``start(..., if_exists="continue")`` found the run, but not done: only a done run takes another turn."""

    def __init__(self, workflow_id: str, run_id: str, status: str) -> None:
        self.status = status
        hint = {
            "paused": "resume it (rt.resume) to finish this turn first",
            "failed": "resume it (rt.resume) to retry the failed step, or fork it (rt.fork) from a checkpoint",
            "cancelled": "it is over: fork it (rt.fork) from a checkpoint to run again",
            "sleeping": "it sleeps: wake it (rt.wake) or wait for its outcome (handle.result()), then continue it",
            "queued": "it waits for a slot (max_concurrent_runs): wait for its outcome, then continue it",
            "deleted": "it was deleted (rt.delete, or retention_s) after this call found it done: start it "
                       "again without if_exists='continue' to begin a new run under its id",
        }.get(status, "it is still running: wait for its outcome (handle.result()), then continue it")
        super().__init__(f"cannot continue run {workflow_id}/{run_id}: it is {status}, only a done run takes "
                         f"another turn; {hint}")


class InterruptError(RunError):
    """A resume did not match the run's pending interrupts."""


class UnknownInterruptError(InterruptError):
    def __init__(self, ids: Iterable[str], pending: Iterable[str]) -> None:
        self.ids = sorted(ids)
        self.pending = sorted(pending)
        super().__init__(
            f"unknown interrupt id(s) {_names(self.ids)}; pending interrupts: "
            f"{_names(self.pending)}; answer one of those (the run stays paused)"
        )


class AmbiguousResumeError(InterruptError):
    def __init__(self, pending: Iterable[str]) -> None:
        self.pending = sorted(pending)
        super().__init__(
            f"{len(self.pending)} interrupts are pending ({_names(self.pending)}); a bare "
            "Command(resume=value) cannot tell which one it answers: pass "
            "Command(resume={interrupt_id: value, ...}) (the run stays paused)"
        )


class InvalidResumeValue(InterruptError):
    pass


class CheckpointNotFound(RunError):
    def __init__(self, workflow_id: str, run_id: str, super_step: int, available: list[int],
                 seq: int | None = None) -> None:
        self.super_step = super_step
        rng = f"{available[0]}..{available[-1]}" if available else "none"
        at = f"super-step {super_step}" if seq is None else f"seq {seq}"
        super().__init__(
            f"run {workflow_id}/{run_id} has no checkpoint at {at} "
            f"(available: {rng}); pick one listed by rt.history()"
        )


class StepTimeout(RunError):
    pass


class LoopLimitError(RunError):
    pass


class Rejected(RunError):
    pass


class VersionMismatch(RunError):
    def __init__(self, workflow_id: str, run_id: str, run_version: str | None, ours: str | None) -> None:
        self.run_version, self.version = run_version, ours
        super().__init__(
            f"run {workflow_id}/{run_id} was started by version {run_version!r} of workflow {workflow_id!r}, "
            f"this runtime has version {ours!r}: deploy the old version beside the new one (another "
            f"Workflow object), or declare compatible_with={{{run_version!r}}} once atomr.testing.replay "
            "shows the new code replays the run")


class StepCrashed(RunError):
    """A step raised a BaseException (KeyboardInterrupt, SystemExit, ...)."""


class ResultTimeout(RunError, TimeoutError):
    pass


class RuntimeClosed(RunError):
    pass


class RunOver(RunError):
    """The run has ended (done or cancelled): nothing to cancel or wake; fork it."""


class StreamOverflow(RunError):
    """A stream's consumer fell too far behind and was cut off; reopen it from its last cursor."""


class ScheduleError(AtomrError):
    """A schedule definition is invalid, or schedules cannot be used here."""


class ScheduleNotFound(ScheduleError):
    def __init__(self, schedule_id: str, known: list[str]) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule {schedule_id!r} in the store (schedules: {_names(known[:20])}); "
                         "list them with rt.schedules() or `atomr schedule ls`")


class ScheduleExists(ScheduleError):
    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"schedule {schedule_id!r} exists; delete it first (DELETE /api/schedules/"
                         f"{schedule_id}, rt.unschedule) or replace it with rt.schedule()")


class WorkflowSpecError(AtomrError):
    """A ``MODULE:WORKFLOW`` spec cannot be loaded (bad form, missing module or name)."""


def error_class(name: str) -> type[AtomrError] | None:
    """The atomr exception class called ``name``, or None."""
    obj = globals().get(name)
    if isinstance(obj, type) and issubclass(obj, AtomrError):
        return obj
    return None


class JoinError(GraphError):
    """A join policy is not one of "all" / "any"."""
