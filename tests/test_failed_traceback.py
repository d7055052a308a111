"""Failed.traceback: the raising step's traceback (its own frames, not atomr's),
kept in the journal (every backend), shown by ``atomr show`` and the HTTP API."""

from __future__ import annotations

import json
import textwrap

import pytest

from atomr import Dag, Done, Failed, Map, RetryPolicy, StateSchema, Workflow
from atomr import events as ev
from atomr.store import format as fmt
from test_cli import atomr, ok
from workflows import T, journal, runtimes, schema, ALL_STORES, PERSISTENT, store_kinds  # noqa: F401

store_kind = store_kinds(*ALL_STORES)


def parse_order(text):
    return int(text)  # raises ValueError for "x"


def step_that_raises(state, ctx):
    return {"n": parse_order("x")}


def _wf(wid: str = "tb", fn=step_that_raises, **kw) -> Workflow:
    return Workflow(wid, Dag.builder("a").step("a", lambda s, c: {"log": ["a"]}).step("boom", fn)
                    .edge("a", "boom").build(), schema(), **kw)


def _user_frames_only(tb: str) -> None:
    assert tb.startswith("Traceback (most recent call last):"), tb
    assert "in step_that_raises" in tb and "in parse_order" in tb and "return int(text)" in tb
    assert tb.rstrip().endswith("ValueError: invalid literal for int() with base 10: 'x'"), tb
    assert "atomr/actors" not in tb and "atomr/_run" not in tb and "execute_sync" not in tb, tb


def test_failed_carries_the_steps_traceback_on_every_backend(runtimes, store_kind):
    rt = runtimes(store_kind, workflows=[_wf(retry=RetryPolicy(max_attempts=2))])
    out = rt.start("tb", {}, run_id="r").result(timeout=T)
    assert isinstance(out, Failed) and out.step_id == "boom", out
    _user_frames_only(out.traceback)
    assert rt.get_state("tb", "r").traceback == out.traceback
    [failed] = [e for e in journal(rt, "tb", "r") if type(e) is ev.RunFailed]
    assert failed.traceback == out.traceback
    assert rt.handle("tb", "r").result(timeout=T) == out  # a settled run's outcome, from the store
    if store_kind in PERSISTENT:
        rt2 = runtimes.reopen(rt)
        assert rt2.get_state("tb", "r").traceback == out.traceback
        assert rt2.handle("tb", "r").result(timeout=T).traceback == out.traceback


def test_async_steps_and_map_elements_have_one_too(runtimes):
    async def async_boom(state, ctx):
        return {"n": parse_order("x")}

    out = runtimes("memory", workflows=[_wf("tb-async", async_boom)]).start("tb-async", {}).result(timeout=T)
    assert isinstance(out, Failed) and "in async_boom" in out.traceback and "in parse_order" in out.traceback

    sch = StateSchema({"items": lambda a, b: b, "out": lambda a, b: b})
    wf = Workflow("tb-map", Dag.builder("m").step("m", Map(lambda item, ctx: parse_order(item), "items", "out"))
                  .build(), sch)
    out = runtimes("memory", workflows=[wf]).start("tb-map", {"items": ["1", "x"]}).result(timeout=T)
    assert isinstance(out, Failed) and "in parse_order" in out.traceback, out


def test_no_traceback_when_no_step_raised(runtimes):
    import time

    wf = _wf("tb-slow", lambda s, c: time.sleep(5), step_timeout_s=0.2)
    out = runtimes("memory", workflows=[wf]).start("tb-slow", {}).result(timeout=T)
    assert isinstance(out, Failed) and out.error_type == "StepTimeout" and out.traceback is None
    ok_ = runtimes("memory", workflows=[_wf("tb-ok", lambda s, c: None)]).start("tb-ok", {}).result(timeout=T)
    assert isinstance(ok_, Done)


def test_a_run_failed_record_without_traceback_keeps_the_old_layout():
    old = ev.RunFailed("s", "StepTimeout", "slow", 3, 9)
    raw = fmt.encode_event(old)
    row = fmt._unpack(fmt.unframe(raw))
    assert row == [13, "s", "StepTimeout", "slow", 3, 9]  # what atomr wrote before tracebacks
    assert fmt.decode_event(raw) == old and fmt.decode_event(raw).traceback is None
    new = ev.RunFailed("s", "ValueError", "bad", 3, 9, "Traceback ...")
    assert fmt.decode_event(fmt.encode_event(new)) == new


def test_atomr_show_prints_the_traceback(tmp_path):
    (tmp_path / "tbflow.py").write_text(textwrap.dedent('''
        from atomr import Dag, StateSchema, LastWriteWins, Workflow

        def parse_order(text):
            return int(text)

        def boom(state, ctx):
            return {"n": parse_order(state["raw"])}

        workflow = Workflow("tbflow", Dag.builder("boom").step("boom", boom).build(),
                            StateSchema({"raw": LastWriteWins(), "n": LastWriteWins()}))
    '''), encoding="utf-8")
    ok(atomr(tmp_path, "run", "tbflow:workflow", "--run-id", "r1", "--input", '{"raw": "x"}',
             pythonpath=(str(tmp_path),)), 1)
    text = ok(atomr(tmp_path, "show", "tbflow", "r1", pythonpath=(str(tmp_path),)))
    assert "traceback of the failed step:" in text and "in boom" in text and "in parse_order" in text, text
    assert "ValueError: invalid literal" in text and "atomr/actors" not in text
    doc = json.loads(ok(atomr(tmp_path, "show", "tbflow", "r1", "--json", pythonpath=(str(tmp_path),))))
    assert "in parse_order" in doc["error"]["traceback"] and doc["error"]["type"] == "ValueError"


def test_the_http_api_gives_the_traceback(runtimes):
    import httpx
    from test_server_support import Server

    from atomr.server import create_app

    rt = runtimes("memory", workflows=[_wf()])
    rt.start("tb", {}, run_id="r").result(timeout=T)
    with Server(create_app(rt)) as srv, httpx.Client(base_url=srv.url, timeout=T) as c:
        view = c.get("/api/runs/tb/r").json()
        assert "in parse_order" in view["error"]["traceback"]
        outcome = c.get("/api/runs/tb/r/wait", params={"timeout": T}).json()
        assert "in parse_order" in outcome["traceback"]
