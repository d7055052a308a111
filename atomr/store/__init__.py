"""Persistence: the on-disk format, the Store protocol and its backends."""

from atomr.store.base import AppendBatch, RunSummary, Store
from atomr.store.lmdb import LmdbStore
from atomr.store.memory import MemoryStore

__all__ = ["AppendBatch", "LmdbStore", "MemoryStore", "RunSummary", "Store"]
