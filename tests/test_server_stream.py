"""atomr serve: server-sent events (Last-Event-ID), metrics, and 200 concurrent clients."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from atomr import LmdbStore
from test_server_support import GATE, T, runtime, serve

pytestmark = pytest.mark.timeout(120)


def sse(text: str) -> list[dict]:
    """The events of an SSE body (comments and the retry field skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":") or ": " not in line:
                continue
            key, value = line.split(": ", 1)
            fields[key] = value
        if "data" in fields:
            out.append({"id": fields.get("id"), "event": fields.get("event"), **json.loads(fields["data"])})
    return out


def test_events_stream_a_run_and_resume_after_the_last_event_id():
    GATE.set()
    with serve() as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        c.post("/api/workflows/approval/runs", json={"input": {"topic": "s"}, "run_id": "s1"})
        r = c.get("/api/runs/approval/s1/events")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.text)
        assert events[-1]["event"] == "outcome"
        assert events[-1]["data"]["outcome"] == "paused" and events[-1]["data"]["interrupts"][0]["id"] == "review:2:0"
        assert all(e["id"] is not None and int(e["id"]) == e["cursor"] for e in events)
        kinds = [(e["data"]["kind"], e["data"]["step"]) for e in events if e["event"] == "events"]
        assert ("completed", "draft") in kinds and ("interrupted", "review") in kinds
        updates = [e["data"] for e in events if e["event"] == "updates"]
        assert {"check": {"log": ["checked"]}} in updates
        # reconnecting with Last-Event-ID replays only what came after it
        first = events[1]["cursor"]
        again = sse(c.get("/api/runs/approval/s1/events", headers={"Last-Event-ID": str(first)}).text)
        assert [(e["cursor"], e["event"]) for e in again] == [
            (e["cursor"], e["event"]) for e in events if e["cursor"] > first]
        # ?after= is the same for clients that cannot set headers; ?modes= picks the modes
        values = sse(c.get("/api/runs/approval/s1/events", params={"after": first, "modes": "values"}).text)
        assert {e["event"] for e in values} == {"values", "outcome"}
        r = c.get("/api/runs/approval/s1/events", headers={"Last-Event-ID": "abc"})
        assert r.status_code == 400 and r.json()["error"] == "BadRequest"
        r = c.get("/api/runs/approval/s1/events", params={"modes": "everything"})
        assert r.status_code == 400


def test_events_follow_a_running_run_live_with_keep_alives():
    GATE.clear()
    try:
        with serve() as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
            rid = c.post("/api/workflows/gated/runs", json={"input": {"n": 1}}).json()["run_id"]
            body, released = "", False
            with c.stream("GET", f"/api/runs/gated/{rid}/events") as r:
                deadline = time.monotonic() + T
                for chunk in r.iter_text():
                    body += chunk
                    if not released and "keep-alive" in body:
                        GATE.set()  # heartbeat_s is 0.5: a comment came while the step waited
                        released = True
                    assert time.monotonic() < deadline
            assert released
            events = sse(body)
            assert events[-1]["event"] == "outcome" and events[-1]["data"]["state"] == {"n": 2}
            cursors = [e["cursor"] for e in events if e["event"] == "events"]
            assert cursors == sorted(cursors) and len(cursors) == len(set(cursors))
    finally:
        GATE.set()


def test_events_opened_while_a_plain_step_runs_come_before_it_returns():
    """The run answers a stream opened mid-step at once: the journal's events
    reach the client while the step still waits (it waits up to T seconds)."""
    GATE.clear()
    try:
        with serve() as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
            rid = c.post("/api/workflows/gated/runs", json={"input": {"n": 1}}).json()["run_id"]
            time.sleep(0.2)  # the step is running (it waits for GATE)
            body, t0, took = "", time.monotonic(), None
            with c.stream("GET", f"/api/runs/gated/{rid}/events") as r:
                for chunk in r.iter_text():
                    body += chunk
                    if took is None and [e for e in sse(body) if e["event"] == "events"]:
                        took = time.monotonic() - t0
                        GATE.set()  # only now may the step return
                    assert time.monotonic() - t0 < T
            assert took is not None and took < T / 2, took
            kinds = [e["data"]["kind"] for e in sse(body) if e["event"] == "events"]
            assert kinds[0] == "started" and "completed" in kinds
            assert sse(body)[-1]["data"]["state"] == {"n": 2}
    finally:
        GATE.set()


def _metric(text: str, name: str, default: float | None = None, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # exposition order
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    m = re.search("^" + pattern + "$", text, re.M)
    if m is None and default is not None:
        return default
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


def test_metrics_count_runs_commits_and_queues(tmp_store_path):
    pytest.importorskip("prometheus_client")
    GATE.set()
    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, _), httpx.Client(base_url=srv.url, timeout=T) as c:
        for i in range(3):
            c.post("/api/workflows/approval/runs", json={"input": {"topic": "m"}, "run_id": f"m{i}"})
            c.get(f"/api/runs/approval/m{i}/wait", params={"timeout": T})
        c.post("/api/runs/approval/m0/resume", json={"resume": "yes"})
        c.get("/api/runs/approval/m0/wait", params={"timeout": T})
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert _metric(text, "atomr_runs_started_total", workflow_id="approval") == 3
        assert _metric(text, "atomr_runs_resumed_total", workflow_id="approval") == 1
        deadline = time.monotonic() + T
        while _metric(text, "atomr_runs_finished_total", 0, workflow_id="approval", outcome="done") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            text = c.get("/metrics").text
        assert _metric(text, "atomr_runs_finished_total", workflow_id="approval", outcome="paused") == 3
        assert _metric(text, "atomr_runs", status="paused") == 2
        assert _metric(text, "atomr_runs", status="done") == 1
        assert _metric(text, "atomr_runs", status="running") == 0
        assert _metric(text, "atomr_checkpointer_commits_total") >= 4
        assert _metric(text, "atomr_checkpointer_batches_total") >= _metric(text, "atomr_checkpointer_commits_total")
        assert _metric(text, "atomr_commit_seconds_count") >= 4
        assert _metric(text, "atomr_commit_batch_size_count") == _metric(text, "atomr_commit_seconds_count")
        assert _metric(text, "atomr_dispatcher_queue_depth") >= 0
        assert _metric(text, "atomr_runs_live") >= 0
        assert _metric(text, "atomr_workflows") == 3


def test_200_concurrent_clients_start_and_resume_runs(tmp_store_path):
    """200 clients at once, each: start a run, wait for its interrupt, answer it,
    wait for it to finish. Every run is accounted for and nothing answers 5xx."""
    GATE.set()
    n = 200
    statuses: list[int] = []

    async def client(base: str, i: int) -> str:
        # one connection per client; verify=False: no CA bundle to load for plain http
        async with httpx.AsyncClient(base_url=base, timeout=T, verify=False, trust_env=False) as c:
            rid = f"load-{i:03d}"
            calls = [("POST", "/api/workflows/approval/runs", {"input": {"topic": str(i)}, "run_id": rid}),
                     ("GET", f"/api/runs/approval/{rid}/wait?timeout={T}", None),
                     ("POST", f"/api/runs/approval/{rid}/resume", {"resume": "yes" if i % 2 else "no"}),
                     ("GET", f"/api/runs/approval/{rid}/wait?timeout={T}", None)]
            outcome = None
            for method, path, body in calls:
                r = await c.request(method, path, json=body)
                statuses.append(r.status_code)
                assert r.status_code < 500, r.text
                if method == "GET":
                    outcome = r.json()["outcome"]
            return outcome

    async def main(base: str) -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(client(base, i) for i in range(n))), 60)

    with serve(runtime(LmdbStore(tmp_store_path))) as (srv, rt), httpx.Client(base_url=srv.url, timeout=T) as c:
        t0 = time.monotonic()
        outcomes = asyncio.run(main(srv.url))
        elapsed = time.monotonic() - t0
        assert outcomes == ["done"] * n
        assert sorted(set(statuses)) == [200, 201, 202], sorted(set(statuses))
        runs, cursor = [], None
        while True:
            doc = c.get("/api/runs", params={"workflow_id": "approval", "limit": 64,
                                            **({"cursor": cursor} if cursor else {})}).json()
            runs += doc["runs"]
            cursor = doc["next_cursor"]
            if not cursor:
                break
        assert sorted(r["run_id"] for r in runs) == [f"load-{i:03d}" for i in range(n)]
        assert {r["status"] for r in runs} == {"done"}
        published = [r for r in runs if c.get(f"/api/runs/approval/{r['run_id']}").json()["values"]["published"]]
        assert len(published) == n // 2
    print(f"200 clients: {4 * n} requests in {elapsed:.2f}s")
    # the server's shutdown closed the runtime; the store holds every run
    assert rt._closed
    with LmdbStore(tmp_store_path, readonly=True) as store:
        assert len(store.runs(status="done", workflow_id="approval")) == n
