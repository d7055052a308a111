"""Pins the public API: code outside atomr imports these names."""

import atomr
import atomr.errors

EXPECTED = {
    "Accepted", "AppendList", "AppendMessages", "AtomrError", "CODEC_VERSION", "Checkpoint",
    "Command", "Dag", "Done", "Failed", "Interrupt", "LastWriteWins", "LmdbStore",
    "MaxByTimestamp", "MemoryStore", "MergeMap", "Paused", "Rejected", "Resume", "RetryPolicy",
    "Run", "RunHandle", "RunState", "RunSummary", "Runtime", "StateSchema", "StateView",
    "StepContext", "StepEvent", "StepKind", "Store", "Workflow", "errors", "__version__",
}


def test_all_is_exactly_the_curated_api():
    assert set(atomr.__all__) >= EXPECTED
    for name in atomr.__all__:
        assert hasattr(atomr, name), name


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
    from pathlib import Path

    assert (Path(atomr.__file__).parent / "py.typed").exists()
