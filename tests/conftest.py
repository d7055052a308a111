"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def tmp_store_path(tmp_path: Path) -> str:
    """A path for a new LMDB store (not created yet, so it gets mode 0700)."""
    return str(tmp_path / "store")


# --- Postgres ---------------------------------------------------------------------------------
# Tests that need the server read ATOMR_TEST_PG_DSN. In CI (CI=true) they must run: an
# unreachable server fails them; elsewhere they skip with the reason.

import os
import uuid

PG_DSN = os.environ.get("ATOMR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_pg_problem: list[str] = []


def pg_available() -> str | None:
    """None when the test server answers, else why not (checked once)."""
    if not _pg_problem:
        try:
            import psycopg

            with psycopg.connect(PG_DSN, connect_timeout=5, autocommit=True) as c:
                c.execute("SELECT 1")
            _pg_problem.append("")
        except Exception as exc:  # noqa: BLE001
            _pg_problem.append(f"Postgres at ATOMR_TEST_PG_DSN is not reachable: {exc}")
    return _pg_problem[0] or None


def need_pg() -> None:
    problem = pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem + " (CI must run the Postgres tests)")
        pytest.skip(problem)


def drop_schema(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_schema() -> Any:
    """A fresh schema name for one test (dropped after it)."""
    need_pg()
    name = "t_" + uuid.uuid4().hex[:16]
    yield name
    drop_schema(name)
