"""ShardedRuntime: runs spread over several runtime processes (Ray actors), each
with its own LMDB store, behind one router (needs the ``ray`` extra)."""

from __future__ import annotations

import os
import time

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'atomr[ray]')")

import ray_workflows as W  # noqa: E402
from ray_workflows import local_ray  # noqa: E402,F401  (the shared fixture)

from atomr import Command, Done, Paused  # noqa: E402
from atomr.errors import AtomrError, RunExists, RunNotFound, WorkflowNotFound  # noqa: E402
from atomr.sharding import ShardedRuntime, shard_of  # noqa: E402

pytestmark = pytest.mark.ray

T = W.T
SPECS = ["ray_workflows:sharded", "ray_workflows:blocking"]




def test_shard_of_is_stable() -> None:
    # pinned values: a run must map to the same shard in every process, forever
    assert [shard_of(f"r{i}", 3) for i in range(8)] == [shard_of(f"r{i}", 3) for i in range(8)]
    assert shard_of("order-42", 1) == 0
    assert {shard_of(f"run-{i}", 3) for i in range(30)} == {0, 1, 2}
    assert shard_of("r1", 3) == int.from_bytes(
        __import__("hashlib").blake2b(b"r1", digest_size=8).digest(), "big") % 3


def test_runs_spread_and_are_routed(local_ray, tmp_path) -> None:
    root = str(tmp_path / "root")
    ids = [f"run-{i:02d}" for i in range(30)]
    with ShardedRuntime(shards=3, root=root, workflows=SPECS, name="t-route") as srt:
        assert [i["workflows"] for i in srt.info] == [["blocking", "sharded"]] * 3
        assert len({i["pid"] for i in srt.info}) == 3  # three runtime processes
        handles = srt.start_many("sharded", [{"n": i} for i in range(30)], ids)
        outs = [h.result(timeout=T) for h in handles]
        assert all(isinstance(o, Paused) and o.interrupts[0].id == "ask:2:0" for o in outs)

        by_shard = {s: sorted(r for r in ids if srt.shard_of(r) == s) for s in range(3)}
        assert all(by_shard[s] for s in range(3))  # every shard owns runs
        for s in range(3):
            assert [r.run_id for r in srt.runs(shard=s)] == by_shard[s]
            assert os.path.isdir(os.path.join(root, f"shard-{s}"))
        assert [r.run_id for r in srt.runs(status="paused")] == sorted(ids)

        for i, rid in enumerate(ids):
            assert srt.resume("sharded", rid, Command(resume=f"{rid}-1")).result(timeout=T).status == "paused"
        hs = [srt.resume("sharded", rid, Command(resume=f"{rid}-2")) for rid in ids]
        for i, (rid, h) in enumerate(zip(ids, hs)):
            out = h.result(timeout=T)
            assert isinstance(out, Done), out
            assert out.state["answers"] == [[f"{rid}-1", f"{rid}-2"]]
            assert out.state["n"] == i + 1 + 5
        v = srt.get_state("sharded", "run-07")
        assert (v.status, v.values["n"], v.run_id) == ("done", 13, "run-07")
        hist = srt.history("sharded", "run-07")
        assert hist[0].label == "input" and hist[-1].values["n"] == 13

        # a second router over the same named shard actors routes the same way
        other = ShardedRuntime.attach("t-route", 3)
        assert other.get_state("sharded", "run-11").values["answers"] == [["run-11-1", "run-11-2"]]
        other.close()  # an attached router leaves the shards running
        assert srt.get_state("sharded", "run-12").status == "done"

        # errors of the shard runtime reach the caller as themselves
        with pytest.raises(RunExists):
            srt.start("sharded", {}, run_id="run-03")
        with pytest.raises(RunNotFound):
            srt.get_state("sharded", "nope")
        with pytest.raises(WorkflowNotFound):
            srt.start("unknown", {})

    # the shard count of a root is fixed
    with pytest.raises(AtomrError, match="shards=3"):
        ShardedRuntime(shards=2, root=root, workflows=SPECS)
    # reopened with the same count, every run is still found on its shard
    with ShardedRuntime(shards=3, root=root, workflows=SPECS) as srt:
        assert len(srt.runs(status="done")) == 30
        assert srt.get_state("sharded", "run-29").values["n"] == 35


def test_a_crashed_shard_restarts_and_carries_on(local_ray, tmp_path) -> None:
    d = str(tmp_path)
    with ShardedRuntime(shards=2, root=str(tmp_path / "root"), workflows=SPECS) as srt:
        h = srt.start("blocking", {"dir": d, "n": 1}, run_id="x1")
        deadline = time.monotonic() + T
        while W.count(d, "wait-x1") < 1:  # the step is running in the shard process
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        shard = srt.shard_of("x1")
        old_pid = ray.get(srt.actors[shard].ping.remote(), timeout=T)[1]["pid"]
        ray.kill(srt.actors[shard], no_restart=False)  # the shard process dies mid-step
        # ray.kill is asynchronous: let the step go on only once a new shard
        # process runs, or the dying one could still finish it
        while True:
            try:
                if ray.get(srt.actors[shard].ping.remote(), timeout=T)[1]["pid"] != old_pid:
                    break
            except ray.exceptions.RayActorError:
                pass  # restarting
            assert time.monotonic() < deadline, "the shard was not restarted"
            time.sleep(0.05)
        open(os.path.join(d, "go"), "w").close()
        out = h.result(timeout=T)  # waits across the restart
        assert isinstance(out, Done), out
        assert out.state["log"] == ["a", "waited", "c saw 2"] and out.state["n"] == 7
        assert W.count(d, "wait-x1") == 2  # the uncommitted step ran again, once
        assert ray.get(srt.actors[shard].ping.remote(), timeout=T)[1]["recovered"] == 1


def test_shards_can_run_their_steps_on_ray(local_ray, tmp_path) -> None:
    with ShardedRuntime(shards=1, root=str(tmp_path / "root"), workflows=["ray_workflows:sharded"],
                        step_executor="ray") as srt:
        assert srt.start("sharded", {"n": 1}, run_id="s1").result(timeout=T).status == "paused"
        srt.resume("sharded", "s1", Command(resume="x")).result(timeout=T)
        out = srt.resume("sharded", "s1", Command(resume="y")).result(timeout=T)
        assert isinstance(out, Done) and out.state["answers"] == [["x", "y"]]
        assert out.state["pid"][0] not in {os.getpid(), srt.info[0]["pid"]}  # a Ray task ran it
