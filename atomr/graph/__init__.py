"""The pure core of atomr: the step DAG, reducers, state schema and state merging."""

from __future__ import annotations

from atomr.graph.dag import (
    JOIN_POLICIES,
    BranchSpec,
    Dag,
    DagBuilder,
    Router,
    StepKind,
    find_cycle,
    unreachable_steps,
)
from atomr.graph.reducers import (
    AppendList,
    AppendMessages,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Reducer,
)
from atomr.graph.schema import Channel, SchemaBuilder, StateSchema
from atomr.graph.state import (
    RunState,
    Write,
    apply_writes,
    check_channels,
    fold_superstep,
    normalize_writes,
)

__all__ = [
    "JOIN_POLICIES",
    "AppendList",
    "AppendMessages",
    "BranchSpec",
    "Channel",
    "Dag",
    "DagBuilder",
    "LastWriteWins",
    "MaxByTimestamp",
    "MergeMap",
    "Reducer",
    "Router",
    "RunState",
    "SchemaBuilder",
    "StateSchema",
    "StepKind",
    "Write",
    "apply_writes",
    "check_channels",
    "find_cycle",
    "fold_superstep",
    "normalize_writes",
    "unreachable_steps",
]
