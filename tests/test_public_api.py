"""Pins the public API: code outside atomr imports these names.

Each public module's ``__all__`` is pinned exactly: adding, removing or
renaming a public name is a deliberate change of this file too.
"""

import importlib
from importlib import metadata
from pathlib import Path

import pytest

import atomr
import atomr.errors

PUBLIC_ALL = {
    "atomr": [
        "Accepted", "AppendList", "AppendMessages", "AtomrError", "Branch", "CODEC_VERSION",
        "Cancelled", "Checkpoint", "Command", "Dag", "Done", "Failed", "Histogram", "Human", "Interrupt",
        "LastWriteWins", "Limit", "LmdbStore", "Loop", "Map", "MaxByTimestamp", "MemoryStore",
        "MergeMap", "Paused", "PostgresStore", "RayExecutor", "Rejected", "Resume", "RetryPolicy", "Run",
        "RunHandle", "RunState", "RunSummary", "Runtime", "RuntimeStats", "Schedule", "ShardUnavailable",
        "ShardedRunHandle", "ShardedRuntime", "SqliteStore", "StateSchema", "StateView", "StepContext",
        "StepEvent", "StepKind", "Store", "StreamItem", "Subgraph", "Workflow", "__version__",
        "dispatch_fan_out", "errors", "open_store",
    ],
    "atomr.cli": [
        "CliError", "DEFAULT_STORE", "load_workflow", "main",
    ],
    "atomr.codec": [
        "CODEC_VERSION", "MAX_DECODE_DEPTH", "MAX_DEPTH", "check_depth", "check_encodable",
        "decode", "depth_exceeds", "encode", "encode_error", "encode_writes", "packb", "register",
        "registered", "unpackb", "unregister",
    ],
    "atomr.demo": [
        "APPROVAL", "APPROVAL_LIMIT_CENTS", "SAMPLE_ORDER", "SPEC", "TAX_PERCENT", "workflow",
    ],
    "atomr.errors": [
        "AmbiguousResumeError", "AtomrError", "BranchError", "CheckpointNotFound", "CodecError",
        "CopyError", "CorruptRecord", "CorruptStore", "CycleError", "DuplicateStepError", "EntryError",
        "FormatVersionError", "GraphError", "InterruptError", "InvalidResumeValue", "JoinError",
        "LoopLimitError", "MissingInput", "NotCallableError", "OwnershipLost", "ReducerError", "Rejected", "ResultTimeout",
        "RunError", "RunExists", "RunNotContinuable", "RunNotFound", "RunNotPaused", "RunOver", "RunOwnedElsewhere",
        "RuntimeClosed",
        "ScheduleError", "ScheduleExists", "ScheduleNotFound", "SchemaError", "StartRefused", "StateError", "StateValidationError",
        "StepCrashed",
        "StepResultError", "StepTimeout", "StoreClosed", "StoreError", "StoreFull",
        "StoreLocked", "StoreNotEmpty", "StoreNotShared", "StoreUnavailable", "StoreUrlError", "StoredTypeMismatch", "StreamOverflow",
        "UnknownChannelError", "UnknownInterruptError",
        "UnknownStepError", "UnreachableStepError", "UnregisteredType", "VersionMismatch",
        "WorkerIdInUse", "WorkflowExists", "WorkflowNotFound", "WorkflowSpecError", "error_class",
    ],
    "atomr.events": [
        "BranchTaken", "Event", "Forked", "HumanApproved", "Interrupted", "ItemCompleted",
        "LoopIterated", "Paused", "Resumed", "RunCancelled", "RunCompleted", "RunFailed",
        "RunStarted", "StateUpdated", "StepCancelled", "StepCompleted", "StepFailed",
        "StepStarted", "SuperStepCommitted", "TurnStarted",
    ],
    "atomr.graph": [
        "AppendList", "AppendMessages", "BranchSpec", "Channel", "Dag", "DagBuilder",
        "JOIN_POLICIES", "LastWriteWins", "MaxByTimestamp", "MergeMap", "Reducer", "Router",
        "RunState", "SchemaBuilder", "StateSchema", "StepKind", "Write", "apply_writes",
        "check_channels", "find_cycle", "fold_superstep", "normalize_writes", "unreachable_steps",
    ],
    "atomr.kinds": [
        "Branch", "Human", "Loop", "Map", "Subgraph", "dispatch_fan_out",
    ],
    "atomr.messages": [
        "Accepted", "Admit", "Append", "AppendGroup", "Cancel", "Committed", "Custom", "Execute", "Flush",
        "Maintain", "Recover", "Rejected", "Resume", "RetryStep", "Run", "StepDone",
        "StepTimedOut", "StreamEnd", "StreamLost", "Subscribe", "Subscribed", "Tap",
    ],
    "atomr.ray": [
        "RayExecutor", "ray_available",
    ],
    "atomr.runtime": [
        "DURABILITY_MODES", "RunHandle", "Runtime",
    ],
    "atomr.sharding": [
        "ShardUnavailable", "ShardedRunHandle", "ShardedRuntime", "load_workflow", "shard_of",
    ],
    "atomr.store": [
        "AppendBatch", "LmdbStore", "MemoryStore", "PostgresStore", "RunSummary", "SqliteStore", "Store",
        "open_store",
    ],
    "atomr.store.copy": [
        "CopyReport", "RunCopy", "copy_store", "run_digest",
    ],
    "atomr.store.sql": [
        "PostgresStore", "SqlStore", "SqliteStore",
    ],
    "atomr.store.url": [
        "SCHEMES", "describe", "open_store", "redact", "scrub", "split_schema",
    ],
    "atomr.store.base": [
        "AppendBatch", "RunSummary", "STATUSES", "Store", "now_ms", "parse_cursor", "run_cursor",
    ],
    "atomr.testing": [
        "Mismatch", "ReplayResult", "StoreConformance", "check_rehydration", "demo_events",
        "demo_plan", "encode_batch", "filler_events", "fold", "full_replay", "replay",
    ],
    "atomr.testing.conformance": [
        "StoreConformance", "check_rehydration", "demo_events", "demo_plan", "encode_batch",
        "filler_events", "fold", "full_replay",
    ],
    "atomr.testing.journals": [
        "check_rehydration", "demo_events", "demo_plan", "encode_batch", "filler_events", "fold",
        "full_replay", "snapshot_points",
    ],
    "atomr.testing.replay": [
        "Mismatch", "ReplayResult", "replay",
    ],
    "atomr.types": [
        "Cancelled", "Checkpoint", "Command", "Done", "Failed", "Interrupt", "Outcome",
        "Paused", "StateView", "StepEvent",
    ],
    "atomr.workflow": [
        "Limit", "RetryPolicy", "Workflow",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_ALL))
def test_all_is_exactly_the_pinned_api(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC_ALL[module]
    assert len(set(mod.__all__)) == len(mod.__all__), "a name is listed twice"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == [], f"{module}.__all__ names what it does not define"


def test_version_comes_from_the_package_metadata():
    try:
        expected = metadata.version("atomr")
    except metadata.PackageNotFoundError:  # pragma: no cover - a tree that is not installed
        expected = "0+unknown"
    assert atomr.__version__ == expected


def test_issue_contract_imports():
    from atomr import (  # noqa: F401
        AppendList, Command, Dag, Done, Failed, LastWriteWins, LmdbStore, MemoryStore, Paused,
        RetryPolicy, Runtime, StateSchema, Workflow,
    )
    from atomr.messages import Resume, Run  # noqa: F401


def test_error_tree():
    e = atomr.errors
    assert issubclass(e.CycleError, e.GraphError)
    assert issubclass(e.UnknownChannelError, e.StateError)
    for cls in (e.GraphError, e.StateError, e.CodecError, e.StoreError, e.RunError):
        assert issubclass(cls, e.AtomrError)
    for name in e.__all__:
        obj = getattr(e, name)
        if isinstance(obj, type):
            assert issubclass(obj, e.AtomrError), name


def test_py_typed_shipped():
    assert (Path(atomr.__file__).parent / "py.typed").exists()
