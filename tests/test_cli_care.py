"""atomr verify / atomr backup on SQLite and Postgres: what each checks, what each
damage looks like in the report, and what backup does (or refuses to do)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from atomr import Runtime, SqliteStore
from atomr.cli import main
from atomr.store._sqlverify import verify_sql
from atomr.store.url import open_store
from conftest import PG_DSN

pytestmark = pytest.mark.timeout(300)
T = 30.0
BIG_ORDER = {"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]}


def filled(url: str) -> None:
    from examples.order_pipeline import workflow

    with Runtime(store=url) as rt:
        rt.register(workflow)
        rt.start("orders", BIG_ORDER, run_id="o1", meta={"module": "examples.order_pipeline:workflow"}).result(
            timeout=T)
        rt.start("orders", BIG_ORDER, run_id="o2").result(timeout=T)
        rt.schedule("nightly", "orders", every_s=86400, input=BIG_ORDER)


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: Any, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        url = f"{PG_DSN}?schema={request.getfixturevalue('pg_schema')}"
    filled(url)
    return url


def execute(url: str, sql: str, *params: Any) -> None:
    """Change the store's tables behind atomr's back (``{t}`` is the table prefix)."""
    store = open_store(url)
    try:
        with store._wlock, store._writing() as cur:
            cur.execute(store.dialect.sql(sql), params)
    finally:
        store.close()


def test_a_sound_store_verifies(sql_url, capsys):
    rc, out, _ = run_cli(capsys, "--store", sql_url, "verify")
    assert rc == 0 and "ok: no damage found" in out
    assert "records in 4 tables" in out
    rc, out, _ = run_cli(capsys, "--store", sql_url, "verify", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["databases"]["runs"] == 2 and doc["databases"]["schedules"] == 1
    assert doc["notes"]


def test_damaged_records_gaps_and_orphans_are_reported_per_run(sql_url, capsys):
    store = open_store(sql_url)
    try:
        last = store.summary("orders", "o1").last_seq
        store._corrupt("orders", "o1", 2, b"\x01\x00\x00\x00\x00garbage")
    finally:
        store.close()
    execute(sql_url, "DELETE FROM {t}journal WHERE workflow_id = ? AND run_id = ? AND seq = ?", "orders", "o2", 4)
    execute(sql_url, "INSERT INTO {t}journal (workflow_id, run_id, seq, record) VALUES (?, ?, ?, ?)",
            "ghost", "g1", 1, b"\x01\x00\x00\x00\x00")
    execute(sql_url, "UPDATE {t}schedules SET record = ? WHERE schedule_id = ?", b"\x01nope", "nightly")
    rc, out, _ = run_cli(capsys, "--store", sql_url, "verify")
    assert rc == 1, out
    assert "damaged record: journal: run orders/o1 event 2: damaged record: checksum mismatch" in out
    assert "run orders/o2 event 4: events 4..4 are missing" in out
    assert "journal rows of a run the run index does not list" in out and "ghost/g1" in out
    assert "schedule 'nightly'" in out
    assert "other runs are readable" in out
    rc, out, _ = run_cli(capsys, "--store", sql_url, "verify", "--json")
    doc = json.loads(out)
    assert rc == 1 and not doc["ok"] and ["orders", "o1"] in doc["damaged_runs"] and ["orders", "o2"] in doc[
        "damaged_runs"]
    # --quick walks sequence numbers only: the gap and the orphan, not the checksum
    rc, out, _ = run_cli(capsys, "--store", sql_url, "verify", "--quick")
    assert rc == 1 and "events 4..4 are missing" in out and "orders/o1 event 2" not in out
    assert last > 2


def test_sqlite_integrity_check_finds_damaged_pages(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    filled(url)
    path = tmp_path / "runs.db"
    with open(path, "r+b") as f:  # wreck every page after the first (the schema stays readable)
        page = 4096
        size = os.path.getsize(path)
        for off in range(page, size, page):
            f.seek(off + 8)
            f.write(os.urandom(200))
    rc, out, err = run_cli(capsys, "--store", url, "verify")
    assert rc == 1, out + err
    assert "DAMAGED: SQLite" in out and "restore the database file from a backup" in out


def test_postgres_verify_points_at_pg_amcheck_without_the_password(pg_schema, capsys):
    url = PG_DSN.replace("postgres@", "postgres:s3cr3t@") + f"?schema={pg_schema}"
    filled(url)
    rc, out, err = run_cli(capsys, "--store", url, "verify")
    assert rc == 0, out + err
    assert f"pg_amcheck -h 127.0.0.1 -p 5432 -U postgres --schema={pg_schema} --heapallindexed test" in out
    assert "s3cr3t" not in out + err


def test_postgres_backup_is_refused_with_the_pg_dump_command(pg_schema, capsys, tmp_path):
    url = PG_DSN.replace("postgres@", "postgres:s3cr3t@") + f"?schema={pg_schema}"
    rc, out, err = run_cli(capsys, "--store", url, "backup", str(tmp_path / "b.dump"))
    assert rc == 2 and "s3cr3t" not in out + err
    assert (f"pg_dump -h 127.0.0.1 -p 5432 -U postgres --schema={pg_schema} --format=custom "
            f"--file={tmp_path / 'b.dump'} test") in err
    assert "pg_restore" in err and not (tmp_path / "b.dump").exists()


def test_sqlite_backup_is_a_checked_self_contained_copy_made_while_a_writer_is_open(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    filled(url)
    writer = SqliteStore(tmp_path / "runs.db")  # another writer holds the store meanwhile
    try:
        rc, out, err = run_cli(capsys, "--store", url, "backup", str(tmp_path / "copy.db"))
        assert rc == 0, out + err
        assert "SQLite's online backup; the copy was checked" in out
    finally:
        writer.close()
    copy = tmp_path / "copy.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with sqlite3.connect(copy) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    rc, out, _ = run_cli(capsys, "--store", f"sqlite:///{copy}", "runs", "--json")
    assert sorted(r["run_id"] for r in json.loads(out)) == ["o1", "o2"]
    report = verify_sql(SqliteStore(copy, readonly=True))
    assert report.ok
    # never over an existing file; a sqlite:/// URL names the file too; no other kind of destination
    rc, _, err = run_cli(capsys, "--store", url, "backup", str(copy))
    assert rc == 2 and "exists" in err
    rc, out, err = run_cli(capsys, "--store", url, "backup", f"sqlite:///{tmp_path / 'copy2.db'}")
    assert rc == 0 and (tmp_path / "copy2.db").exists(), err
    rc, _, err = run_cli(capsys, "--store", url, "backup", f"{PG_DSN}?schema=x")
    assert rc == 2 and "atomr copy" in err
