"""The SQL backends pass the store conformance suite: SQLite in both
synchronous modes, Postgres in a schema of its own per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atomr import PostgresStore, SqliteStore
from atomr.store.base import Store
from atomr.testing import StoreConformance
from conftest import PG_DSN


class TestSqliteStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> Store:
        return SqliteStore(tmp_path / "runs.db", synchronous="normal", snapshot_every=2)

    def reopen_store(self, store: Store, tmp_path: Path) -> Store:
        store.close()
        return SqliteStore(tmp_path / "runs.db", synchronous="normal", snapshot_every=2)


class TestSqliteStoreFull(StoreConformance):
    def make_store(self, tmp_path: Path) -> Store:
        return SqliteStore(tmp_path / "sub" / "runs.db")

    def reopen_store(self, store: Store, tmp_path: Path) -> Store:
        store.close()
        return SqliteStore(tmp_path / "sub" / "runs.db")


class TestPostgresStore(StoreConformance):
    @pytest.fixture(autouse=True)
    def _schema(self, pg_schema: str) -> Any:
        self.schema = pg_schema
        yield

    def make_store(self, tmp_path: Path) -> Store:
        return PostgresStore(PG_DSN, schema=self.schema, snapshot_every=2)

    def reopen_store(self, store: Store, tmp_path: Path) -> Store:
        store.close()
        return PostgresStore(PG_DSN, schema=self.schema, snapshot_every=2)
