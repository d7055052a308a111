"""Commits and fsyncs per super-step of the SQL workloads (a diagnostic, not a workload).

``python -m benchmarks.sql_counts [--backends sqlite,postgres] [--quick] [--syscalls]``
runs each side of ``sql_chain`` (one 40-step chain) and ``sql_concurrent``
(96 chains of 25 steps) once, each in a child process, exactly as the
harness does, and counts what happened between the start and the end of the
timed section (the untimed set-up and warm-up left out):

* SQLite: the ``fsync`` + ``fdatasync`` calls of the process (``strace``;
  with synchronous=FULL in WAL mode, one per commit, plus two per checkpoint);
* Postgres: transactions committed in the database
  (``pg_stat_database.xact_commit``, read-only ones included), WAL flushes
  and writes (``pg_stat_wal.wal_sync`` / ``wal_write``, cluster-wide: keep the
  server otherwise idle) and WAL bytes; with ``--syscalls`` also the client's
  ``sendto`` calls (messages sent to the server) under ``strace``.

For Postgres the counting runs in a database of its own (``atomr_bench_counts_<random>``,
created and dropped here; ``--same-db`` uses the DSN's database) so other clients'
transactions do not count. The child waits 1.5 s around the timed section, so
that the server's backends (which report statistics at most once a second while
idle) have reported everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from benchmarks import _sql

STATS_WAIT_S = 1.5
MARK_BEGIN, MARK_END = "/__atomr_bench_mark_begin", "/__atomr_bench_mark_end"
#: syscalls counted under strace, and the markers (os.access -> access/faccessat/faccessat2)
TRACED = "fsync,fdatasync,sendto,access,faccessat,faccessat2"


def _pg_counters() -> dict[str, int]:
    """:func:`benchmarks._sql.pg_counters` in one statement (so one transaction of its own)."""
    with _sql._connect() as conn:
        row = conn.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
            "w.wal_sync, w.wal_write, pg_current_wal_lsn() - '0/0'::pg_lsn FROM pg_stat_wal w").fetchone()
    return {"xact_commit": int(row[0]), "wal_sync": int(row[1]), "wal_write": int(row[2]),
            "wal_bytes": int(row[3])}


def child(workload: str, backend: str, side: str, runs: int) -> dict[str, Any]:
    """One sample of ``workload`` (chain / concurrent) with the counters read around its timed section."""
    from benchmarks import sql_chain, sql_concurrent
    from benchmarks._common import Ctx, Progress

    seen: dict[str, Any] = {}

    def mark(which: str) -> None:
        if which == "end":
            os.access(MARK_END, os.F_OK)
        if backend == "postgres":
            time.sleep(STATS_WAIT_S)
            seen[which] = _pg_counters()
        if which == "begin":
            os.access(MARK_BEGIN, os.F_OK)

    _sql.MARK = mark
    scratch = tempfile.mkdtemp(prefix="atomr-counts-")
    try:
        ctx = Ctx(False, 1, True, scratch, Progress(0, enabled=False))
        if workload == "chain":
            steps = sql_chain.STEPS
            fn = sql_chain.atomr_sample if side == "atomr" else sql_chain.lg_sample
            rate = fn(ctx, backend, steps)
            supersteps = steps
        else:
            steps = sql_concurrent.STEPS
            fn = sql_concurrent.atomr_sample if side == "atomr" else sql_concurrent.lg_sample
            rate = fn(ctx, backend, runs, steps)
            supersteps = runs * steps
    finally:
        _sql.MARK = None
        shutil.rmtree(scratch, ignore_errors=True)
    out: dict[str, Any] = {"super_steps": supersteps, "rate": rate}
    if backend == "postgres":
        b, e = seen["begin"], seen["end"]
        out["pg"] = {k: e[k] - b[k] for k in b}
        out["pg"]["xact_commit"] -= 1  # the "begin" reading's own transaction
    return out


def _strace_counts(path: str) -> dict[str, int]:
    """Syscalls named in the strace log between the begin and end markers."""
    counts: dict[str, int] = {}
    inside = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if MARK_BEGIN in line:
                inside = True
                continue
            if MARK_END in line:
                inside = False
                continue
            if not inside:
                continue
            # "<pid> name(args..." (a call interrupted by another thread's is logged as
            # "name(... <unfinished ...>" then "<... name resumed>": counted once, at its start)
            m = re.match(r"^\s*(?:\[pid\s+\d+\]\s*)?(?:\d+\s+)?([a-z_0-9]+)\(", line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def measure(workload: str, backend: str, side: str, runs: int, strace: bool, dsn: str) -> dict[str, Any]:
    env = dict(os.environ, **{_sql.PG_DSN_ENV: dsn})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.sql_counts", "--child", workload, backend, side, str(runs)]
    log = None
    if strace:
        fd, log = tempfile.mkstemp(prefix="atomr-strace-", suffix=".log")
        os.close(fd)
        cmd = ["strace", "-f", "-qq", "-o", log, "-e", f"trace={TRACED}", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"child {workload} {backend} {side} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if log:
            res["syscalls"] = _strace_counts(log)
    finally:
        if log:
            os.remove(log)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sql_counts", description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--workloads", default="chain,concurrent")
    p.add_argument("--quick", action="store_true", help="16 concurrent runs instead of 96")
    p.add_argument("--syscalls", action="store_true", help="also strace the Postgres children (sendto)")
    p.add_argument("--same-db", action="store_true", help="count in the DSN's database (default: a new one)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures here")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        workload, backend, side, runs = args.child
        print(json.dumps(child(workload, backend, side, int(runs))))
        return 0

    from benchmarks import sql_concurrent

    have_strace = shutil.which("strace") is not None
    runs = sql_concurrent.QUICK_RUNS if args.quick else sql_concurrent.RUNS
    backends = [b for b in args.backends.split(",") if b]
    dsn, made_db = _sql.pg_dsn(), None
    if "postgres" in backends:
        ok, why = _sql.pg_available()
        if not ok:
            print(f"postgres: skipped: {why}", file=sys.stderr)
            backends.remove("postgres")
        elif not args.same_db:
            made_db = "atomr_bench_counts_" + uuid.uuid4().hex[:8]
            with _sql._connect() as conn:
                conn.execute(f'CREATE DATABASE "{made_db}"')
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            dsn = make_conninfo(**{**conninfo_to_dict(dsn), "dbname": made_db})
    results: list[dict[str, Any]] = []
    try:
        for backend in backends:
            for workload in args.workloads.split(","):
                for side in ("atomr", "langgraph"):
                    strace = have_strace and (backend == "sqlite" or args.syscalls)
                    res = measure(workload, backend, side, runs, strace, dsn)
                    res.update(backend=backend, workload=workload, side=side)
                    results.append(res)
                    print(_line(res), flush=True)
    finally:
        if made_db:
            with _sql._connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{made_db}" WITH (FORCE)')
    if backends and "sqlite" in backends and not have_strace:
        print("(no strace here: SQLite fsyncs not counted)", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


def _line(r: dict[str, Any]) -> str:
    n = r["super_steps"]
    parts = [f"{r['backend']:8} {r['workload']:10} {r['side']:9} {n:5} super-steps  {r['rate']:8.0f}/s"]
    sc = r.get("syscalls")
    if sc is not None:
        fs = sc.get("fsync", 0) + sc.get("fdatasync", 0)
        parts.append(f"fsync+fdatasync {fs} ({fs / n:.2f}/step)")
        if sc.get("sendto"):
            parts.append(f"sendto {sc['sendto']} ({sc['sendto'] / n:.2f}/step)")
    pg = r.get("pg")
    if pg is not None:
        parts.append(f"xact_commit {pg['xact_commit']} ({pg['xact_commit'] / n:.2f}/step)")
        parts.append(f"wal_sync {pg['wal_sync']} ({pg['wal_sync'] / n:.2f}/step)")
        parts.append(f"wal_write {pg['wal_write']}")
        parts.append(f"WAL {pg['wal_bytes'] / n:,.0f} B/step")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
