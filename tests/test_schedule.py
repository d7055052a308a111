"""Schedules on a Runtime: validation, every_s firing, overlap, catch-up after
downtime, restarts without duplicate runs, unschedule, redefinition."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from atomr import AppendList, Dag, LastWriteWins, MemoryStore, Runtime, StateSchema, Workflow
from atomr._schedule import Schedule, ScheduleError, ScheduleNotFound
from atomr.actors.cron_rules import latest_due_ms, next_due_ms, run_id_for
from atomr.errors import RuntimeClosed, UnknownChannelError
from atomr.store.schedules import ScheduleRecord
from workflows import PERSISTENT, reopeners

T = 20.0
WEEK = 7 * 86400
S = StateSchema({"n": (LastWriteWins(), 0), "log": AppendList()})


def quick() -> Workflow:
    return Workflow("q", Dag.builder("a").step("a", lambda s, c: {"n": s["n"] + 1, "log": [c.run_id]}).build(), S)


def sleepy() -> Workflow:
    def a(state, ctx):
        ctx.sleep(60)
        return {"n": 1}

    return Workflow("z", Dag.builder("a").step("a", a).build(), S)


def wait_for(cond, what: str, timeout: float = T):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def now_ms() -> int:
    return int(time.time() * 1000)


#: Firing, overlap and redefinition on memory, LMDB and Postgres: these tests wait on
#: timers (~1 s each) and a schedule record is written by statements both SQL stores
#: share (base.py; the conformance suite checks them on SQLite too), so SQLite would
#: add their time and little else. Downtime and restarts run on every persistent store.
any_store = reopeners("memory", "lmdb", "postgres")
reopen_store = reopeners(*PERSISTENT)


@pytest.fixture
def rt(any_store):
    with Runtime(store=any_store(fsync="none")) as r:
        yield r


def test_bad_definitions_are_refused_and_nothing_is_stored(rt):
    rt.register(quick())
    for kw, words in [
        (dict(), "exactly one of cron"),
        (dict(cron="*/5 * * * *", every_s=60), "exactly one of cron"),
        (dict(every_s=0), "every_s"),
        (dict(cron="*/5 * * 13 *"), "month field '13'"),
        (dict(every_s=1, overlap="never"), "overlap"),
        (dict(every_s=1, catch_up="all"), "catch_up"),
        (dict(every_s=1, input="n=1"), "input must be a mapping"),
    ]:
        with pytest.raises(ScheduleError) as info:
            rt.schedule("job", "q", **kw)
        assert words in str(info.value)
    with pytest.raises(UnknownChannelError):
        rt.schedule("job", "q", every_s=1, input={"nope": 1})
    with pytest.raises(ScheduleError, match="schedule_id"):
        rt.schedule("a/b", "q", every_s=1)
    with pytest.raises(ScheduleNotFound, match="no schedule 'job'"):
        rt.unschedule("job")
    assert rt.schedules() == [] and rt.store.list_schedules() == []


def test_every_s_starts_runs_on_time_with_ids_from_the_due_time(rt):
    rt.register(quick())
    t0 = now_ms()
    s = rt.schedule("tick", "q", every_s=0.2, input={"n": 10}, meta={"team": "ops"})
    assert isinstance(s, Schedule) and s.armed and s.every_s == 0.2 and s.next_due * 1000 > t0
    done = wait_for(lambda: (r := rt.runs(status="done", workflow_id="q")) and len(r) >= 3 and r, "3 runs")
    rule = rt.store.get_schedule("tick")
    dues = []
    for summary in done[:3]:
        view = rt.get_state("q", summary.run_id)
        due = view.meta["due"]
        assert summary.run_id == f"tick@{due}" and view.meta["schedule"] == "tick" and view.meta["team"] == "ops"
        assert view.values["n"] == 11  # the schedule's input
        dues.append(due)
    assert dues == sorted(set(dues), reverse=True)  # runs() lists the newest first
    s = wait_for(lambda: (x := rt.schedules()[0]).fired >= 3 and x, "3 firings recorded")
    assert s.armed and s.last_run_id.startswith("tick@") and s.next_due > s.last_due
    assert run_id_for(rule, round(s.last_due * 1000)) == s.last_run_id


def test_unschedule_stops_the_runs(rt):
    rt.register(quick())
    rt.schedule("tick", "q", every_s=0.2)
    wait_for(lambda: len(rt.runs()) >= 1, "a run")
    rt.unschedule("tick")
    assert rt.schedules() == []
    n = len(rt.runs())  # a firing under way was waited for
    time.sleep(0.6)
    assert len(rt.runs()) == n and rt._cron().armed() == 0
    with pytest.raises(ScheduleNotFound):
        rt.unschedule("tick")


def test_overlap_skip_waits_for_the_previous_run(rt):
    rt.register(sleepy())
    rt.schedule("nap", "z", every_s=0.2, overlap="skip")
    wait_for(lambda: rt.schedules()[0].skipped >= 3, "skipped firings")
    [only] = rt.runs(workflow_id="z")
    assert only.status == "sleeping" and rt.schedules()[0].last_run_id == only.run_id
    rt.cancel("z", only.run_id)  # over: the next due time starts a run again
    wait_for(lambda: len(rt.runs(workflow_id="z")) == 2, "a run after the cancel")


def test_overlap_allow_starts_runs_side_by_side(rt):
    rt.register(sleepy())
    rt.schedule("nap", "z", every_s=0.2, overlap="allow")
    wait_for(lambda: len(rt.runs(status="sleeping", workflow_id="z")) >= 3, "3 sleeping runs")
    assert rt.schedules()[0].skipped == 0


def _downtime(reopen_store, catch_up: str, weeks: int = 3) -> ScheduleRecord:
    """A weekly schedule whose last firing was ``weeks`` ago, as if no process had run since."""
    with reopen_store() as store:
        last = latest_due_ms(ScheduleRecord("wk", "q", None, WEEK * 1000, {}), now_ms()) - weeks * WEEK * 1000
        rec = ScheduleRecord("wk", "q", None, WEEK * 1000, {"n": 1}, catch_up=catch_up, created_ms=last - 5,
                             last_due_ms=last)
        store.put_schedule(rec)
    return rec


def test_catch_up_one_starts_one_run_at_once_for_the_latest_missed(reopen_store):
    rec = _downtime(reopen_store, "one")
    opened = now_ms()
    with Runtime(store=reopen_store()) as rt:
        rt.register(quick())
        [run] = wait_for(lambda: rt.runs(status="done"), "the catch-up run")
        due = latest_due_ms(rec, opened)
        assert run.run_id == run_id_for(rec, due)
        # the run can finish before its firing is recorded (start first, then record)
        [s] = wait_for(lambda: [x for x in rt.schedules() if x.fired], "the firing recorded")
        assert s.fired == 1 and s.last_due * 1000 == due and s.next_due * 1000 == due + WEEK * 1000
        assert len(rt.runs()) == 1


def test_catch_up_none_waits_for_the_next_due_time(reopen_store):
    rec = _downtime(reopen_store, "none")
    with Runtime(store=reopen_store()) as rt:
        rt.register(quick())
        [s] = rt.schedules()
        assert s.armed and s.next_due * 1000 == next_due_ms(rec, now_ms()) and s.next_due > time.time()
        time.sleep(0.3)
        assert rt.runs() == [] and rt.schedules()[0].fired == 0


def test_a_schedule_survives_a_restart_and_keeps_firing(reopen_store):
    with Runtime(store=reopen_store()) as rt:
        rt.register(quick())
        rt.schedule("tick", "q", every_s=0.2)
        wait_for(lambda: len(rt.runs(status="done")) >= 2, "2 runs")
    reopened = now_ms()
    with Runtime(store=reopen_store()) as rt:
        assert [s.schedule_id for s in rt.schedules()] == ["tick"] and not rt.schedules()[0].armed
        rt.register(quick())  # arms it
        assert rt.schedules()[0].armed
        wait_for(lambda: any(s.created_ms > reopened for s in rt.runs(status="done")), "a run after the restart")
        ids = [s.run_id for s in rt.runs()]
        assert len(ids) == len(set(ids)) and all(i.startswith("tick@") for i in ids)


def test_a_due_time_fired_again_after_a_restart_attaches_to_its_run(reopen_store):
    """The process stopped after the run started but before the firing was recorded."""
    rec = _downtime(reopen_store, "one")
    with Runtime(store=reopen_store()) as rt:
        rt.register(quick())
        [first] = wait_for(lambda: rt.runs(status="done"), "the run")
        rt.flush()
    with reopen_store() as store:
        store.put_schedule(replace(store.get_schedule("wk"), last_due_ms=rec.last_due_ms, fired=0))
    with Runtime(store=reopen_store()) as rt:
        rt.register(quick())  # fires the same due time again
        wait_for(lambda: rt.store.get_schedule("wk").last_due_ms > rec.last_due_ms, "the firing recorded")
        [again] = rt.runs()
        assert again == first  # the same run, untouched: not started twice
        assert rt.schedules()[0].fired == 0 and rt.schedules()[0].last_run_id == first.run_id


def test_schedule_again_is_idempotent_and_a_change_keeps_the_history(rt):
    rt.register(quick())
    rt.schedule("job", "q", every_s=3600)
    before = rt.store.get_schedule("job")
    rt.schedule("job", "q", every_s=3600)
    assert rt.store.get_schedule("job") == before
    changed = rt.schedule("job", "q", every_s=7200, input={"n": 2}, catch_up="one")
    after = rt.store.get_schedule("job")
    assert after.version == before.version + 1 and after.created_ms == before.created_ms
    assert changed.every_s == 7200 and changed.input == {"n": 2} and changed.catch_up == "one"


def test_a_schedule_of_an_unregistered_workflow_waits_for_its_registration(rt):
    s = rt.schedule("tick", "q", every_s=0.2, input={"nope": 1})  # input unchecked: no schema here
    assert not s.armed
    time.sleep(0.5)
    assert rt.runs() == []
    rt.register(quick())
    # its input does not fit the workflow: each firing is refused and recorded, firing goes on
    wait_for(lambda: rt.schedules()[0].last_error and rt.store.get_schedule("tick").last_due_ms, "a refusal")
    assert "UnknownChannelError" in rt.schedules()[0].last_error and rt.runs() == []
    rt.schedule("tick", "q", every_s=0.2, input={"n": 1})  # fixed
    wait_for(lambda: rt.runs(status="done"), "a run once fixed")
    assert rt.schedules()[0].last_error is None


def test_fire_schedules_false_arms_nothing(tmp_path):
    with Runtime(store=MemoryStore()) as rt:
        rt.fire_schedules = False
        rt.register(quick())
        assert not rt.schedule("tick", "q", every_s=0.2).armed
        time.sleep(0.5)
        assert rt.runs() == []


def test_a_closed_runtime_fires_nothing_and_says_so(reopen_store, caplog):
    rt = Runtime(store=reopen_store())
    rt.register(quick())
    rt.schedule("tick", "q", every_s=0.1)
    wait_for(lambda: rt.runs(), "a run")
    with caplog.at_level(logging.WARNING, logger="atomr"):
        rt.close()
        time.sleep(0.3)
    assert not [r for r in caplog.records if r.name == "atomr.schedules"], caplog.text
    with pytest.raises(RuntimeClosed):
        rt.schedule("tick", "q", every_s=1)
    with pytest.raises(RuntimeClosed):
        rt.schedules()
    with reopen_store() as store:  # the schedule is kept for the next runtime
        assert [r.schedule_id for r in store.list_schedules()] == ["tick"]
