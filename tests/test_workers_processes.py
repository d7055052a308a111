"""Workers on one shared store, as real processes killed for real (SIGKILL,
SIGSTOP / SIGCONT): takeovers, fencing, clients following runs executed
elsewhere, and a worker id that is in use — on SQLite and on Postgres.

The workers are ``python -m tests.worker_scripts.worker`` processes; the test
process is a client (``Runtime(store, execute=False)``). Every execution of a
step is recorded in a side file (see :mod:`worker_scripts.worker`), so a step
executed twice is counted, and its token (written to channel ``who``) tells
which execution the journal committed.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from worker_scripts import worker as W
from worker_scripts.harness import (
    STEPS,
    Proc,
    check_done,
    check_journal,
    committed_layers,
    executions,
    owners,
    wait_for,
    writing_stuck,
)

from atomr import Runtime, open_store
from atomr.errors import WorkerIdInUse


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: Any, tmp_path: Path) -> str:
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        u = f"postgresql://postgres@127.0.0.1:5432/test?schema={request.getfixturevalue('pg_schema')}"
    open_store(u).close()  # create the tables once, before the workers race to
    return u


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    """spawn(url, worker_id, lease_s=10, concurrency=1000, own=0) -> Proc; every one stopped after the test."""
    started: list[Proc] = []
    side = tmp_path / "side.txt"
    side.touch()

    def spawn(url: str, worker_id: str, lease_s: float = 10.0, concurrency: int = 1000, own: int = 0) -> Proc:
        p = Proc(url, worker_id, lease_s, side, concurrency, tmp_path, own)
        started.append(p)
        return p

    spawn.side = side  # type: ignore[attr-defined]
    try:
        yield spawn
    finally:
        for p in started:
            p.stop()


@pytest.fixture
def client(url: str) -> Any:
    rt = Runtime(open_store(url), execute=False)
    rt.register(W.make())
    try:
        yield rt
    finally:
        rt.close()


# -- 1. SIGKILL the busiest worker -------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_busiest_worker_its_runs_are_taken_over_once(url, procs, client):
    ws = [procs(url, f"w{i}", lease_s=10.0, concurrency=6) for i in range(3)]
    for w in ws:
        w.ready()
    store = client.store
    handles = [client.start(W.WID, {"n": 0}) for _ in range(12)]
    ids = [h.run_id for h in handles]
    wait_for(lambda: all(o is not None for o in owners(store, ids).values()), 15, "every run owned")
    # mid-run: every run has committed a layer or two, none has finished
    wait_for(lambda: all(committed_layers(store, r) >= 2 for r in ids), 15, "two layers committed")
    held = owners(store, ids)
    busiest = collections.Counter(held.values()).most_common(1)[0][0]
    victim = next(w for w in ws if w.worker_id == busiest)
    lost = [r for r in ids if held[r] == busiest]
    assert all(committed_layers(store, r) < W.N_STEPS for r in lost)
    # a client streaming one of the victim's runs keeps streaming through the takeover
    streamed: list[Any] = []
    follower = threading.Thread(
        target=lambda: streamed.extend(client.handle(W.WID, lost[0]).stream("events", after=0, timeout=30)),
        daemon=True)
    follower.start()

    killed_at = time.time()
    t0 = time.monotonic()
    victim.signal(signal.SIGKILL)
    victim.p.wait(5)
    took = wait_for(lambda: not any(o == busiest for o in owners(store, lost).values()), 10,
                    "the killed worker's runs taken over")

    for h in handles:
        check_done(h.result(timeout=30))
    total = time.monotonic() - t0
    tokens = {r: check_journal(store, r) for r in ids}

    execs = executions(procs.side)
    resumed = max(min(x["start"] for s in STEPS for x in execs[(r, s)]
                      if x["pid"] != victim.pid and x["start"] > killed_at) for r in lost) - killed_at
    twice = {k: v for k, v in execs.items() if len(v) > 1}
    for (r, s), xs in twice.items():
        assert r in lost, f"{r}/{s} ran twice but the killed worker did not hold it: {xs}"
        assert len(xs) == 2, xs
        assert xs[0]["pid"] == victim.pid and xs[0]["start"] < killed_at, xs
        assert xs[1]["pid"] != victim.pid, xs
        assert tokens[r][s] == xs[1]["token"], "the killed worker's execution was not committed"
    per_run = collections.Counter(r for r, _ in twice)
    assert all(n == 1 for n in per_run.values()), f"one step in flight per chain run: {per_run}"
    for r in ids:  # the other executions: exactly one each, and the journal committed that one
        for s in STEPS:
            if (r, s) not in twice:
                assert len(execs[(r, s)]) == 1 and tokens[r][s] == execs[(r, s)][0]["token"], (r, s)

    follower.join(30)
    assert streamed and streamed[-1].mode == "outcome", streamed[-3:]
    check_done(streamed[-1].data)
    cursors = [i.cursor for i in streamed if i.mode != "outcome"]
    assert cursors == sorted(set(cursors)), "a streamed event came twice or out of order"
    assert {w.worker_id for w in client.workers()} == {w.worker_id for w in ws if w is not victim}
    print(f"\n[{url.split(':')[0]}] SIGKILL of {busiest} holding {len(lost)}/12 runs: all taken over in "
          f"{took:.2f}s (lease 10 s), last one executing again {resumed:.2f}s after the kill, "
          f"{len(twice)} in-flight steps ran twice, all 12 Done {total:.2f}s after the kill")
    assert took < 10 and resumed < 10


# -- 2. SIGSTOP past the lease, then SIGCONT -----------------------------------------------------


def _stop_outside_a_write(proc: Proc, url: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds no write transaction (see
    SqliteStore's docstring: a worker stopped inside one holds up the others)."""
    for _ in range(20):
        proc.signal(signal.SIGSTOP)
        if not writing_stuck(url):
            return
        proc.signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("could not stop the worker outside a write transaction")


@pytest.mark.slow
def test_sigstop_past_the_lease_then_sigcont_the_worker_is_fenced_and_carries_on(url, procs, client):
    # w0, the one stopped, also starts 3 runs itself and waits on their handles
    sleeper = procs(url, "w0", lease_s=2.0, concurrency=5, own=3)
    others = [procs(url, f"w{i}", lease_s=2.0, concurrency=5) for i in (1, 2)]
    for w in (sleeper, *others):
        w.ready()
    store = client.store
    handles = [client.start(W.WID, {"n": 0}) for _ in range(6)]
    wait_for(lambda: len(store.runs(workflow_id=W.WID)) == 9, 15, "nine runs started")
    ids = [s.run_id for s in store.runs(workflow_id=W.WID)]
    wait_for(lambda: all(o is not None for o in owners(store, ids).values()), 15, "every run owned")
    wait_for(lambda: all(committed_layers(store, r) >= 1 for r in ids), 15, "a layer committed")

    _stop_outside_a_write(sleeper, url)
    lost = [r for r, o in owners(store, ids).items() if o == "w0"]
    assert len(lost) >= 3, "the stopped worker holds its own runs at least"
    took = wait_for(lambda: not any(o == "w0" for o in owners(store, lost).values()), 15,
                    "the stopped worker's runs taken over")
    for h in handles:
        check_done(h.result(timeout=30))
    for r in ids:
        check_done(client.handle(W.WID, r).result(timeout=30))
    journals = {r: list(store.journal(W.WID, r)) for r in ids}
    assert not [w for w in client.workers() if w.worker_id == "w0" and w.alive]

    woke_at = time.time()
    sleeper.signal(signal.SIGCONT)
    # it comes back: heartbeats again (alive), owns nothing, wrote nothing
    wait_for(lambda: any(w.worker_id == "w0" and w.alive for w in client.workers()), 10,
             "the woken worker heartbeats again")
    # the handles in its own process get the outcome of the runs the others finished
    said = [sleeper.line(20) for _ in range(3)]
    assert all(x.startswith("outcome ") for x in said), said
    outcomes = dict(x.split(" ", 2)[1:] for x in said)
    time.sleep(0.5)  # whatever else was in flight there tries to commit
    assert {r: list(store.journal(W.WID, r)) for r in ids} == journals, "a fenced worker wrote"
    assert all(o is None for o in owners(store, ids).values())
    for r in ids:
        tokens = check_journal(store, r)
        late = [x for xs in executions(procs.side).values() for x in xs
                if x["pid"] == sleeper.pid and x["run"] == r and (x["end"] or 0) > woke_at]
        assert not [x for x in late if tokens[x["step"]] == x["token"]], "a fenced execution was committed"
    assert sleeper.p.poll() is None

    # a healthy worker again: with the others gone, it executes new runs alone
    for w in others:
        w.stop()
    fresh = [client.start(W.WID, {"n": 0}) for _ in range(3)]
    for h in fresh:
        out = h.result(timeout=30)
        check_done(out)
        assert out.state["who"].startswith(f"{sleeper.pid}:")
        check_journal(store, h.run_id)
    err = sleeper.stderr()
    print(f"\n[{url.split(':')[0]}] SIGSTOP of w0 holding {len(lost)}/9 runs (lease 2 s): taken over "
          f"{took:.2f}s after the stop; after SIGCONT: {err.count('this worker dropped it')} handed over, "
          f"{err.count('store write failed')} refused as plain store errors; its own handles: {outcomes}")
    assert took < 10
    assert "store write failed" not in err, err  # fenced writes end as OwnershipLost, not store errors
    assert outcomes == {r: f"Done {W.N_STEPS}" for r in outcomes}, outcomes
    assert 1 <= err.count("this worker dropped it") <= len(lost), err


# -- 3. a client following a run executed in another process -------------------------------------


def _collect(into: list[Any], items: Any) -> None:
    try:
        into.extend(items)
    except Exception as exc:  # noqa: BLE001 - looked at by the test
        into.append(exc)


def test_clients_wait_for_and_stream_a_run_executed_by_a_worker_process(url, procs, client):
    w = procs(url, "only", lease_s=10.0).ready()
    h = client.start(W.WID, {"n": 0})
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(h.result(timeout=30)), daemon=True)
    waiter.start()
    # a second client, in a store object of its own, follows the same run: its stream
    # replays the journal from the start, then goes on live
    with Runtime(open_store(url), execute=False) as other:
        other.register(W.make())
        wait_for(lambda: committed_layers(other.store, h.run_id) >= 1, 15, "a layer committed")
        streamed = list(other.handle(W.WID, h.run_id).stream(["events", "values"], after=0, timeout=30))
        waiter.join(30)
        check_done(other.handle(W.WID, h.run_id).result(timeout=10))

    assert len(outcome) == 1
    check_done(outcome[0])
    assert outcome[0].state["who"].startswith(f"{w.pid}:")  # executed over there
    assert streamed[-1].mode == "outcome"
    check_done(streamed[-1].data)
    events = [i.data for i in streamed if i.mode == "events"]
    for kind in ("started", "completed"):
        assert [e.step for e in events if e.kind == kind] == STEPS, [(e.kind, e.step) for e in events]
    assert [i.data["n"] for i in streamed if i.mode == "values"][-1] == W.N_STEPS
    cursors = [i.cursor for i in streamed if i.mode == "events"]
    assert cursors == sorted(set(cursors))
    check_journal(client.store, h.run_id)


@pytest.mark.slow
def test_a_client_streams_the_run_it_just_started(url, procs, client):
    procs(url, "only", lease_s=10.0).ready()
    h = client.start(W.WID, {"n": 0})
    streamed: list[Any] = []
    _collect(streamed, h.stream("events", timeout=5))
    events: list[Any] = []
    _collect(events, h.events(timeout=5))
    check_done(h.result(timeout=30))
    assert streamed and not isinstance(streamed[-1], Exception), streamed[-1:]
    assert [i.data.step for i in streamed if i.mode == "events" and i.data.kind == "completed"] == STEPS
    assert [e.step for e in events if e.kind == "completed"] == STEPS, events


# -- 4. one worker id, one live process ------------------------------------------------------------


@pytest.mark.slow
def test_a_second_process_with_a_live_worker_id_is_refused(url, procs, tmp_path):
    first = procs(url, "dup", lease_s=10.0).ready()
    second = procs(url, "dup", lease_s=10.0)
    line = second.line()
    assert line.startswith("refused WorkerIdInUse"), (line, second.stderr())
    assert second.p.wait(10) == 3
    with pytest.raises(WorkerIdInUse):
        Runtime(open_store(url), worker_id="dup")
    # the first carries on as "dup"
    with Runtime(open_store(url), execute=False) as c:
        c.register(W.make())
        assert [w.pid for w in c.workers() if w.worker_id == "dup"] == [first.pid]
        check_done(c.start(W.WID, {"n": 0}).result(timeout=30))
        # once it is dead, the id is free again
        first.signal(signal.SIGKILL)
        first.p.wait(5)
        third = procs(url, "dup", lease_s=10.0).ready()
        wait_for(lambda: [w.pid for w in c.workers() if w.worker_id == "dup"] == [third.pid], 10,
                 "the new process is worker dup")
        check_done(c.start(W.WID, {"n": 0}).result(timeout=30))
