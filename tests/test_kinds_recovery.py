"""Step kinds after kill -9: a real subprocess is killed while one unit of work
blocks; a new Runtime + register + recover() finishes the run, and no unit whose
completion was committed runs again — on LMDB, SQLite (synchronous full and
normal) and Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from atomr import Command, Done, LmdbStore, Runtime
from atomr import events as ev
from kinds_scripts import crash
from workflows import CRASH_KINDS, CrashTarget, crash_targets, kill_at_ready

crash_target = crash_targets(*CRASH_KINDS)

T = 60.0
SCRIPT = Path(crash.__file__).resolve()


def kill_when_ready(scenario: str, tmp_path: Path, target: CrashTarget) -> tuple[CrashTarget, str, str]:
    """Run the scenario in a subprocess on ``target``, SIGKILL it once it says READY."""
    side = str(tmp_path / "side.txt")
    go = str(tmp_path / "go")
    kill_at_ready([str(SCRIPT), scenario, target.url, side, go], go)
    return target, side, go


def recovering_runtime(scenario: str, target: CrashTarget, side: str, go: str) -> Runtime:
    rt = Runtime(store=target.open(), durability="sync")
    rt.register(crash.workflow(scenario, side, go))
    return rt


def journal(rt: Runtime, wid: str, run_id: str) -> list[Any]:
    return [e for _, e in rt.store.journal(wid, run_id)]


def test_map_after_kill_runs_only_unfinished_elements(tmp_path, crash_target):
    target, side, go = kill_when_ready("map", tmp_path, crash_target)
    assert crash.lines(side) == ["item 0", "item 1", "item 2"]
    with recovering_runtime("map", target, side, go) as rt:
        assert rt.get_state("crash-map", crash.RUN_ID).status == "running"
        [h] = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["out"] == [i * 10 for i in crash.ITEMS]
        assert out.state["log"] == ["after"]
        got = crash.lines(side)
        # 0 and 1 were journaled done: never again; 2 was cut off: once more
        assert got.count("item 0") == 1 and got.count("item 1") == 1
        assert got.count("item 2") == 2
        assert got.count("item 3") == 1 and got.count("item 4") == 1
        done = [e.index for e in journal(rt, "crash-map", crash.RUN_ID) if type(e) is ev.ItemCompleted]
        assert sorted(done) == crash.ITEMS  # each element completed once in the journal


def test_loop_after_kill_resumes_at_the_cut_iteration(tmp_path, crash_target):
    target, side, go = kill_when_ready("loop", tmp_path, crash_target)
    with recovering_runtime("loop", target, side, go) as rt:
        # the two merged iterations are checkpoints already
        labels = [c.label for c in rt.history("crash-loop", crash.RUN_ID)]
        assert labels[-2:] == ["loop:lp:1", "loop:lp:2"]
        [h] = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["n"] == crash.LOOP_END
        assert out.state["log"] == ["pre"] + [f"it{i}" for i in range(crash.LOOP_END)]
        got = crash.lines(side)
        assert got.count("step pre") == 1
        assert [got.count(f"iteration {i}") for i in range(crash.LOOP_END)] == [1, 1, 2, 1, 1]
        its = [e.iteration for e in journal(rt, "crash-loop", crash.RUN_ID) if type(e) is ev.LoopIterated]
        assert its == [1, 2, 3, 4, 5]


def test_loop_with_a_dag_body_after_kill_reruns_only_the_step_in_flight(tmp_path, crash_target):
    target, side, go = kill_when_ready("loopdag", tmp_path, crash_target)
    child_run = f"crash-loopdag/{crash.RUN_ID}/lp#{crash.BLOCK_ITERATION}@2"
    with recovering_runtime("loopdag", target, side, go) as rt:
        assert rt.get_state("crash-loopdag:lp", child_run).status == "running"
        handles = rt.recover()
        # the iteration's child run is driven by its parent: only the parent is recovered directly
        assert [(h.workflow_id, h.run_id) for h in handles] == [("crash-loopdag", crash.RUN_ID)]
        out = handles[0].result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["n"] == crash.LOOP_END
        assert out.state["log"] == ["pre"] + [x for i in range(crash.LOOP_END) for x in (f"a{i}", f"b{i}")]
        got = crash.lines(side)
        assert got.count("step pre") == 1
        # iteration 2 was cut in b: its a (journaled) never runs again, b runs once more
        assert [got.count(f"a {i}") for i in range(crash.LOOP_END)] == [1, 1, 1, 1, 1]
        assert [got.count(f"b {i}") for i in range(crash.LOOP_END)] == [1, 1, 2, 1, 1]
        its = [e.iteration for e in journal(rt, "crash-loopdag", crash.RUN_ID) if type(e) is ev.LoopIterated]
        assert its == [1, 2, 3, 4, 5]
        cut = [e.step for e in journal(rt, "crash-loopdag:lp", child_run) if type(e) is ev.StepCompleted]
        assert cut == ["a", "b"]


def test_branch_decision_is_replayed_not_taken_again_after_kill(tmp_path, crash_target):
    target, side, go = kill_when_ready("branch", tmp_path, crash_target)
    assert crash.lines(side).count("route") == 1
    with recovering_runtime("branch", target, side, go) as rt:
        [h] = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        # a new decision would have picked "second" (the router counts its calls)
        assert out.state["log"] == ["t", "a", "j"]
        got = crash.lines(side)
        assert got.count("route") == 1
        assert got.count("step t") == 1 and got.count("step b") == 0 and got.count("step j") == 1
        taken = [e for e in journal(rt, "crash-branch", crash.RUN_ID) if type(e) is ev.BranchTaken]
        assert taken == [ev.BranchTaken("t", ["first"])]


def test_subgraph_after_kill_recovers_through_the_parent(tmp_path, crash_target):
    target, side, go = kill_when_ready("subgraph", tmp_path, crash_target)
    child_wid, child_run = "crash-subgraph-child", f"crash-subgraph/{crash.RUN_ID}/sub"
    with recovering_runtime("subgraph", target, side, go) as rt:
        assert rt.get_state(child_wid, child_run).status == "running"
        handles = rt.recover()
        # the child is driven by its parent: only the parent is recovered directly
        assert [(h.workflow_id, h.run_id) for h in handles] == [("crash-subgraph", crash.RUN_ID)]
        out = handles[0].result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["report"] == f"{len(crash.ITEMS)} items"
        assert out.state["log"] == ["pre", "post"]
        got = crash.lines(side)
        assert got.count("step pre") == 1 and got.count("step c1") == 1
        assert got.count("step c2") == 2 and got.count("step post") == 1
        assert rt.get_state(child_wid, child_run).status == "done"


def test_human_wait_survives_kill(tmp_path, crash_target):
    target, side, go = kill_when_ready("human", tmp_path, crash_target)
    with recovering_runtime("human", target, side, go) as rt:
        assert rt.recover() == []  # paused, not running
        view = rt.get_state("crash-human", crash.RUN_ID)
        assert view.status == "paused"
        [intr] = view.interrupts
        assert intr.step_id == "approve" and intr.payload["prompt"] == "Ship it?"
        out = rt.resume("crash-human", crash.RUN_ID,
                        Command(resume={"approved": True, "by": "alice"})).result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["approval"] == {"approved": True, "by": "alice"}
        assert crash.lines(side) == ["step pre", "step post"]
        assert ev.HumanApproved("approve", "alice") in journal(rt, "crash-human", crash.RUN_ID)


def test_subgraph_whose_child_finished_before_the_parent_recorded_it(tmp_path):
    """Crash window: the child run is done but the parent's journal stops at the
    Subgraph step's start. Recovery takes the child's outputs without re-running it."""
    from atomr.store import format as fmt
    from atomr.store.base import AppendBatch

    side, go = str(tmp_path / "side.txt"), str(tmp_path / "go")
    Path(go).touch()
    wid, cwid = "crash-subgraph", "crash-subgraph-child"
    src = tmp_path / "src"
    with Runtime(store=LmdbStore(src, map_size=64 << 20)) as rt:
        rt.register(crash.workflow("subgraph", side, go))
        assert isinstance(rt.start(wid, {"items": [1, 2]}, run_id=crash.RUN_ID).result(timeout=T), Done)
        parent = journal(rt, wid, crash.RUN_ID)
        child_run = f"{wid}/{crash.RUN_ID}/sub"
        child = journal(rt, cwid, child_run)
        child_summary = rt.store.summary(cwid, child_run)
    cut = next(i for i, e in enumerate(parent) if type(e) is ev.StepStarted and e.step == "sub") + 1
    dst = tmp_path / "dst"
    store = LmdbStore(dst, map_size=64 << 20)
    store.write([
        AppendBatch(wid, crash.RUN_ID, 1, [fmt.encode_event(e) for e in parent[:cut]],
                    status="running", super_step=1),
        AppendBatch(cwid, child_run, 1, [fmt.encode_event(e) for e in child],
                    status="done", super_step=child_summary.super_step, meta=child_summary.meta),
    ])
    before = crash.lines(side)
    with Runtime(store=store) as rt:
        rt.register(crash.workflow("subgraph", side, go))
        [h] = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["report"] == "2 items" and out.state["log"] == ["pre", "post"]
        new = crash.lines(side)[len(before):]
        assert new == ["step post"]  # the child did not run again
