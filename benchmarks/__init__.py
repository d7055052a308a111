"""Benchmark harness: atomr against LangGraph on equivalent graphs and state.

``python -m benchmarks`` runs every workload (``--quick`` for a small CI-sized
pass), prints a table of atomr's advantage per workload next to its target,
and writes a JSON file of raw samples plus a PNG chart beside it.
Both systems run in the same process on the same machine, alternating which
goes first in each repetition, each timed after a warm-up run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from typing import Any

from atomr import LmdbStore, Runtime
from benchmarks import report
from benchmarks._common import Ctx, Progress, fs_type, langgraph_available

__all__ = ["WORKLOADS", "main"]

WORKLOADS = ("chain", "concurrent", "fanout", "recovery", "agents", "store_size", "latency",
             "sql_chain", "sql_concurrent", "pg_size", "loop_gap")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark atomr against LangGraph (equivalent graphs, same process, same machine).",
    )
    p.add_argument("--quick", action="store_true",
                   help="CI mode: every workload once at a small size")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per measurement (default 5; 1 with --quick)")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]",
                   help="run only these workloads: " + ", ".join(WORKLOADS))
    p.add_argument("--out", default=None, metavar="PATH",
                   help="JSON output path (default benchmarks/results/<date>-<host>[-quick].json); "
                        "the PNG chart and a Markdown table go beside it")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--dir", default=None, metavar="DIR",
                   help="where the stores are created (default: the system temp dir); "
                        "use a disk-backed file system for honest durable figures")
    p.add_argument("--no-langgraph", action="store_true", help="run atomr only")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine(scratch: str) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "loadavg_start": _loadavg(),
        "scratch_dir": scratch,
        "scratch_fs": fs_type(scratch),
        "sqlite_version": sqlite3.sqlite_version,
        "sqlite_wal_synchronous": _sqlite_synchronous(scratch),
    }


def _sqlite_synchronous(scratch: str) -> str | None:
    """SQLite's synchronous level on a fresh WAL database here (what SqliteSaver gets)."""
    path = os.path.join(scratch, "probe.sqlite")
    try:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    finally:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except OSError:
                pass
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))


def _git() -> dict[str, Any] | None:
    """The checkout's commit and whether atomr/ has uncommitted changes (None outside git)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "atomr"], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "atomr_uncommitted_paths": len(dirty)}


def _versions() -> dict[str, str | None]:
    names = ("atomr", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite",
             "langgraph-checkpoint-postgres", "psycopg", "psycopg-pool", "lmdb", "pykka", "msgpack",
             "matplotlib", "rich")
    return {n: _version(n) for n in names}


def _settings() -> dict[str, Any]:
    def defaults(fn: Any) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty and isinstance(p.default, (int, float, str, bool))}

    return {
        "atomr_lmdbstore_defaults": defaults(LmdbStore.__init__),
        "atomr_runtime_defaults": defaults(Runtime.__init__),
        "langgraph": "SqliteSaver(sqlite3.connect(path, check_same_thread=False)): journal_mode=WAL, "
                     "synchronous=FULL (the SQLite default: the WAL is fsynced on every commit; set "
                     "and checked explicitly in the headline chain case); agents: AsyncSqliteSaver "
                     "(aiosqlite), WAL, synchronous=FULL; recursion_limit raised so long chains run",
        "sql": "sql_chain / sql_concurrent / pg_size: the same database engine and durability on both "
               "sides, durability sync: SqliteStore(synchronous='full') vs SqliteSaver (WAL, "
               "synchronous=FULL forced); PostgresStore vs PostgresSaver / AsyncPostgresSaver (server "
               "default synchronous_commit), each side in a fresh schema dropped afterwards; Postgres "
               "from $ATOMR_BENCH_PG_DSN (cases skipped when it is not reachable)",
        "headline": "chain.durable-sync-fsync-full: one durable chain like for like, "
                    "LmdbStore(fsync='full') vs SqliteSaver synchronous=FULL, durability sync",
        "method": "same process and machine; in each repetition the two systems alternate which goes "
                  "first; every sample uses a fresh store in a fresh directory and a warm-up run "
                  "before its timed section",
    }


def _default_out(quick: bool) -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()) or "host"
    date = _dt.date.today().isoformat()
    return os.path.join(RESULTS_DIR, f"{date}-{host}{'-quick' if quick else ''}.json")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns 0, or 1 when a workload failed (2 on bad arguments)."""
    args = _parser().parse_args(argv)
    if args.list:
        for name in WORKLOADS:
            mod = importlib.import_module(f"benchmarks.{name}")
            print(f"{name}: {(mod.__doc__ or '').strip().splitlines()[0]}")
        return 0
    selected = list(WORKLOADS)
    if args.only:
        selected = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in selected if s not in WORKLOADS]
        if unknown:
            print(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}",
                  file=sys.stderr)
            return 2
    reps = args.reps if args.reps is not None else (1 if args.quick else 5)
    if reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2

    if args.no_langgraph:
        lg_ok, lg_why = False, "disabled with --no-langgraph"
    else:
        lg_ok, lg_why = langgraph_available()
    if not lg_ok:
        print(f"LangGraph not available ({lg_why}): atomr figures only", file=sys.stderr)
    out_path = os.path.abspath(args.out or _default_out(args.quick))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="atomr-bench-", dir=args.dir)
    modules = {name: importlib.import_module(f"benchmarks.{name}") for name in selected}

    results: dict[str, Any] = {
        "schema": 1,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "reps": reps,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "machine": _machine(scratch),
        "versions": _versions(),
        "git": _git(),
        "langgraph": {"available": lg_ok, "reason": lg_why or None},
        "settings": _settings(),
        "workloads": {},
    }
    failed = False
    t_start = time.perf_counter()
    try:
        probe = Ctx(args.quick, reps, lg_ok, scratch, Progress(0, enabled=False))
        total = sum(m.samples_count(probe) for m in modules.values())
        with Progress(total) as progress:
            ctx = Ctx(args.quick, reps, lg_ok, scratch, progress)
            for name, mod in modules.items():
                t0 = time.perf_counter()
                try:
                    res = mod.run(ctx)
                except Exception:  # noqa: BLE001 - recorded; the other workloads still run
                    failed = True
                    res = {"params": mod.params(ctx), "error": traceback.format_exc()}
                    print(f"workload {name} failed:\n{res['error']}", file=sys.stderr)
                res["doc"] = (mod.__doc__ or "").strip()
                res["seconds"] = round(time.perf_counter() - t0, 3)
                results["workloads"][name] = res
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["loadavg_end"] = _loadavg()
    results["duration_s"] = round(time.perf_counter() - t_start, 3)

    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")
    stem = os.path.splitext(out_path)[0]
    md = report.markdown_table(results)
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(md + "\n")
    png = stem + ".png"
    try:
        report.chart(results, png)
    except ImportError as e:
        print(f"no chart ({e}); install matplotlib", file=sys.stderr)
        png = None

    print(report.text_table(results))
    if args.markdown:
        print()
        print(md)
    print(f"\nwrote {out_path}" + (f" and {png}" if png else ""))
    return 1 if failed else 0
