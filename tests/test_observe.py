"""The runtime's public observation API (rt.stats()), /metrics built on it, and a
run index large enough to show that a page and a scrape read a bounded number
of entries."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import lmdb
import pytest

import atomr
from atomr import Histogram, LmdbStore, MemoryStore, RuntimeStats
from atomr.errors import RuntimeClosed
from atomr.store import format as fmt
from atomr.store.base import STATUSES, RunSummary

from test_server_support import GATE, T, runtime, serve

pytestmark = pytest.mark.timeout(300)

ROOT = Path(atomr.__file__).parent


def scrape(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (any order)."""
    for m in re.finditer("^" + re.escape(name) + r"(?:\{([^}]*)\})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


def test_stats_count_commits_steps_runs_and_statuses() -> None:
    GATE.set()
    rt = runtime(MemoryStore())
    try:
        for i in range(3):
            h = rt.start("approval", {"topic": "s"}, run_id=f"s{i}")
            assert h.result(timeout=T).status == "paused"
        rt.start("failing", {}, run_id="f").result(timeout=T)
        st = rt.stats()
        assert isinstance(st, RuntimeStats)
        assert st.runs_by_status["paused"] == 3 and st.runs_by_status["failed"] == 1
        assert set(st.runs_by_status) == set(STATUSES)
        assert st.commits >= 4 and st.batches >= st.commits
        assert st.commit_seconds.count == st.commits and st.batch_sizes.sum == st.batches
        assert st.step_executions[("approval", "draft", "completed")] == 3
        assert st.step_executions[("failing", "boom", "failed")] >= 1
        h = st.step_seconds[("approval", "draft")]
        assert isinstance(h, Histogram) and h.count == 3 and sum(h.counts) == 3 and h.sum >= 0
        assert h.cumulative()[-1] == (float("inf"), 3)
        assert st.run_seconds[("approval", "paused")].count == 3
        assert st.run_seconds[("failing", "failed")].count == 1
        assert st.workflows == 3 and st.live_runs >= 0 and st.queued_runs >= 0 and st.writes_queued >= 0
        with pytest.raises(Exception):
            st.commits = 0  # type: ignore[misc]  # frozen
        assert not rt.closed and not rt.is_live("approval", "s0")
    finally:
        rt.close()
    assert rt.closed
    with pytest.raises(RuntimeClosed):
        rt.stats()


def test_metrics_hold_step_and_run_series_and_counts_survive_a_restart(tmp_store_path: str) -> None:
    pytest.importorskip("prometheus_client")
    GATE.set()
    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        for i in range(2):
            assert c.post("/api/workflows/approval/runs", json={"input": {"topic": "m"}, "run_id": f"m{i}"}
                          ).status_code == 201
            assert c.get(f"/api/runs/approval/m{i}/wait", params={"timeout": T}).json()["outcome"] == "paused"
        text = c.get("/metrics").text
        assert scrape(text, "atomr_step_executions_total", workflow="approval", step="draft",
                      outcome="completed") == 2
        assert scrape(text, "atomr_step_duration_seconds_count", workflow="approval", step="check") == 2
        assert scrape(text, "atomr_step_duration_seconds_bucket", workflow="approval", step="check",
                      le="+Inf") == 2
        assert scrape(text, "atomr_run_duration_seconds_count", workflow="approval", outcome="paused") == 2
        assert scrape(text, "atomr_runs", status="paused") == 2
        assert scrape(text, "atomr_commit_seconds_count") == scrape(text, "atomr_checkpointer_commits_total")
    # a new runtime on the same store: the gauge reads the store's counts, not this process's memory
    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        text = c.get("/metrics").text
        assert scrape(text, "atomr_runs", status="paused") == 2
        assert scrape(text, "atomr_runs", status="running") == 0
        assert scrape(text, "atomr_step_executions_total") is None  # this process executed no step yet


def test_api_runs_pages_newest_first_with_filters_and_cursors(tmp_store_path: str) -> None:
    GATE.set()
    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        for i in range(7):
            wf = "failing" if i % 3 == 0 else "approval"
            data = {"n": 1} if wf == "failing" else {"topic": "p"}
            assert c.post(f"/api/workflows/{wf}/runs", json={"input": data, "run_id": f"p{i}"}).status_code == 201
            c.get(f"/api/runs/{wf}/p{i}/wait", params={"timeout": T})
        seen, cursor = [], None
        while True:
            doc = c.get("/api/runs", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            seen += [r["run_id"] for r in doc["runs"]]
            cursor = doc["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"p{i}" for i in range(6, -1, -1)]
        doc = c.get("/api/runs", params={"status": "failed", "limit": 2}).json()
        assert [r["run_id"] for r in doc["runs"]] == ["p6", "p3"] and doc["next_cursor"]
        doc = c.get("/api/runs", params={"status": "failed", "limit": 2, "cursor": doc["next_cursor"]}).json()
        assert [r["run_id"] for r in doc["runs"]] == ["p0"] and doc["next_cursor"] is None
        doc = c.get("/api/runs", params={"workflow_id": "approval", "status": "paused"}).json()
        assert [r["run_id"] for r in doc["runs"]] == ["p5", "p4", "p2", "p1"]
        r = c.get("/api/runs", params={"cursor": "bm90LWEtY3Vyc29y"})
        assert r.status_code == 400 and r.json()["error"] == "BadRequest"


# -- a large index -------------------------------------------------------------------------


def _bulk(path: str, runs: int) -> dict[str, int]:
    """Write ``runs`` runs' index entries and their 4 order keys each straight into
    the store's files (one transaction; no journals: nothing here reads them)."""
    LmdbStore(path, verify=False).close()
    env = lmdb.open(path, max_dbs=8, subdir=True, map_size=4 << 30)
    meta, idx = env.open_db(fmt.DB_META), env.open_db(fmt.DB_RUNS)
    counts = dict.fromkeys(STATUSES, 0)
    with env.begin(write=True) as txn:
        for i in range(runs):
            status = STATUSES[i % 7]
            s = RunSummary(f"wf{i % 10}", f"r{i:07d}", status, 1, 1, created_ms=1_000_000 + i, updated_ms=1)
            rkey = fmt.run_key(s.workflow_id, s.run_id)
            txn.put(rkey, s.to_record(), db=idx)
            for prefix in fmt.index_filters(s.workflow_id, status):
                txn.put(fmt.index_key(prefix, s.created_ms, s.workflow_id, s.run_id), rkey, db=meta)
            counts[status] += 1
        for status, n in counts.items():
            txn.put(fmt.count_key(status), n.to_bytes(8, "big", signed=True), db=meta)
    env.close()
    return counts


@pytest.mark.parametrize("runs", [100, 50_000])  # 50,000 runs: 200,000 order keys
def test_a_page_and_a_scrape_read_the_same_with_100_runs_or_200000_index_rows(tmp_path: Path, runs: int) -> None:
    pytest.importorskip("prometheus_client")
    path = str(tmp_path / "big")
    counts = _bulk(path, runs)
    store = LmdbStore(path, verify=False)

    def no_scan() -> Any:
        raise AssertionError("the whole run index was read")

    store.summaries = no_scan  # type: ignore[method-assign]
    rt = runtime(store)
    try:
        reads = store.index_reads
        page = rt.runs(status="paused", limit=10)
        assert store.index_reads - reads == 10
        assert [s.created_ms for s in page] == sorted((s.created_ms for s in page), reverse=True)
        assert page[0].run_id == max(f"r{i:07d}" for i in range(runs) if i % 7 == 1)
        mid = rt.runs(limit=10, before=rt.runs(limit=5)[-1].cursor, workflow_id="wf3")
        assert len(mid) == 10 and all(s.workflow_id == "wf3" for s in mid)
        reads = store.index_reads
        assert rt.runs(limit=50, before=page[0].cursor)[-1].created_ms < page[0].created_ms
        assert store.index_reads - reads == 50
        reads = store.index_reads
        assert dict(rt.stats().runs_by_status) == counts
        assert store.index_reads - reads == len(STATUSES)
        from atomr.server.metrics import Metrics
        import prometheus_client as pc

        m = Metrics(rt)
        reads = store.index_reads
        t0 = time.perf_counter()
        text = pc.generate_latest(m.registry).decode()
        took = time.perf_counter() - t0
        assert store.index_reads - reads == len(STATUSES)  # a scrape reads the counts, no run
        assert scrape(text, "atomr_runs", status="paused") == counts["paused"]
        assert took < 5.0
    finally:
        rt.close()


# -- the server and the CLI use the runtime's public face only ------------------------------

_REACH_IN = re.compile(r"\b(?:rt|runtime|self\.rt|ctx\.rt|h|handle|store|rt\.store|core)\._[A-Za-z]")
_PROBES = re.compile(r"_actor_weakref|\._core\b|inspect\.signature|getattr\((?:ctx\.)?rt\s*,|store\.write\s*=")


def test_the_server_and_the_cli_reach_into_no_private_part_of_a_runtime() -> None:
    found = []
    for folder in ("server", "cli"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if code.lstrip().startswith(("from ", "import ")):
                    continue  # modules, not attributes of a runtime
                if _REACH_IN.search(code) or _PROBES.search(code):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_a_step_abandoned_at_its_timeout_is_counted_as_timed_out() -> None:
    from atomr import Dag, LastWriteWins, Runtime, StateSchema, Workflow

    def slow(state: Any, ctx: Any) -> dict[str, Any]:
        time.sleep(1.0)
        return {}

    wf = Workflow("slow", Dag.builder("s").step("s", slow).build(), StateSchema({"n": (LastWriteWins(), 0)}),
                  step_timeout_s=0.1)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        assert rt.start("slow", {}).result(timeout=T).status == "failed"
        st = rt.stats()
        assert st.step_executions[("slow", "s", "timed_out")] == 1
        assert 0.05 < st.step_seconds[("slow", "s")].sum < T
        assert st.run_seconds[("slow", "failed")].count == 1


def test_rt_runs_and_aruns_page_newest_first() -> None:
    import asyncio

    from atomr.errors import StoreError

    GATE.set()
    with runtime(MemoryStore()) as rt:
        for i in range(5):
            rt.start("approval", {"topic": "a"}, run_id=f"a{i}").result(timeout=T)
        first = rt.runs(limit=2)
        assert [s.run_id for s in first] == ["a4", "a3"]
        assert [s.run_id for s in rt.runs(limit=2, before=first[-1].cursor)] == ["a2", "a1"]
        got = asyncio.run(rt.aruns("paused", "approval", 2, first[-1].cursor))
        assert [s.run_id for s in got] == ["a2", "a1"]
        assert [s.run_id for s in rt.runs(before=got[-1].cursor)] == ["a0"]
        with pytest.raises(StoreError, match="cursor"):
            rt.runs(before="nope")
