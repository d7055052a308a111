"""Where features meet: turns in a start_many, turns and typed state, a turn's
priority, a Subgraph child of a limited workflow, retention of a Loop's
iteration runs."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from atomr import (Command, Dag, Done, LastWriteWins, Loop, MemoryStore, Runtime, StateSchema, Subgraph,
                   Workflow)
from atomr.errors import RunNotContinuable, StartRefused
from workflows import T, wait_for

S = StateSchema({"n": LastWriteWins()})


def _until(cond, timeout: float = T) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _one(wid: str, **kw) -> Workflow:
    return Workflow(wid, Dag.builder("a").step("a", lambda s, c: {"n": (s.get("n") or 0) + 1}).build(), S, **kw)


def test_a_refused_turn_in_a_start_many_refuses_the_batch_and_leaves_no_run_waiting(tmp_path):
    store_path = str(tmp_path / "s")
    from atomr import LmdbStore

    with Runtime(store=LmdbStore(store_path)) as rt:
        rt.register(_one("w", version="1"))
        assert isinstance(rt.start("w", {}, run_id="a").result(timeout=T), Done)
    with Runtime(store=LmdbStore(store_path)) as rt:
        rt.register(_one("w", version="2"))
        with pytest.raises(StartRefused, match="run w/a .*VersionMismatch"):
            hs = rt.start_many("w", [{}, {}], ["b", "a"], if_exists="continue", timeout=T)
            for h in hs:
                h.result(timeout=T)
        assert _until(lambda: rt.live_runs() == 0), rt.live_runs()
        assert rt.store.summary("w", "b") is None  # none of the batch was written


def test_a_turn_of_a_typed_run_needs_only_what_it_adds():
    @dataclasses.dataclass
    class Chat:
        user: str
        msg: str = ""

    wf = Workflow("chat", Dag.builder("a").step("a", lambda s, c: {"msg": s.msg + "!"}).build(),
                  StateSchema.from_type(Chat))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        assert isinstance(rt.start("chat", {"user": "u", "msg": "hi"}, run_id="t").result(timeout=T), Done)
        out = rt.start("chat", {"msg": "again"}, run_id="t", if_exists="continue").result(timeout=T)
        assert isinstance(out, Done) and out.state["user"] == "u" and out.state["msg"] == "again!"


def test_a_queued_turn_waits_by_its_own_priority():
    gate, order = threading.Event(), []

    def step(s, c):
        order.append(c.run_id)
        if c.run_id == "block":
            gate.wait(T)
        return {"n": 1}

    wf = Workflow("q", Dag.builder("a").step("a", step).build(), S, max_concurrent_runs=1)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        assert isinstance(rt.start("q", {}, run_id="old").result(timeout=T), Done)
        order.clear()
        block = rt.start("q", {}, run_id="block")
        assert _until(lambda: order == ["block"])
        x = rt.start("q", {}, run_id="x", priority=5)
        old = rt.start("q", {}, run_id="old", if_exists="continue", priority=10)
        gate.set()
        for h in (block, x, old):
            assert isinstance(h.result(timeout=T), Done)
        assert order == ["block", "old", "x"], order


def test_a_subgraph_child_of_a_limited_workflow_does_not_strand_its_parent():
    def slow(s, c):
        time.sleep(0.3)
        return {"n": 1}

    child = Workflow("child", Dag.builder("c").step("c", slow).build(), S, max_concurrent_runs=1)
    parent = Workflow("par", Dag.builder("p").step("p", Subgraph(child, inputs=["n"], outputs=["n"])).build(), S)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(parent)
        hs = [rt.start("par", {}, run_id=f"p{i}") for i in range(3)]
        for h in hs:
            assert isinstance(h.result(timeout=T), Done)


def test_retention_purges_a_loops_iteration_runs_after_their_parent():
    body = Dag.builder("tick").step("tick", lambda s, c: {"n": (s.get("n") or 0) + 1}).build()
    wf = Workflow("w", Dag.builder("loop").step("loop", Loop(body, while_=lambda s: s["n"] < 3,
                                                              max_iterations=10)).build(),
                  S, retention_s=0.2)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("w", {"n": 0}, run_id="r").result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 3
        assert _until(lambda: rt.runs() == []), [(s.workflow_id, s.run_id) for s in rt.runs()]


def test_a_resume_of_a_paused_run_is_not_refused_while_its_actor_reports_the_pause():
    def ask(s, c):
        return {"n": c.interrupt("n?")}

    wf = Workflow("ask", Dag.builder("a").step("a", ask).build(), S)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        for i in range(20):
            rt.start("ask", {}, run_id=f"r{i}")
        assert _until(lambda: len(rt.runs(status="paused")) == 20)
        hs = [rt.resume("ask", s.run_id, Command(resume=7)) for s in rt.runs(status="paused")]
        assert all(isinstance(h.result(timeout=T), Done) for h in hs)


def test_a_failed_body_step_or_child_gives_its_traceback_to_the_parent():
    def boom(s, c):
        raise ValueError("no")

    body = Dag.builder("b").step("b", boom).build()
    looped = Workflow("lw", Dag.builder("loop").step("loop", Loop(body, while_=lambda s: True, max_iterations=2)).build(), S)
    child = Workflow("cw", Dag.builder("c").step("c", boom).build(), S)
    sub = Workflow("sw", Dag.builder("p").step("p", Subgraph(child, inputs=["n"], outputs=["n"])).build(), S)
    with Runtime(store=MemoryStore()) as rt:
        rt.register(looped)
        rt.register(sub)
        for wid in ("lw", "sw"):
            out = rt.start(wid, {}, run_id="r").result(timeout=T)
            assert out.traceback is not None and "boom" in out.traceback and "ValueError" in out.traceback, out


def test_a_busy_worker_still_takes_a_clients_run(tmp_path):
    """A worker executing more runs than one look for work returns still finds the
    run a client started (its own runs do not crowd it out)."""
    from atomr import SqliteStore

    gate = threading.Event()

    async def step(s, c):  # async: the busy runs hold no thread while they wait
        while c.run_id.startswith("busy") and not gate.is_set():
            await asyncio.sleep(0.02)
        return {"n": 1}

    wf = Workflow("b", Dag.builder("a").step("a", step).build(), S)
    path = str(tmp_path / "w.db")
    try:
        with Runtime(store=SqliteStore(path), worker_id="w1") as rt:
            rt.register(wf)
            busy = rt.start_many("b", [{}] * 80, [f"busy{i}" for i in range(80)])
            assert _until(lambda: len(rt.runs(status="running")) == 80)
            with Runtime(store=SqliteStore(path), worker_id="client", execute=False) as client:
                client.register(wf)
                h = client.start("b", {}, run_id="from-client")
                assert isinstance(h.result(timeout=T), Done)
            gate.set()
            assert all(isinstance(b.result(timeout=T), Done) for b in busy)
    finally:
        gate.set()


def test_a_continue_of_a_run_deleted_meanwhile_is_refused_not_started_anew():
    """The race a continue can lose to retention or rt.delete: found done, gone when its
    actor takes the request. Nothing is started under the old id."""
    from atomr._edge import prepare_starts
    from atomr.actors.startgroup import send_starts
    from atomr.errors import RunNotContinuable

    with Runtime(store=MemoryStore()) as rt:
        wf = rt.register(_one("c"))
        assert isinstance(rt.start("c", {"n": 5}, run_id="t").result(timeout=T), Done)
        datas, ids, existing, found = prepare_starts(rt, wf, [{"n": 1}], ["t"], "continue")
        assert found == {"t"}
        rt.delete("c", "t")  # retention's purge, between the caller's look and the actor's
        [(rid, inbox)] = send_starts(rt._core, wf, datas, ids, existing, None, 0,
                                     lambda r: rt._inbox("c", r), turn=True, found=found)
        with pytest.raises(RunNotContinuable, match="deleted"):
            rt._accepted("c", rid, inbox, T)
        assert rt.store.summary("c", "t") is None


@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("request_kind", ["resume", "continue"])
def test_a_request_ahead_of_the_outcomes_commit_answer_is_taken_once(tmp_path, monkeypatch, durability,
                                                                      request_kind):
    """A caller who sees the run paused (or done) in the store resumes (or continues) it
    before the run's actor has heard that its pause (or end) is durable: the request is
    carried out once, by a fresh actor, after the outcome is reported: never two writers,
    never a run left "running" with nobody executing it."""
    from atomr import LmdbStore
    from atomr.actors.checkpointer import WriterGate

    calls: list[str] = []

    def ask(state, ctx):
        calls.append("ask")
        if request_kind == "resume":
            return {"n": ctx.interrupt("go on?")}
        return {"n": (state["n"] or 0) + 1}

    wf = Workflow("w", Dag.builder("a").step("a", ask).build(), S)
    with Runtime(store=LmdbStore(str(tmp_path / "s"), map_size=64 << 20), durability=durability) as rt:
        rt.register(wf)
        settled = "paused" if request_kind == "resume" else "done"
        got: list = []
        sent: list = []

        def request() -> None:
            try:
                if request_kind == "resume":
                    got.append(rt.resume("w", "r", Command(resume=7)))
                else:
                    got.append(rt.start("w", {"n": 10}, run_id="r", if_exists="continue"))
            except RunNotContinuable as exc:  # "still running: wait for its outcome": nothing written
                got.append(exc)

        real = rt.store.write

        def write(batches, *args, **kw):  # the checkpointer's thread
            out = real(batches, *args, **kw)
            if not sent and any(b.run_id == "r" and b.status == settled for b in batches):
                sent.append(True)
                # a caller who read the store just now (it waits for the answer: not this thread)
                threading.Thread(target=request, daemon=True).start()
                time.sleep(0.3)  # its request is in the run's mailbox ahead of the commit's answer
            return out

        rt.store.write = write  # type: ignore[method-assign]
        # through the checkpointer's thread (as under load), not written in the run's own turn
        monkeypatch.setattr(WriterGate, "try_write", lambda self, store, batch: (False, None))
        first = rt.start("w", {}, run_id="r").result(timeout=T)
        assert type(first).__name__ == ("Paused" if request_kind == "resume" else "Done")
        assert wait_for(lambda: got)
        if isinstance(got[0], RunNotContinuable):
            assert request_kind == "continue"
            rt.flush()
            assert calls == ["ask"] and rt.get_state("w", "r").values["n"] == 1
            return
        out = got[0].result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["n"] == (7 if request_kind == "resume" else 11)
        rt.flush()
        assert calls == ["ask", "ask"]
        seqs = [seq for seq, _ in rt.store.journal("w", "r")]
        assert seqs == list(range(1, len(seqs) + 1))
        assert rt.get_state("w", "r").status == "done"
