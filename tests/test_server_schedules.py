"""Schedules over HTTP (a real uvicorn on 127.0.0.1), the Schedules page in Chromium,
and the asyncio twins ``aschedule`` / ``aunschedule`` / ``aschedules``."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from atomr import Dag, LastWriteWins, MemoryStore, Runtime, StateSchema, Workflow
from atomr.errors import ScheduleError, ScheduleNotFound
from test_server_support import TOKEN, T, runtime, serve
from workflows import reopeners

pytestmark = pytest.mark.timeout(180)

any_store = reopeners("memory", "lmdb", "sqlite", "postgres")
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _tick(state: Any, ctx: Any) -> dict[str, Any]:
    return {"n": state["n"] + 1, "who": ctx.run_id}


tick = Workflow("tick", Dag.builder("tick").step("tick", _tick).build(),
                StateSchema({"n": (LastWriteWins(), 0), "who": LastWriteWins()}))


def until(fn: Any, what: str, timeout: float = T) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def err(r: httpx.Response, status: int, name: str, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert doc["error"] == name, doc
    for w in words:
        assert w in doc["message"], doc["message"]


@pytest.fixture
def site(any_store):
    rt = runtime(any_store(fsync="none"))
    rt.register(tick)
    with serve(rt, token=TOKEN) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=T, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c, rt


def test_schedules_are_created_listed_fired_and_deleted_over_http(site):
    c, rt = site
    assert c.get("/api/schedules").json() == {"schedules": []}
    assert c.get("/api/schedules", headers={"Authorization": ""}).status_code == 401
    r = c.post("/api/schedules", json={"id": "beat", "workflow": "tick", "every_s": 1, "input": {"n": 10}})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["schedule_id"] == "beat" and doc["workflow_id"] == "tick" and doc["every_s"] == 1.0
    assert doc["input"] == {"n": 10} and doc["overlap"] == "skip" and doc["catch_up"] == "none"
    assert doc["armed"] is True and doc["last_run_id"] is None and doc["last_run_status"] is None
    assert doc["next_due"] > time.time() - 1 and doc["next_due_iso"].endswith("Z")
    # it fires: the list names the last run and its status
    listed = until(lambda: [s for s in c.get("/api/schedules").json()["schedules"]
                            if s["last_run_status"] == "done"], "a run of the schedule")
    [s] = listed
    assert s["last_run_id"].startswith("beat@") and s["fired"] >= 1 and s["last_fired_iso"].endswith("Z")
    run = c.get(f"/api/runs/tick/{s['last_run_id']}").json()
    assert run["values"]["n"] == 11 and run["meta"]["schedule"] == "beat"
    # a cron schedule: its next due time is the next 02:00 UTC
    r = c.post("/api/schedules", json={"id": "nightly", "workflow": "approval", "cron": "0 2 * * *",
                                       "input": {"topic": "daily"}, "overlap": "allow", "catch_up": "one"})
    assert r.status_code == 201, r.text
    assert r.json()["next_due_iso"].endswith("T02:00:00Z") and r.json()["cron"] == "0 2 * * *"
    assert [s["schedule_id"] for s in c.get("/api/schedules").json()["schedules"]] == ["beat", "nightly"]
    assert [s["schedule_id"] for s in c.get("/api/schedules", params={"workflow_id": "approval"})
            .json()["schedules"]] == ["nightly"]
    # an id in use: 409, and the stored definition is the first one
    err(c.post("/api/schedules", json={"id": "nightly", "workflow": "tick", "every_s": 5}), 409, "ScheduleExists",
        "'nightly'", "delete it first")
    assert [s.workflow_id for s in rt.schedules() if s.schedule_id == "nightly"] == ["approval"]
    # delete: 204, then no run starts for it any more; again: 404
    r = c.delete("/api/schedules/beat")
    assert r.status_code == 204 and r.content == b""
    runs = len(rt.runs(workflow_id="tick"))
    err(c.delete("/api/schedules/beat"), 404, "ScheduleNotFound", "'beat'", "nightly")
    assert [s["schedule_id"] for s in c.get("/api/schedules").json()["schedules"]] == ["nightly"]
    time.sleep(2.5)
    assert len(rt.runs(workflow_id="tick")) == runs
    assert c.delete("/api/schedules/nightly").status_code == 204
    assert c.get("/api/schedules").json() == {"schedules": []}


def test_bad_schedule_bodies_are_refused_and_nothing_is_stored(site):
    c, rt = site

    def post(body: Any) -> httpx.Response:
        return c.post("/api/schedules", json=body)

    err(c.post("/api/schedules", content=b"[1]"), 400, "BadRequest", "JSON object")
    err(c.post("/api/schedules", content=b"{"), 400, "BadRequest", "not valid JSON")
    err(post({"workflow": "tick", "every_s": 1}), 400, "BadRequest", "'id' is required")
    err(post({"id": "x", "every_s": 1}), 400, "BadRequest", "'workflow' is required")
    err(post({"id": "x", "workflow": "tick"}), 400, "BadRequest", "exactly one of the fields 'cron'")
    err(post({"id": "x", "workflow": "tick", "cron": "* * * * *", "every_s": 1}), 400, "BadRequest", "exactly one")
    err(post({"id": "x", "workflow": "tick", "every_s": "1"}), 400, "BadRequest", "'every_s' must be a JSON number")
    err(post({"id": "x", "workflow": "tick", "every_s": True}), 400, "BadRequest", "'every_s'")
    err(post({"id": 3, "workflow": "tick", "every_s": 1}), 400, "BadRequest", "'id' must be a JSON string")
    err(post({"id": "x", "workflow": "tick", "every_s": 1, "when": "now"}), 400, "BadRequest", "'when'")
    err(post({"id": "x", "workflow": "tick", "every_s": 1, "input": [1]}), 400, "BadRequest", "'input'")
    err(post({"id": "x", "workflow": "tick", "every_s": 0.001}), 400, "ScheduleError", "every_s")
    err(post({"id": "x", "workflow": "tick", "cron": "61 * * * *"}), 400, "ScheduleError", "minute field")
    err(post({"id": "x", "workflow": "tick", "every_s": 1, "overlap": "maybe"}), 400, "ScheduleError", "overlap")
    err(post({"id": "x", "workflow": "tick", "every_s": 1, "catch_up": "all"}), 400, "ScheduleError", "catch_up")
    err(post({"id": "a/b", "workflow": "tick", "every_s": 1}), 400, "ScheduleError", "'/'")
    err(post({"id": "x", "workflow": "tick", "every_s": 1, "input": {"nope": 1}}), 400, "UnknownChannelError",
        "'nope'")
    err(post({"id": "x", "workflow": "ghost", "every_s": 1}), 404, "WorkflowNotFound", "'ghost'")
    assert c.get("/api/schedules").json() == {"schedules": []} and rt.schedules() == []


def test_concurrent_creates_of_one_id_make_one_schedule(site):
    c, rt = site
    url, headers = str(c.base_url), dict(c.headers)

    async def create(i: int) -> int:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=T) as ac:
            r = await ac.post("/api/schedules", json={"id": "one", "workflow": "tick", "every_s": 60 + i})
            return r.status_code

    codes = asyncio.run(_gather(create, 6))
    assert sorted(codes) == [201] + [409] * 5
    [s] = rt.schedules()
    assert s.schedule_id == "one"


async def _gather(fn: Any, n: int) -> list[int]:
    return list(await asyncio.gather(*(fn(i) for i in range(n))))


# -- the asyncio twins --------------------------------------------------------------------


def test_asyncio_twins_schedule_list_and_unschedule_off_the_loop():
    calls: list[tuple[str, str]] = []
    with Runtime(store=MemoryStore()) as rt:
        rt.register(tick)
        for name in ("schedule", "unschedule", "schedules"):
            real = getattr(rt, name)

            def spy(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                calls.append((_name, threading.current_thread().name))
                return _real(*a, **kw)

            setattr(rt, name, spy)

        async def main() -> None:
            loop_thread = threading.current_thread().name
            s = await rt.aschedule("every", "tick", every_s=0.5, input={"n": 1}, overlap="allow")
            assert s.schedule_id == "every" and s.every_s == 0.5 and s.armed
            await rt.aschedule("cron", "tick", cron="*/5 * * * *")
            assert [x.schedule_id for x in await rt.aschedules()] == ["cron", "every"]
            assert await rt.aschedules("nope") == []
            deadline = time.monotonic() + T
            while not (await rt.aschedules("tick"))[1].fired:
                assert time.monotonic() < deadline, "the schedule did not fire"
                await asyncio.sleep(0.05)
            await rt.aunschedule("every")
            with pytest.raises(ScheduleNotFound, match="'every'"):
                await rt.aunschedule("every")
            with pytest.raises(ScheduleError, match="exactly one of cron"):
                await rt.aschedule("bad", "tick")
            assert [x.schedule_id for x in await rt.aschedules()] == ["cron"]
            # the blocking calls ran in worker threads, never on the loop's
            assert {n for n, _ in calls} == {"schedule", "unschedule", "schedules"}
            assert loop_thread not in {t for _, t in calls}

        asyncio.run(main())


# -- the Schedules page in Chromium ---------------------------------------------------------


def test_schedules_page_shows_next_due_last_run_and_deletes(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium: install Debian's chromium package to run the UI tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    rt = runtime()
    rt.register(tick)
    rt.schedule("heartbeat", "tick", every_s=1, input={"n": 100})
    rt.schedule("nightly-report", "approval", cron="0 2 * * *", input={"topic": "daily"})
    with serve(rt, token=TOKEN) as (srv, _):
        until(lambda: any(s.last_run_id for s in rt.schedules()), "a run of heartbeat")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 560})
                page.set_default_timeout(int(T * 1000))
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{srv.url}/schedules")
                page.wait_for_selector("#login:not([hidden])")
                page.fill("#login-token", TOKEN)
                page.click("#login button[type=submit]")
                beat = page.locator("#schedules-body tr[data-schedule=heartbeat]")
                beat.locator("td.last .b-done").wait_for()
                assert page.locator('a[href="/schedules"][aria-current=page]').count() == 1
                assert "every 1 s" in beat.inner_text()
                last = beat.locator("td.last a")
                assert last.inner_text().startswith("heartbeat@")
                assert last.get_attribute("href").startswith("/runs/tick/heartbeat%40")
                nightly = page.locator("#schedules-body tr[data-schedule=nightly-report]")
                assert "cron 0 2 * * *" in nightly.inner_text() and "none yet" in nightly.inner_text()
                assert "(in " in nightly.locator("td.next").inner_text()
                assert nightly.locator("td.next span[title$='T02:00:00Z']").count() == 1
                shot = tmp_path / "schedules.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                if os.environ.get("ATOMR_SCREENSHOTS") == "1":
                    page.screenshot(path=str(DOCS_IMG / "schedules.png"), full_page=True)
                # delete asks first: dismissed, nothing changes; accepted, the row goes
                page.once("dialog", lambda d: d.dismiss())
                nightly.locator("button.danger").click()
                page.wait_for_timeout(300)
                assert [s.schedule_id for s in rt.schedules()] == ["heartbeat", "nightly-report"]
                page.once("dialog", lambda d: d.accept())
                nightly.locator("button.danger").click()
                nightly.wait_for(state="detached")
                page.wait_for_selector("#flash.ok:text('deleted nightly-report')")
                assert [s.schedule_id for s in rt.schedules()] == ["heartbeat"]
                assert errors == [], errors
            finally:
                browser.close()
