"""examples/asgi_app.py in-process: start a run over HTTP, stream it as SSE, answer it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from atomr import Command, Done, MemoryStore, Paused, Runtime

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import asgi_app  # noqa: E402

T = 30.0


def _sse(text: str) -> list[dict]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append({"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])})
    return out


@pytest.fixture
def rt():
    with Runtime(store=MemoryStore()) as r:
        r.register(asgi_app.workflow)
        yield r


async def test_start_stream_and_answer_over_http(rt):
    app = asgi_app.make_app(rt)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=T) as c:
        r = await c.post("/runs", json={"topic": "lmdb"})
        assert r.status_code == 201
        run_id = r.json()["run_id"]
        r = await c.get(f"/runs/{run_id}/events")
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r.text)
        assert events[-1]["event"] == "outcome" and events[-1]["data"]["reason"] == "interrupt"
        updates = [e["data"] for e in events if e["event"] == "updates"]
        assert updates == [{"draft": {"draft": "a short note about lmdb"}}]
        # reconnecting with Last-Event-ID replays only what came after it
        again = _sse((await c.get(f"/runs/{run_id}/events",
                                  headers={"Last-Event-ID": str(events[0]["id"])})).text)
        first = events[0]["id"]
        assert [(e["id"], e["event"]) for e in again] == [
            (e["id"], e["event"]) for e in events if e["id"] > first and e["event"] != "custom"]
        assert again[-1]["event"] == "outcome"
        r = await c.post(f"/runs/{run_id}/answer", json="yes")
        assert r.json()["outcome"] == "done" and r.json()["state"]["published"] is True
        r = await c.get("/runs/nope/events")
        assert r.status_code == 404 and r.json()["error"] == "RunNotFound"


def test_a_handle_on_an_existing_run_watches_it(rt):
    h = rt.start("notes", {"topic": "x"}, run_id="w")
    first = h.result(timeout=T)
    assert isinstance(first, Paused)
    watch = rt.handle("notes", "w")
    assert watch.done() and watch.result(timeout=T) == first
    rt.resume("notes", "w", Command(resume="no"))
    out = rt.handle("notes", "w").result(timeout=T)
    assert isinstance(out, Done) and out.state["published"] is False
