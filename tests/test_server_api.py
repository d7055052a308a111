"""The JSON API of atomr serve against a real uvicorn on 127.0.0.1: every route and its errors."""

from __future__ import annotations

import httpx
import pytest

from test_server_support import GATE, T, serve

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server():
    GATE.set()
    with serve() as (srv, rt):
        yield srv, rt


@pytest.fixture
def c(server):
    with httpx.Client(base_url=server[0].url, timeout=T) as client:
        yield client


@pytest.fixture
def gate():
    GATE.clear()
    try:
        yield GATE
    finally:
        GATE.set()


def err(r: httpx.Response, status: int, name: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert doc["error"] == name, doc
    assert isinstance(doc["message"], str) and doc["message"]
    return doc


def start(c: httpx.Client, wf: str = "approval", **body) -> dict:
    body.setdefault("input", {"topic": "t"})
    r = c.post(f"/api/workflows/{wf}/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait(c: httpx.Client, wf: str, run: str, timeout: float = T) -> dict:
    r = c.get(f"/api/runs/{wf}/{run}/wait", params={"timeout": timeout})
    assert r.status_code == 200, r.text
    return r.json()


def test_workflows_list_ids_versions_and_drawings(c):
    doc = c.get("/api/workflows").json()
    by_id = {w["id"]: w for w in doc["workflows"]}
    assert sorted(by_id) == ["approval", "failing", "gated"]
    w = by_id["approval"]
    assert w["version"] is None and w["mermaid"].startswith("flowchart TD")
    assert w["graph"]["layers"] == [["check", "draft"], ["review"]]
    assert {(e["from"], e["to"]) for e in w["graph"]["edges"]} == {("draft", "review"), ("check", "review")}
    assert c.get("/api/workflows/approval").json()["id"] == "approval"
    err(c.get("/api/workflows/nope"), 404, "WorkflowNotFound")


def test_a_run_starts_pauses_is_answered_and_finishes(c):
    doc = start(c, run_id="life", input={"topic": "lmdb"})
    assert doc == {"workflow_id": "approval", "run_id": "life", "status": doc["status"]}
    assert doc["status"] in ("running", "paused")
    out = wait(c, "approval", "life")
    assert out["outcome"] == "paused" and out["reason"] == "interrupt"
    assert out["interrupts"] == [{"id": "review:2:0", "step_id": "review", "payload": {"question": "publish lmdb?"}}]
    view = c.get("/api/runs/approval/life").json()
    assert view["status"] == "paused" and view["super_step"] == 1 and view["next"] == ["review"]
    assert view["interrupts"][0]["id"] == "review:2:0"
    # values JSON cannot hold: bytes as base64, NaN as a string, a set as a sorted list
    assert view["values"]["blob"] == "AAFhdG9tcg==" and view["values"]["ratio"] == "NaN"
    assert view["values"]["tags"] == ["a", "b"]
    steps = c.get("/api/runs/approval/life/steps").json()["steps"]
    assert steps == {"check": "done", "draft": "done", "review": "waiting"}
    r = c.post("/api/runs/approval/life/resume", json={"resume": "yes"})
    assert r.status_code == 202 and r.json()["run_id"] == "life"
    out = wait(c, "approval", "life")
    assert out["outcome"] == "done" and out["state"]["published"] is True
    assert out["state"]["log"] == ["checked", "draft lmdb", "review: yes"]
    hist = c.get("/api/runs/approval/life/history").json()["checkpoints"]
    assert [(h["super_step"], h["label"]) for h in hist] == [
        (0, "input"), (1, "layer:1"), (1, "interrupt:review"), (2, "layer:2"), (2, "done")]
    assert hist[-1]["values"]["published"] is True and hist[0]["values"]["topic"] == "lmdb"
    assert c.get("/api/runs/approval/life/steps").json()["steps"]["review"] == "done"


def test_bad_starts_are_refused_and_change_nothing(c):
    before = c.get("/api/runs", params={"limit": 1000}).json()["runs"]
    start(c, run_id="taken")
    url = "/api/workflows/approval/runs"
    err(c.post("/api/workflows/nope/runs", json={}), 404, "WorkflowNotFound")
    err(c.post(url, json={"input": {"nope": 1}}), 400, "UnknownChannelError")
    err(c.post(url, json={"input": {"topic": "x"}, "run_id": "taken"}), 409, "RunExists")
    err(c.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400, "BadRequest")
    err(c.post(url, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, "BadRequest")
    err(c.post(url, json=[1, 2]), 400, "BadRequest")
    err(c.post(url, json={"inputs": {}}), 400, "BadRequest")
    err(c.post(url, json={"input": [1]}), 400, "BadRequest")
    err(c.post(url, json={"input": {}, "run_id": 5}), 400, "BadRequest")
    err(c.post(url, json={"input": {}, "run_id": ""}), 400, "AtomrError")
    err(c.post(url, json={"input": {}, "run_id": "x" * 5000}), 400, "AtomrError")
    err(c.post(url, json={"input": {}, "if_exists": "sometimes"}), 400, "AtomrError")
    err(c.post(url, json={"input": {"topic": "[" * 20000}, "meta": [1]}), 400, "BadRequest")
    deep: object = "x"
    for _ in range(150):
        deep = [deep]
    err(c.post(url, json={"input": {"topic": deep}}), 400, "CodecError")
    err(c.post(url, content=b"[" * 100_000, headers={"content-type": "application/json"}), 400, "BadRequest")
    after = c.get("/api/runs", params={"limit": 1000}).json()["runs"]
    assert sorted(r["run_id"] for r in after) == sorted([r["run_id"] for r in before] + ["taken"])


def test_if_exists_attach_answers_with_the_existing_run(c):
    start(c, run_id="attach-me")
    wait(c, "approval", "attach-me")
    r = c.post("/api/workflows/approval/runs", json={"input": {"topic": "t"}, "run_id": "attach-me",
                                                     "if_exists": "attach"})
    assert r.status_code == 201
    assert r.json() == {"workflow_id": "approval", "run_id": "attach-me", "status": "paused", "attached": True}


def test_runs_are_listed_newest_first_filtered_and_paged(c):
    ids = [start(c, "failing", input={"n": i})["run_id"] for i in range(7)]
    for rid in ids:
        assert wait(c, "failing", rid)["outcome"] == "failed"
    seen, cursor, pages = [], None, 0
    while True:
        params = {"workflow_id": "failing", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        doc = c.get("/api/runs", params=params).json()
        seen += doc["runs"]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(r["run_id"] for r in seen) == sorted(ids)
    assert [r["created_ms"] for r in seen] == sorted((r["created_ms"] for r in seen), reverse=True)
    row = seen[0]
    assert set(row) >= {"workflow_id", "run_id", "status", "super_step", "created", "updated", "meta"}
    assert {r["status"] for r in seen} == {"failed"}
    failed = c.get("/api/runs", params={"status": "failed", "limit": 1000}).json()["runs"]
    assert set(ids) <= {r["run_id"] for r in failed}
    assert c.get("/api/runs", params={"workflow_id": "nope"}).json() == {"runs": [], "next_cursor": None}
    err(c.get("/api/runs", params={"status": "sideways"}), 400, "BadRequest")
    err(c.get("/api/runs", params={"limit": "0"}), 400, "BadRequest")
    err(c.get("/api/runs", params={"limit": "ten"}), 400, "BadRequest")
    err(c.get("/api/runs", params={"cursor": "!!not-a-cursor"}), 400, "BadRequest")


def test_state_and_history_of_unknown_runs_are_404(c):
    for path in ("", "/history", "/steps", "/wait", "/events"):
        err(c.get(f"/api/runs/approval/nope{path}"), 404, "RunNotFound")
        err(c.get(f"/api/runs/nope/nope{path}"), 404, "WorkflowNotFound")


def test_resume_refusals_leave_the_run_as_it_was(c, gate):
    start(c, run_id="ask")
    wait(c, "approval", "ask")
    base = "/api/runs/approval/ask"
    hist = c.get(f"{base}/history").json()
    err(c.post(f"{base}/resume", json={"resume": {"nope:1:0": 1}}), 400, "UnknownInterruptError")
    err(c.post(f"{base}/resume", json={"update": {"nope": 1}}), 400, "UnknownChannelError")
    err(c.post(f"{base}/resume", json={"goto": "nowhere"}), 400, "UnknownStepError")
    err(c.post(f"{base}/resume", json={"update": [1, 2]}), 400, "BadRequest")
    err(c.post(f"{base}/resume", json={"goto": 3}), 400, "BadRequest")
    err(c.post(f"{base}/resume", json={"answer": 1}), 400, "BadRequest")
    err(c.post("/api/runs/approval/nope/resume", json={}), 404, "RunNotFound")
    assert c.get(f"{base}/history").json() == hist
    assert c.get(base).json()["status"] == "paused"
    # a running run: a resume is a state conflict
    rid = start(c, "gated", input={"n": 1})["run_id"]
    err(c.post(f"/api/runs/gated/{rid}/resume", json={}), 409, "RunNotPaused")
    gate.set()
    assert wait(c, "gated", rid)["outcome"] == "done"
    err(c.post(f"/api/runs/gated/{rid}/resume", json={}), 409, "RunNotPaused")


def test_fork_copies_a_run_at_a_super_step(c):
    start(c, run_id="orig")
    wait(c, "approval", "orig")
    r = c.post("/api/runs/approval/orig/fork", json={"super_step": 1, "edits": {"topic": "forked"}})
    assert r.status_code == 201, r.text
    new = r.json()["run_id"]
    assert r.json()["forked_from"] == "orig@1" and new != "orig"
    view = c.get(f"/api/runs/approval/{new}").json()
    assert view["status"] == "paused" and view["values"]["topic"] == "forked"
    assert view["meta"]["forked_from"] == "orig@1"
    r = c.post("/api/runs/approval/orig/fork", json={"super_step": 0, "run_id": "named-fork"})
    assert r.status_code == 201 and r.json()["run_id"] == "named-fork"
    err(c.post("/api/runs/approval/orig/fork", json={"super_step": 0, "run_id": "named-fork"}), 409, "RunExists")
    err(c.post("/api/runs/approval/orig/fork", json={"super_step": 99}), 404, "CheckpointNotFound")
    err(c.post("/api/runs/approval/orig/fork", json={}), 400, "BadRequest")
    err(c.post("/api/runs/approval/orig/fork", json={"super_step": "1"}), 400, "BadRequest")
    err(c.post("/api/runs/approval/orig/fork", json={"super_step": True}), 400, "BadRequest")
    err(c.post("/api/runs/approval/orig/fork", json={"super_step": 1, "edits": {"nope": 1}}), 400,
        "UnknownChannelError")
    err(c.post("/api/runs/approval/nope/fork", json={"super_step": 1}), 404, "RunNotFound")


def test_cancel(c, server):
    if not hasattr(server[1], "acancel"):
        pytest.skip("this runtime has no cancel (Runtime.acancel)")
    start(c, run_id="to-cancel")
    wait(c, "approval", "to-cancel")
    r = c.post("/api/runs/approval/to-cancel/cancel", json={"reason": "not needed"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    assert c.get("/api/runs/approval/to-cancel").json()["status"] == "cancelled"
    assert wait(c, "approval", "to-cancel")["outcome"] == "cancelled"
    err(c.post("/api/runs/approval/to-cancel/resume", json={}), 409, "RunNotPaused")
    err(c.post("/api/runs/approval/nope/cancel"), 404, "RunNotFound")
    err(c.post("/api/runs/approval/to-cancel/cancel", json={"reason": 3}), 400, "BadRequest")
    start(c, run_id="finished")
    wait(c, "approval", "finished")
    c.post("/api/runs/approval/finished/resume", json={"resume": "no"})
    assert wait(c, "approval", "finished")["outcome"] == "done"
    err(c.post("/api/runs/approval/finished/cancel", json={}), 409, "RunOver")


def test_wait_long_polls_and_times_out_with_a_null_outcome(c, gate):
    rid = start(c, "gated", input={"n": 1})["run_id"]
    r = c.get(f"/api/runs/gated/{rid}/wait", params={"timeout": "0.3"})
    assert r.status_code == 200 and r.json() == {"outcome": None, "status": "running", "super_step": 0}
    err(c.get(f"/api/runs/gated/{rid}/wait", params={"timeout": "soon"}), 400, "BadRequest")
    err(c.get(f"/api/runs/gated/{rid}/wait", params={"timeout": "-1"}), 400, "BadRequest")
    err(c.get(f"/api/runs/gated/{rid}/wait", params={"timeout": "1e9"}), 400, "BadRequest")
    gate.set()
    assert wait(c, "gated", rid) == {"outcome": "done", "workflow_id": "gated", "run_id": rid, "state": {"n": 2}}
    rid = start(c, "failing", input={})["run_id"]
    out = wait(c, "failing", rid)
    assert out["outcome"] == "failed" and out["error_type"] == "ValueError" and out["step_id"] == "boom"
    assert c.get(f"/api/runs/failing/{rid}/steps").json()["steps"] == {"boom": "failed"}
    assert c.get(f"/api/runs/failing/{rid}").json()["error"]["error_type"] == "ValueError"


def test_unknown_routes_and_methods_answer_json(c):
    err(c.get("/api/nothing"), 404, "NotFound")
    err(c.delete("/api/runs"), 405, "MethodNotAllowed")
    assert c.get("/healthz").json() == {"ok": True}
