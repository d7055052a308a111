"""Operating atomr: retention of finished runs, start priorities, resumed runs
against max_concurrent_runs, all-or-nothing start_many — as a user meets them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from atomr import Command, Dag, Done, LastWriteWins, LmdbStore, Paused, Runtime, StateSchema, Subgraph, Workflow
from atomr.errors import AtomrError, GraphError, StartRefused
from atomr.store.base import AppendBatch
from workflows import ALL_STORES, PERSISTENT, T, reopeners

S = StateSchema({"n": (LastWriteWins(), 0), "blob": (LastWriteWins(), "")})

any_store = reopeners(*ALL_STORES)
reopen_store = reopeners(*PERSISTENT)


def wait_until(cond, timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


class Order:
    """A step that records the order runs execute in; the first run it sees may be held."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, state, ctx):
        with self.lock:
            self.seen.append(ctx.run_id)
        if ctx.run_id == "first":
            self.gate.wait(T)
        return {"n": 1}


def queue_wf(fn, limit: int = 1, **kw) -> Workflow:
    return Workflow("q", Dag.builder("a").step("a", fn).build(), S, max_concurrent_runs=limit, **kw)


# -- priorities -------------------------------------------------------------------------------


def test_higher_priority_starts_first_fifo_within_a_priority(any_store):
    order = Order()
    with Runtime(store=any_store()) as rt:
        rt.register(queue_wf(order))
        first = rt.start("q", {}, run_id="first")
        # ids sort the other way round: FIFO must not fall back to the run id
        for rid, prio in (("z-low", 0), ("y-hi", 5), ("x-low", 0), ("w-mid", 1), ("v-hi", 5)):
            rt.start("q", {}, run_id=rid, priority=prio)
        rt.start_many("q", [{}, {}], ["u-neg", "t-neg"], priority=-1)
        assert {s.run_id for s in rt.runs(status="queued")} == {
            "z-low", "y-hi", "x-low", "w-mid", "v-hi", "u-neg", "t-neg"}
        assert rt.get_state("q", "y-hi").meta["atomr_queue"][0] == 5
        order.gate.set()
        assert isinstance(first.result(timeout=T), Done)
        assert wait_until(lambda: len(order.seen) == 8 and not rt.runs(status="queued"))
        assert wait_until(lambda: all(s.status == "done" for s in rt.runs()))
    assert order.seen == ["first", "y-hi", "v-hi", "w-mid", "z-low", "x-low", "u-neg", "t-neg"]


def test_the_queue_order_survives_a_restart(reopen_store):
    order = Order()
    rt = Runtime(store=reopen_store())
    rt.register(queue_wf(order))
    rt.start("q", {}, run_id="first")
    for rid, prio in (("d", 0), ("c", 2), ("b", 0), ("a", 2)):
        rt.start("q", {}, run_id=rid, priority=prio)
    rt.close(timeout=0.5)  # "first" stays running, the others queued
    order.gate.set()
    with Runtime(store=reopen_store()) as rt2:
        rt2.register(queue_wf(order))
        rt2.recover()
        assert wait_until(lambda: sum(s.status == "done" for s in rt2.runs()) == 5)
    assert order.seen[-4:] == ["c", "a", "d", "b"]


def test_a_priority_that_is_not_an_int_is_refused_and_starts_nothing(any_store):
    with Runtime(store=any_store()) as rt:
        rt.register(queue_wf(Order()))
        for bad in ("high", 1.5, True, None, 2**40):
            with pytest.raises(AtomrError, match="priority must be an int"):
                rt.start("q", {}, run_id="r", priority=bad)
            with pytest.raises(AtomrError, match="priority must be an int"):
                rt.start_many("q", [{}, {}], priority=bad)
        with pytest.raises(AtomrError, match="priority must be an int"):
            asyncio.run(rt.astart("q", {}, priority="high"))
        with pytest.raises(AtomrError, match="reserved"):
            rt.start("q", {}, meta={"atomr_queue": [9, 0]})
        assert rt.runs() == []


def test_astart_and_astart_many_take_a_priority(any_store):
    order = Order()
    with Runtime(store=any_store()) as rt:
        rt.register(queue_wf(order))

        async def main() -> None:
            await rt.astart("q", {}, run_id="first")
            await rt.astart_many("q", [{}, {}], ["m1", "m2"])
            await rt.astart("q", {}, run_id="top", priority=9)

        asyncio.run(main())
        order.gate.set()
        assert wait_until(lambda: len(order.seen) == 4)
    assert order.seen == ["first", "top", "m1", "m2"]


def test_a_resumed_paused_run_counts_against_max_concurrent_runs(any_store):
    busy, peak, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def ask(state, ctx):
        if ctx.run_id == "asker":
            ctx.interrupt("go on?")
        return {"n": 1}

    def hold(state, ctx):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        if ctx.run_id == "holder":
            gate.wait(T)
        with lock:
            busy[0] -= 1
        return {"n": 2}

    wf = Workflow("q", Dag.builder("a").step("a", ask).step("b", hold).edge("a", "b").build(), S,
                  max_concurrent_runs=1)
    with Runtime(store=any_store()) as rt:
        rt.register(wf)
        assert isinstance(rt.start("q", {}, run_id="asker").result(timeout=T), Paused)
        holder = rt.start("q", {}, run_id="holder")
        assert wait_until(lambda: busy[0] == 1)
        resumed = rt.resume("q", "asker", Command(resume="yes"))
        assert rt.get_state("q", "asker").status == "queued"  # waits for the holder's slot
        gate.set()
        assert isinstance(holder.result(timeout=T), Done)
        out = resumed.result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 2
    assert peak[0] == 1


def test_a_queued_run_still_stops_at_its_first_breakpoint(any_store):
    gate = threading.Event()

    def a(state, ctx):
        if ctx.run_id == "holder":
            gate.wait(T)
        return {"n": 1}

    wf = Workflow("q", Dag.builder("a").step("a", a).build(), S, max_concurrent_runs=1, interrupt_before=["a"])
    with Runtime(store=any_store()) as rt:
        rt.register(wf)
        assert isinstance(rt.start("q", {}, run_id="holder").result(timeout=T), Paused)
        holder = rt.resume("q", "holder", Command())  # executes "a": holds the slot
        h = rt.start("q", {}, run_id="two")
        assert rt.get_state("q", "two").status == "queued"
        gate.set()
        assert isinstance(holder.result(timeout=T), Done)
        out = h.result(timeout=T)  # admitted: it stops before "a" as a run started at once does
        assert isinstance(out, Paused) and out.reason == "before" and out.steps == ["a"], out


# -- start_many: all or nothing ----------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_start_many_starts_none_when_one_run_does_not_fit(tmp_path, durability):
    calls: list[str] = []

    def step(state, ctx):
        calls.append(ctx.run_id)
        return {"n": 1}

    wf = Workflow("w", Dag.builder("a").step("a", step).build(), S)
    store = LmdbStore(str(tmp_path / "s"), map_size=1 << 20, max_map_size=1 << 20)
    with Runtime(store=store, durability=durability) as rt:
        rt.register(wf)
        big = "x" * (3 << 20)
        with pytest.raises(StartRefused, match=r"run w/huge .*none of the 3 runs was started") as got:
            rt.start_many("w", [{"blob": "a"}, {"blob": big}, {"blob": "c"}], ["small-1", "huge", "small-2"])
        assert got.value.run_id == "huge" and got.value.count == 3
        time.sleep(0.3)
        assert rt.runs() == [] and calls == []
        # the store is fine: a batch that fits starts whole
        hs = rt.start_many("w", [{}, {}], ["ok-1", "ok-2"])
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
        assert sorted(s.run_id for s in rt.runs()) == ["ok-1", "ok-2"]


def _batch(run_id: str, first_seq: int = 1) -> AppendBatch:
    from atomr import events as ev
    from atomr.store import format as fmt

    return AppendBatch("g", run_id, first_seq, [fmt.encode_event(ev.RunStarted({}, {}, 1))], status="running")


def test_a_refused_group_writes_none_of_its_batches_and_spares_the_others(any_store):
    store = any_store()
    try:
        assert store.write([_batch("taken")]) == [None]
        results = store.write(
            [_batch("lone-1"), _batch("g1"), _batch("taken"), _batch("lone-2"), _batch("g2"), _batch("h1")],
            groups=[-1, 0, 0, -1, 0, 1])
        assert results[0] is None and results[3] is None and results[5] is None
        assert all(results[i] is not None for i in (1, 2, 4))
        assert store.summary("g", "g1") is None and store.summary("g", "g2") is None
        assert {s.run_id for s in store.runs()} == {"taken", "lone-1", "lone-2", "h1"}
    finally:
        store.close()


def test_start_many_with_attach_still_starts_the_new_ones(any_store):
    with Runtime(store=any_store()) as rt:
        rt.register(queue_wf(lambda s, c: {"n": 1}, limit=10))
        rt.start("q", {}, run_id="old").result(timeout=T)
        hs = rt.start_many("q", [{}, {}, {}], ["old", "new-1", "new-2"], if_exists="attach")
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
        assert sorted(s.run_id for s in rt.runs()) == ["new-1", "new-2", "old"]


# -- retention ---------------------------------------------------------------------------------


def test_retention_must_be_a_positive_number():
    dag = Dag.builder("a").step("a", lambda s, c: {}).build()
    for bad in (0, -1, "1d", True, float("nan")):
        with pytest.raises(GraphError, match="retention_s"):
            Workflow("r", dag, S, retention_s=bad)
    assert Workflow("r", dag, S, retention_s=0.5).retention_s == 0.5
    assert Workflow("r", dag, S).retention_s is None


def test_finished_runs_are_purged_and_live_ones_survive(any_store):
    gate = threading.Event()

    def step(state, ctx):
        if ctx.run_id == "boom":
            raise ValueError("boom")
        if ctx.run_id == "ask":
            ctx.interrupt("ok?")
        if ctx.run_id == "live":
            gate.wait(T)
        return {"n": 1}

    wf = Workflow("ret", Dag.builder("a").step("a", step).build(), S, retention_s=0.4)
    keep = Workflow("keep", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(), S)
    with Runtime(store=any_store()) as rt:
        rt.register(wf)
        rt.register(keep)
        rt.start("ret", {}, run_id="done").result(timeout=T)
        rt.start("ret", {}, run_id="boom").result(timeout=T)
        rt.start("ret", {}, run_id="ask").result(timeout=T)
        live = rt.start("ret", {}, run_id="live")
        rt.start("keep", {}, run_id="kept").result(timeout=T)
        rt.start("ret", {}, run_id="gone").result(timeout=T)
        assert wait_until(lambda: {s.run_id for s in rt.runs()} == {"ask", "live", "kept"})
        time.sleep(1.0)  # several ticks later: the paused and the running runs are still there
        assert {s.run_id for s in rt.runs()} == {"ask", "live", "kept"}
        gate.set()
        assert isinstance(live.result(timeout=T), Done)
        rt.cancel("ret", "ask")
        assert wait_until(lambda: {s.run_id for s in rt.runs()} == {"kept"})
        assert rt._retention.purged == 5


def test_a_subgraph_child_is_kept_while_its_parent_is_stored(any_store):
    child = Workflow("child", Dag.builder("c").step("c", lambda s, c: {"n": 1}).build(), S, retention_s=0.2)
    parent = Workflow("parent", Dag.builder("p").step("p", Subgraph(child, inputs=["n"], outputs=["n"])).build(), S)
    with Runtime(store=any_store()) as rt:
        rt.register(parent)
        assert isinstance(rt.start("parent", {}, run_id="p1").result(timeout=T), Done)
        assert {s.workflow_id for s in rt.runs()} == {"parent", "child"}
        time.sleep(1.0)
        assert {s.workflow_id for s in rt.runs()} == {"parent", "child"}  # its parent first
        rt.delete("parent", "p1")
        assert wait_until(lambda: rt.runs() == [])


def test_a_queued_run_is_never_purged(any_store):
    order = Order()
    with Runtime(store=any_store()) as rt:
        rt.register(queue_wf(order, retention_s=0.2))
        first = rt.start("q", {}, run_id="first")
        rt.start("q", {}, run_id="waiting")
        time.sleep(1.0)
        assert {s.run_id: s.status for s in rt.runs()} == {"first": "running", "waiting": "queued"}
        order.gate.set()
        first.result(timeout=T)
        assert wait_until(lambda: rt.runs() == [])


# -- the CLI and the HTTP API -----------------------------------------------------------------


def test_cli_run_takes_a_priority(tmp_path):
    import json

    from test_cli import BIG_ORDER, ORDER, atomr, error_line, ok

    ok(atomr(tmp_path, "run", ORDER, "--run-id", "p", "--input", BIG_ORDER, "--priority", "7"), 3)
    shown = json.loads(ok(atomr(tmp_path, "show", "orders", "p", "--json")))
    assert shown["meta"]["atomr_queue"][0] == 7
    assert "--priority" in error_line(atomr(tmp_path, "run", ORDER, "--priority", "high"))


def test_http_start_takes_a_priority():
    import httpx

    from test_server_support import serve

    with serve() as (srv, rt), httpx.Client(base_url=srv.url, timeout=T) as c:
        url = "/api/workflows/approval/runs"
        r = c.post(url, json={"input": {"topic": "t"}, "run_id": "hp", "priority": 4})
        assert r.status_code == 201, r.text
        assert rt.get_state("approval", "hp").meta["atomr_queue"][0] == 4
        for bad in ("high", 1.5, True):
            r = c.post(url, json={"input": {"topic": "t"}, "priority": bad})
            assert r.status_code == 400 and "priority" in r.json()["message"], r.text
        r = c.post(url, json={"input": {"topic": "t"}, "priority": 2**40})
        assert r.status_code == 400 and r.json()["error"] == "AtomrError", r.text
        assert [s.run_id for s in rt.runs()] == ["hp"]


sql_store = reopeners("sqlite", "postgres")


def test_two_workers_purge_one_store_without_racing(sql_store):
    wf = Workflow("ret", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(), S, retention_s=0.3)
    with Runtime(store=sql_store()) as a, Runtime(store=sql_store()) as b:
        a.register(wf)
        b.register(wf)
        hs = a.start_many("ret", [{}] * 30) + b.start_many("ret", [{}] * 30)
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
        purged = lambda: a._retention.purged + b._retention.purged  # noqa: E731
        assert wait_until(lambda: a.runs() == [] and purged() >= 60)  # (counted once the delete returns)
        time.sleep(0.5)
        assert purged() == 60  # each run deleted once


def test_a_conditional_delete_leaves_a_run_that_moved_on(sql_store):
    store = sql_store()
    try:
        assert store.write([_batch("r")]) == [None]  # a running run
        assert store.delete_run("g", "r", only_if=(["done", "failed"], 2**62)) is False
        assert store.summary("g", "r") is not None and list(store.journal("g", "r"))
        assert store.delete_run("g", "r", only_if=(["running"], 2**62)) is True
        assert store.summary("g", "r") is None and not list(store.journal("g", "r"))
    finally:
        store.close()


def _race_batches(rt: Runtime, other: Runtime, refused: list[str]) -> None:
    """Two start_many calls, from ``rt`` and ``other``, share one run id: one starts whole,
    the other not at all."""
    from atomr.errors import RunExists

    wf = Workflow("w", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(), S)
    for rt_ in {id(r): r for r in (rt, other)}.values():
        rt_.register(wf)
    for i in range(5):
        go = threading.Barrier(2, timeout=T)
        got: dict[str, object] = {}

        def batch(name: str) -> None:
            go.wait()
            try:
                got[name] = runtime_of[name].start_many(
                    "w", [{}] * 3, [f"{name}{i}-1", f"shared{i}", f"{name}{i}-2"])
            except (StartRefused, RunExists) as exc:
                got[name] = exc

        ts = [threading.Thread(target=batch, args=(n,)) for n in ("a", "b")]
        runtime_of = {"a": rt, "b": other}
        for t in ts:
            t.start()
        for t in ts:
            t.join(T)
        won = [n for n in ("a", "b") if isinstance(got[n], list)]
        assert len(won) == 1, got
        lost = "b" if won == ["a"] else "a"
        if isinstance(got[lost], StartRefused):
            assert got[lost].run_id == f"shared{i}", got[lost]
            refused.append(lost)
        for h in got[won[0]]:
            assert isinstance(h.result(timeout=T), Done)
        ids = {s.run_id for s in rt.runs()}
        assert {f"{won[0]}{i}-1", f"{won[0]}{i}-2", f"shared{i}"} <= ids
        assert not {f"{lost}{i}-1", f"{lost}{i}-2"} & ids


def test_two_batches_racing_for_one_run_id_one_starts_whole_the_other_not_at_all(any_store):
    with Runtime(store=any_store()) as rt:
        _race_batches(rt, rt, [])


def test_two_workers_batches_racing_for_one_run_id_in_the_store(sql_store):
    refused: list[str] = []
    with Runtime(store=sql_store()) as a, Runtime(store=sql_store()) as b:
        _race_batches(a, b, refused)
    assert refused  # the store refused a whole batch at least once (not only the up-front check)


def test_a_backlog_is_purged_a_batch_at_a_time(tmp_path):
    from atomr import _retention

    wf = Workflow("ret", Dag.builder("a").step("a", lambda s, c: {"n": 1}).build(), S)
    with Runtime(store=LmdbStore(str(tmp_path / "s"))) as rt:
        rt.register(wf)
        hs = rt.start_many("ret", [{}] * 250)
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)
    time.sleep(0.1)
    kept = Workflow("ret", wf.dag, S, retention_s=0.05)
    with Runtime(store=LmdbStore(str(tmp_path / "s"))) as rt:
        by_hand = _retention.Retention(rt)
        by_hand._wfs["ret"] = kept  # no thread: one tick, when asked
        assert by_hand.tick() == _retention.BATCH
        assert len(rt.runs()) == 250 - _retention.BATCH
        rt.register(kept)  # the background thread: the rest goes
        assert wait_until(lambda: rt.runs() == [])


def test_a_queued_resume_keeps_the_next_breakpoint(any_store):
    gate = threading.Event()

    def a(state, ctx):
        if ctx.run_id == "holder":
            gate.wait(T)
        return {"n": 1}

    wf = Workflow("q", Dag.builder("a").step("a", a).step("b", lambda s, c: {"n": 2}).edge("a", "b").build(), S,
                  max_concurrent_runs=1, interrupt_after=["a"], interrupt_before=["b"])
    with Runtime(store=any_store()) as rt:
        rt.register(wf)
        out = rt.start("q", {}, run_id="x").result(timeout=T)
        assert isinstance(out, Paused) and out.reason == "after"
        holder = rt.start("q", {}, run_id="holder")
        resumed = rt.resume("q", "x", Command())
        assert rt.get_state("q", "x").status == "queued"
        gate.set()
        assert isinstance(holder.result(timeout=T), Paused)
        out = resumed.result(timeout=T)
        assert isinstance(out, Paused) and out.reason == "before" and out.steps == ["b"], out


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_an_admit_ahead_of_the_queued_runs_own_commit_admits_it_once(any_store, durability, caplog, monkeypatch):
    """A slot is freed just as a run is queued: the admission finds the queued record in
    the store and tells the run before the run has heard that record is durable. The run
    is admitted once that answer is in (by a fresh actor): never two writers for it,
    never a run left "running" with nobody executing it."""
    from atomr.actors.checkpointer import WriterGate
    from atomr.messages import Admit

    order = Order()
    wf = queue_wf(order)
    with Runtime(store=any_store(), durability=durability) as rt:
        rt.register(wf)
        first = rt.start("q", {}, run_id="first")
        assert wait_until(lambda: order.seen == ["first"])
        real = rt.store.write

        def write(batches, *args, **kw):  # the checkpointer's thread
            out = real(batches, *args, **kw)
            if any(b.run_id == "second" and b.status == "queued" for b in batches):
                # what a racing admission does, before the checkpointer answers the run
                rt._core.supervisor.route(wf, "second", Admit())  # noqa: SLF001
                time.sleep(0.2)  # the Admit is in the run's mailbox ahead of the answer
            return out

        rt.store.write = write  # type: ignore[method-assign]
        # through the checkpointer's thread (as under load), not written in the run's own turn
        monkeypatch.setattr(WriterGate, "try_write", lambda self, store, batch: (False, None))
        second = rt.start("q", {}, run_id="second")
        out = second.result(timeout=T)
        assert isinstance(out, Done), out
        order.gate.set()
        assert isinstance(first.result(timeout=T), Done)
        rt.flush()
        assert order.seen == ["first", "second"]  # the admitted run ran once
        seqs = [seq for seq, _ in rt.store.journal("q", "second")]
        assert seqs == list(range(1, len(seqs) + 1))
        assert rt.get_state("q", "second").status == "done"
    assert "store write failed" not in caplog.text


def test_a_slot_freed_before_the_queued_record_is_committed_admits_the_run(any_store, monkeypatch):
    """A run is refused a slot; before its queued record reaches the store, the run holding
    the slot ends and frees it. The run waiting in line is admitted all the same (a release
    that read the line from the store would miss it, and it would wait for ever)."""
    from atomr.actors.admission import Admission

    order = Order()
    wf = queue_wf(order)
    real_enter = Admission.enter
    with Runtime(store=any_store()) as rt:
        rt.register(wf)
        first = rt.start("q", {}, run_id="first")
        assert wait_until(lambda: order.seen == ["first"])

        def enter(self, wf_, run_id, child=False, meta=None):  # the second run's turn
            ok = real_enter(self, wf_, run_id, child, **({} if meta is None else {"meta": meta}))
            if run_id == "second" and not ok:
                order.gate.set()  # the first run ends and frees its slot before "second" is stored queued
                assert first.result(timeout=T) is not None
                wait_until(lambda: rt.get_state("q", "first").status == "done")
                time.sleep(0.05)  # its release has looked at the line
            return ok

        monkeypatch.setattr(Admission, "enter", enter)
        second = rt.start("q", {}, run_id="second")
        assert isinstance(second.result(timeout=T), Done)
        assert order.seen == ["first", "second"]


def test_a_release_does_not_read_the_whole_queue(tmp_path):
    """With a long line, each release pops it: the store's queued runs are read once (at
    register), not at every release."""
    reads: list[str] = []
    store = LmdbStore(str(tmp_path / "s"), map_size=256 << 20)
    real_runs = store.runs

    def runs(*args, **kw):
        if kw.get("status") == "queued":
            reads.append("queued")
        return real_runs(*args, **kw)

    store.runs = runs  # type: ignore[method-assign]
    seen: list[str] = []
    wf = queue_wf(lambda state, ctx: seen.append(ctx.run_id) or {"n": 1}, limit=2)
    with Runtime(store=store, durability="async") as rt:
        rt.register(wf)
        hs = rt.start_many("q", [{} for _ in range(200)])
        for h in hs:
            assert isinstance(h.result(timeout=T), Done)
        assert len(seen) == 200 and len(set(seen)) == 200
    assert len(reads) <= 2, len(reads)  # at register, not once per release (200)
