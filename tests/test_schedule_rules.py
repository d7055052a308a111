"""Schedules as pure functions: due times (every_s and cron, UTC) from a fixed "now",
what fires after downtime, run ids, redefinition, the stored record."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from atomr.actors.cron_rules import (
    Schedule,
    ScheduleError,
    check_cron,
    define,
    describe,
    due_text,
    latest_due_ms,
    merge,
    next_due_ms,
    plan,
    run_id_for,
)
from atomr.errors import AtomrError, CodecError, StoreError
from atomr.store import format as fmt
from atomr.store.schedules import ScheduleRecord


def ms(*args: int) -> int:
    """Epoch ms of a UTC date and time."""
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def every(s: float, **kw) -> ScheduleRecord:
    return ScheduleRecord("job", "wf", None, round(s * 1000), {}, **kw)


def cron(expr: str, **kw) -> ScheduleRecord:
    return ScheduleRecord("job", "wf", expr, None, {}, **kw)


NOW = ms(2026, 11, 25, 10, 7, 30)  # a Wednesday


def test_every_due_times_are_multiples_of_the_interval_since_the_epoch():
    assert next_due_ms(every(60), NOW) == ms(2026, 11, 25, 10, 8, 0)
    assert next_due_ms(every(60), ms(2026, 11, 25, 10, 8, 0)) == ms(2026, 11, 25, 10, 9, 0)  # strictly after
    assert next_due_ms(every(3600), NOW) == ms(2026, 11, 25, 11, 0, 0)
    assert next_due_ms(every(0.2), 1_000_050) == 1_000_200
    assert latest_due_ms(every(60), NOW) == ms(2026, 11, 25, 10, 7, 0)
    assert latest_due_ms(every(60), ms(2026, 11, 25, 10, 7, 0)) == ms(2026, 11, 25, 10, 7, 0)  # at or before


@pytest.mark.parametrize("expr, after, expected", [
    ("*/5 * * * *", NOW, ms(2026, 11, 25, 10, 10)),
    ("*/5 * * * *", ms(2026, 11, 25, 10, 10), ms(2026, 11, 25, 10, 15)),      # strictly after
    ("0 2 * * *", NOW, ms(2026, 11, 26, 2, 0)),                                 # UTC
    ("@daily", NOW, ms(2026, 11, 26, 0, 0)),
    ("@hourly", NOW, ms(2026, 11, 25, 11, 0)),
    ("0 9 * * mon-fri", ms(2026, 11, 28, 12, 0), ms(2026, 11, 30, 9, 0)),      # Saturday -> Monday
    ("30 4 1 * *", NOW, ms(2026, 12, 1, 4, 30)),
])
def test_cron_due_times_from_a_fixed_now(expr, after, expected):
    assert next_due_ms(cron(expr), after) == expected


def test_cron_latest_due_time_is_at_or_before():
    assert latest_due_ms(cron("*/5 * * * *"), NOW) == ms(2026, 11, 25, 10, 5)
    assert latest_due_ms(cron("*/5 * * * *"), ms(2026, 11, 25, 10, 5)) == ms(2026, 11, 25, 10, 5)
    assert latest_due_ms(cron("0 2 * * *"), NOW) == ms(2026, 11, 25, 2, 0)


def test_plan_without_downtime_is_the_next_due_time():
    rec = every(60, created_ms=NOW - 10_000)
    assert plan(rec, NOW) == ms(2026, 11, 25, 10, 8)
    fired = replace(rec, last_due_ms=ms(2026, 11, 25, 10, 7))
    assert plan(fired, NOW) == ms(2026, 11, 25, 10, 8)


@pytest.mark.parametrize("rule", [every(3600), cron("0 * * * *")])
def test_plan_after_downtime_follows_catch_up(rule):
    three_hours_ago = ms(2026, 11, 25, 7, 0)
    none = replace(rule, last_due_ms=three_hours_ago, catch_up="none")
    one = replace(rule, last_due_ms=three_hours_ago, catch_up="one")
    assert plan(none, NOW) == ms(2026, 11, 25, 11, 0)        # missed 8, 9, 10 o'clock: wait for 11
    assert plan(one, NOW) == ms(2026, 11, 25, 10, 0)         # one run, at once, for the latest missed
    assert plan(replace(one, last_due_ms=ms(2026, 11, 25, 10, 0)), NOW) == ms(2026, 11, 25, 11, 0)
    # never fired: the baseline is its creation
    created = replace(rule, created_ms=three_hours_ago + 1, catch_up="one")
    assert plan(created, NOW) == ms(2026, 11, 25, 10, 0)


def test_run_ids_are_the_schedule_and_the_due_time_and_sort_by_time():
    assert run_id_for(cron("0 2 * * *"), ms(2026, 11, 26, 2, 0)) == "job@2026-11-26T02:00:00Z"
    assert run_id_for(every(60), ms(2026, 11, 26, 2, 1)) == "job@2026-11-26T02:01:00Z"
    fast = every(0.2)
    ids = [run_id_for(fast, t) for t in range(ms(2026, 1, 1, 0, 0), ms(2026, 1, 1, 0, 0, 3), 200)]
    assert ids[5] == "job@2026-01-01T00:00:01.000Z" and ids == sorted(ids)
    assert due_text(fast, ms(2026, 1, 1, 0, 0, 1) + 200) == "2026-01-01T00:00:01.200Z"


def test_define_checks_every_argument_and_names_it():
    ok = define("job", "wf", every_s=60, input={"n": 1}, now_ms=NOW)
    assert (ok.every_ms, ok.cron, ok.input, ok.overlap, ok.catch_up, ok.created_ms) == (60_000, None, {"n": 1},
                                                                                       "skip", "none", NOW)
    cases = [
        (dict(), "exactly one of cron"),
        (dict(cron="* * * * *", every_s=5), "exactly one of cron"),
        (dict(every_s=0), "every_s"), (dict(every_s=-1), "every_s"), (dict(every_s=float("nan")), "every_s"),
        (dict(every_s=True), "every_s"), (dict(every_s="60"), "every_s"), (dict(every_s=1e12), "every_s"),
        (dict(cron="61 * * * *"), "minute field '61'"),
        (dict(cron="* 24 * * *"), "hour field '24'"),
        (dict(cron="* * 32 * *"), "day-of-month field '32'"),
        (dict(cron="* * * 13 *"), "month field '13'"),
        (dict(cron="* * * * funday"), "day-of-week field 'funday'"),
        (dict(cron="* * * *"), "4 fields, expected 5"),
        (dict(cron="0 * * * * *"), "6 fields, expected 5"),
        (dict(cron="@sometimes"), "not a known alias"),
        (dict(cron="0 0 30 2 *"), "never fires"),
        (dict(cron=5), "cron must be a cron expression"),
        (dict(every_s=5, overlap="sometimes"), "overlap must be one of"),
        (dict(every_s=5, catch_up="all"), "catch_up must be one of"),
        (dict(every_s=5, input=[1]), "input must be a mapping"),
        (dict(every_s=5, input={"n": object()}), "schedule input"),
        (dict(every_s=5, meta={"schedule": 1}), "reserved"),
    ]
    for kw, words in cases:
        with pytest.raises(ScheduleError, match=None) as info:
            define("job", "wf", **kw)
        assert words in str(info.value), (kw, str(info.value))
        assert isinstance(info.value, AtomrError)
    for sid, words in [("", "non-empty"), (5, "non-empty"), ("a/b", "'/'"), ("x" * 201, "at most 200"),
                       ("\ud800", "UTF-8")]:
        with pytest.raises(ScheduleError, match=words):
            define(sid, "wf", every_s=5)
    with pytest.raises(ScheduleError, match="too long"):
        define("x" * 200, "w" * 300, every_s=5)


def test_a_missing_croniter_is_a_clear_error_and_every_s_needs_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "croniter", None)  # import croniter -> ImportError
    with pytest.raises(ScheduleError, match="pip install croniter"):
        check_cron("*/5 * * * *")
    assert define("job", "wf", every_s=5).every_ms == 5000
    shown = describe(cron("0 2 * * *"), NOW)
    assert shown.next_due is None and "croniter" in shown.last_error


def test_merge_keeps_the_firing_state_and_counts_versions():
    old = replace(define("job", "wf", every_s=60, now_ms=NOW), last_due_ms=NOW, fired=3, last_run_id="r")
    assert merge(None, old) is old
    assert merge(old, define("job", "wf", every_s=60, now_ms=NOW + 5)) is old      # nothing changed
    new = merge(old, define("job", "wf", every_s=30, input={"a": 1}, now_ms=NOW + 5))
    assert (new.every_ms, new.input, new.version, new.fired, new.last_due_ms, new.created_ms) == (
        30_000, {"a": 1}, 2, 3, NOW, NOW)


def test_describe_in_seconds_and_as_json():
    rec = replace(every(60, created_ms=NOW), last_due_ms=ms(2026, 11, 25, 10, 7), last_fired_ms=NOW,
                  last_run_id="job@2026-11-25T10:07:00Z", fired=1)
    s = describe(rec, NOW, armed=True)
    assert isinstance(s, Schedule) and s.every_s == 60.0 and s.next_due == ms(2026, 11, 25, 10, 8) / 1000
    d = s.to_dict()
    assert d["next_due_iso"] == "2026-11-25T10:08:00Z" and d["last_due_iso"] == "2026-11-25T10:07:00Z"
    assert d["armed"] is True and d["fired"] == 1


def test_the_stored_record_round_trips_and_refuses_a_wrong_shape():
    rec = replace(define("job", "wf", cron="*/5 * * * *", input={"x": [1, 2]}, meta={"m": 1}, now_ms=NOW),
                  last_due_ms=NOW, last_run_id="job@x", fired=2, skipped=1, last_error="E: e")
    assert ScheduleRecord.from_record("job", rec.to_record()) == rec
    assert fmt.parse_schedule_key(fmt.schedule_key("jöb")) == "jöb"
    for bad in ({"workflow_id": "wf"}, [1, 2], {**_row(rec), "every_ms": 5},
                {**_row(rec), "fired": True}, {**_row(rec), "overlap": "maybe"}):
        with pytest.raises(CodecError):
            ScheduleRecord.from_record("job", fmt.encode_obj(bad))
    with pytest.raises(CodecError):
        ScheduleRecord.from_record("job", rec.to_record()[:-1] + b"\x00")  # checksum
    extra = fmt.encode_obj({**_row(rec), "added_by_a_newer_atomr": 1})
    assert ScheduleRecord.from_record("job", extra) == rec
    for sid in ("", "x" * 201):
        with pytest.raises(StoreError):
            fmt.schedule_key(sid)


def _row(rec: ScheduleRecord) -> dict:
    return fmt.decode_obj(rec.to_record())
