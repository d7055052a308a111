"""Turns and forks at a checkpoint from the command line (atomr run --continue,
atomr fork --seq) and over HTTP (a start body's if_exists "continue", a fork's seq)."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from test_cli import atomr, error_line, ok
from test_server_support import T, serve

pytestmark = pytest.mark.timeout(180)

MODULE = textwrap.dedent('''
    from atomr import AppendList, Dag, LastWriteWins, Loop, StateSchema, Workflow

    S = StateSchema({"log": AppendList(), "msg": LastWriteWins(), "n": (LastWriteWins(), 0)})

    def hear(state, ctx):
        return {"log": [f"heard {state['msg']}@{ctx.super_step}"]}

    def count(state, ctx):
        return {"log": [f"it{state['n']}"], "n": state["n"] + 1}

    dag = (Dag.builder("hear").step("hear", hear).step("count", Loop(count, lambda s: s["n"] < 3))
           .edge("hear", "count").build())
    workflow = Workflow("chat", dag, S)
''')


def test_run_continue_and_fork_seq_on_the_command_line(tmp_path):
    (tmp_path / "chatwf.py").write_text(MODULE)
    spec, pp = "chatwf:workflow", (str(tmp_path),)
    ok(atomr(tmp_path, "run", spec, "--run-id", "c1", "--input", '{"msg": "hi"}', pythonpath=pp))
    out = ok(atomr(tmp_path, "run", spec, "--run-id", "c1", "--continue", "--input", '{"msg": "again"}',
                   pythonpath=pp))
    assert "heard again@3" in out
    assert "[3] completed hear" in out and "[1] completed hear" not in out  # the turn's steps only: this handle streams its own turn
    shown = json.loads(ok(atomr(tmp_path, "show", "chat", "c1", "--json", pythonpath=pp)))
    assert shown["status"] == "done" and shown["values"]["log"][-1] == "heard again@3"
    hist = json.loads(ok(atomr(tmp_path, "history", "chat", "c1", "--json", pythonpath=pp)))
    assert "turn:1" in [c["label"] for c in hist]
    # a new run id with --continue starts it; --continue without --run-id is refused
    ok(atomr(tmp_path, "run", spec, "--run-id", "c2", "--continue", "--input", '{"msg": "x"}', pythonpath=pp))
    assert "--continue needs --run-id" in error_line(atomr(tmp_path, "run", spec, "--continue", pythonpath=pp))
    # fork at exactly the first Loop iteration of the first turn, by its seq
    first = next(c for c in hist if c["label"] == "loop:count:1")
    out = ok(atomr(tmp_path, "fork", "chat", "c1", "--seq", str(first["seq"]), "--run-id", "f1", pythonpath=pp))
    assert f"at seq {first['seq']} (loop:count:1, super-step 1)" in out
    shown = json.loads(ok(atomr(tmp_path, "show", "chat", "f1", "--json", pythonpath=pp)))
    assert shown["values"] == first["values"] and shown["meta"]["forked_from_seq"] == first["seq"]
    out = ok(atomr(tmp_path, "resume", "chat", "f1", pythonpath=pp))
    assert '"it1"' in out
    assert "no checkpoint at seq 999" in error_line(
        atomr(tmp_path, "fork", "chat", "c1", "--seq", "999", pythonpath=pp))
    assert "not allowed with argument" in error_line(
        atomr(tmp_path, "fork", "chat", "c1", "--seq", "2", "--at", "1", pythonpath=pp))


def _err(r: httpx.Response, status: int, name: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"] == name, r.text
    return r.json()


def test_continue_and_fork_by_seq_over_http():
    with serve() as (srv, rt), httpx.Client(base_url=srv.url, timeout=T) as c:
        r = c.post("/api/workflows/failing/runs", json={"run_id": "f", "input": {}})
        assert r.status_code == 201
        assert c.get("/api/runs/failing/f/wait").json()["outcome"] == "failed"
        doc = _err(c.post("/api/workflows/failing/runs", json={"run_id": "f", "if_exists": "continue"}),
                   409, "RunNotContinuable")
        assert "resume it" in doc["message"]
        r = c.post("/api/workflows/approval/runs", json={"run_id": "a", "input": {"topic": "one"}})
        assert c.get("/api/runs/approval/a/wait").json()["outcome"] == "paused"
        _err(c.post("/api/workflows/approval/runs", json={"run_id": "a", "if_exists": "continue"}),
             409, "RunNotContinuable")
        c.post("/api/runs/approval/a/resume", json={"resume": "yes"})
        assert c.get("/api/runs/approval/a/wait").json()["outcome"] == "done"
        r = c.post("/api/workflows/approval/runs",
                   json={"run_id": "a", "if_exists": "continue", "input": {"topic": "two"}})
        assert r.status_code == 201, r.text
        assert r.json()["run_id"] == "a"
        deadline_view = c.get("/api/runs/approval/a/wait").json()
        assert deadline_view["outcome"] == "paused" and deadline_view["super_step"] == 3
        labels = [p["label"] for p in c.get("/api/runs/approval/a/history").json()["checkpoints"]]
        assert "turn:1" in labels
        hist = c.get("/api/runs/approval/a/history").json()["checkpoints"]
        turn = next(p for p in hist if p["label"] == "turn:1")
        r = c.post("/api/runs/approval/a/fork", json={"seq": turn["seq"], "run_id": "from-turn"})
        assert r.status_code == 201, r.text
        assert r.json()["forked_from_seq"] == turn["seq"] and r.json()["forked_from"] == f"a@{turn['super_step']}"
        view = c.get("/api/runs/approval/from-turn").json()
        assert view["status"] == "paused" and view["values"]["topic"] == "two"
        _err(c.post("/api/runs/approval/a/fork", json={"seq": 999}), 404, "CheckpointNotFound")
        _err(c.post("/api/runs/approval/a/fork", json={"seq": 1, "super_step": 1}), 400, "BadRequest")
        _err(c.post("/api/runs/approval/a/fork", json={"seq": "1"}), 400, "BadRequest")
