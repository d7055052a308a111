"""Persistence: the on-disk format, the Store protocol and its backends."""

from atomr.store.base import AppendBatch, RunSummary, Store
from atomr.store.lmdb import LmdbStore
from atomr.store.memory import MemoryStore
from atomr.store.sql import PostgresStore, SqliteStore
from atomr.store.url import open_store

__all__ = ["AppendBatch", "LmdbStore", "MemoryStore", "PostgresStore", "RunSummary", "SqliteStore", "Store",
           "open_store"]
