"""atomr: a durable workflow runtime.

A workflow is a DAG of steps over a shared state whose channels merge writes
through reducers. Each run lives in its own actor; an event journal in LMDB
makes every committed super-step survive a crash (SQLite and Postgres
stores are there for runs kept in a database).
"""

from importlib import metadata as _metadata

from atomr import errors
from atomr.actors.step import StepContext
from atomr.codec import CODEC_VERSION
from atomr.errors import AtomrError
from atomr.graph.dag import Dag, StepKind
from atomr.graph.reducers import AppendList, AppendMessages, LastWriteWins, MaxByTimestamp, MergeMap
from atomr.graph.schema import StateSchema
from atomr.graph.state import RunState
from atomr.kinds import Branch, Human, Loop, Map, Subgraph, dispatch_fan_out
from atomr.messages import Accepted, Rejected, Resume, Run
from atomr.ray import RayExecutor  # imports ray only when used
from atomr.runtime import Runtime
from atomr._observe import Histogram, RuntimeStats
from atomr.sharding import ShardedRunHandle, ShardedRuntime, ShardUnavailable  # ray only when used
from atomr._stream import StreamItem
from atomr.actors.cron_rules import Schedule
from atomr.handle import RunHandle
from atomr.store.base import RunSummary, Store
from atomr.store.lmdb import LmdbStore
from atomr.store.memory import MemoryStore
from atomr.store.sql import PostgresStore, SqliteStore
from atomr.store.url import open_store
from atomr.types import Cancelled, Checkpoint, Command, Done, Failed, Interrupt, Paused, StateView, StepEvent
from atomr.workflow import Limit, RetryPolicy, Workflow

try:  # the version is written once, in setup.cfg; the installed metadata carries it
    __version__: str = _metadata.version("atomr")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
del _metadata

__all__ = [
    "AppendList",
    "AppendMessages",
    "Accepted",
    "AtomrError",
    "Branch",
    "Cancelled",
    "CODEC_VERSION",
    "Checkpoint",
    "Command",
    "Dag",
    "Done",
    "Failed",
    "Histogram",
    "Human",
    "Interrupt",
    "Loop",
    "Map",
    "LastWriteWins",
    "Limit",
    "LmdbStore",
    "MaxByTimestamp",
    "MemoryStore",
    "MergeMap",
    "Paused",
    "PostgresStore",
    "Rejected",
    "RuntimeStats",
    "Resume",
    "RayExecutor",
    "RetryPolicy",
    "Run",
    "RunHandle",
    "RunState",
    "RunSummary",
    "Schedule",
    "Runtime",
    "ShardUnavailable",
    "ShardedRunHandle",
    "ShardedRuntime",
    "SqliteStore",
    "StateSchema",
    "StateView",
    "StepContext",
    "StepEvent",
    "StepKind",
    "StreamItem",
    "Store",
    "Subgraph",
    "Workflow",
    "dispatch_fan_out",
    "errors",
    "open_store",
    "__version__",
]
