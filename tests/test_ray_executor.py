"""RayExecutor: runs behave as with local step actors (needs the ``ray`` extra)."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'atomr[ray]')")

import ray_workflows as W  # noqa: E402
from ray_workflows import local_ray  # noqa: E402,F401  (the shared fixture)

from atomr import Command, Done, Failed, LmdbStore, MemoryStore, Paused, Runtime  # noqa: E402
from atomr.errors import AtomrError  # noqa: E402
from atomr.ray import RayExecutor  # noqa: E402

pytestmark = pytest.mark.ray

T = W.T




def ray_runtime(path: str, *wfs) -> Runtime:
    rt = Runtime(store=LmdbStore(path), executor=RayExecutor())
    for wf in wfs:
        rt.register(wf)
    return rt


def history_values(rt: Runtime, wf: str, run: str) -> list[tuple[int, str, dict]]:
    return [(c.super_step, c.label, c.values) for c in rt.history(wf, run)]


def test_executor_starts_and_shuts_down_its_own_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    # runs before the module's Ray is started: this executor owns its Ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # pragma: no cover
        pytest.skip("a Ray is already initialised in this process")
    here = os.path.dirname(os.path.abspath(__file__))
    ex = RayExecutor(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": here}})
    rt = Runtime(store=MemoryStore(), executor=ex)
    try:
        assert ray.is_initialized()
        rt.register(W.pipeline())
        out = rt.start("pipe", {"n": 1}).result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 25
    finally:
        rt.close()
    assert not ray.is_initialized()


def test_task_options_cannot_turn_ray_retries_on() -> None:
    with pytest.raises(AtomrError, match="RetryPolicy"):
        RayExecutor(task_options={"max_retries": 3})


def test_same_writes_and_outcome_as_local(local_ray, tmp_path) -> None:
    with Runtime(store=MemoryStore()) as local:
        local.register(W.pipeline())
        want = local.start("pipe", {"n": 1}, run_id="r").result(timeout=T)
        want_history = history_values(local, "pipe", "r")
    rt = ray_runtime(str(tmp_path / "s"), W.pipeline())
    with rt:
        got = rt.start("pipe", {"n": 1}, run_id="r").result(timeout=T)
        assert isinstance(got, Done), got
        assert got == want
        assert got.state["log"] == ["a", "b1", "b2", "b2@2", "b3:b3:1", "c saw 5"]
        assert got.state["n"] == 25
        assert history_values(rt, "pipe", "r") == want_history
        assert rt.executor.pending() == 0
    assert ray.is_initialized()  # an initialised Ray is used as is, and left running


def test_step_exception_type_and_retries_counted(local_ray, tmp_path) -> None:
    with ray_runtime(str(tmp_path / "s"), W.failing()) as rt:
        h = rt.start("failing", {"dir": str(tmp_path)}, run_id="f")
        events = list(h.events(timeout=T))
        out = h.result(timeout=T)
    assert isinstance(out, Failed), out
    assert (out.error_type, out.step_id) == ("ValueError", "boom")
    assert "attempt 3" in out.message
    assert W.count(str(tmp_path), "fails") == 3  # Ray never retried on its own
    assert [e.data[0] for e in events if e.kind == "retrying"] == ["ValueError", "ValueError"]


def test_interrupts_and_resumes(local_ray, tmp_path) -> None:
    with ray_runtime(str(tmp_path / "s"), W.asking()) as rt:
        p1 = rt.start("asking", {"n": 1}, run_id="q").result(timeout=T)
        assert isinstance(p1, Paused) and p1.reason == "interrupt"
        assert [(i.id, i.payload) for i in p1.interrupts] == [("ask:2:0", {"q": "first?", "run": "q"})]
        p2 = rt.resume("asking", "q", Command(resume="yes")).result(timeout=T)
        assert isinstance(p2, Paused) and [i.id for i in p2.interrupts] == ["ask:2:1"]
        out = rt.resume("asking", "q", Command(resume={"ask:2:1": "sure"})).result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["answers"] == [["yes", "sure"]]
        assert out.state["n"] == 7
        assert out.state["pid"][0] != os.getpid()  # the step really ran in a Ray worker


def test_step_timeout_cancels_the_task(local_ray, tmp_path) -> None:
    with ray_runtime(str(tmp_path / "s"), W.slow()) as rt:
        out = rt.start("slow", {"dir": str(tmp_path)}, run_id="t").result(timeout=T)
        assert isinstance(out, Failed), out
        assert (out.error_type, out.step_id) == ("StepTimeout", "slow")
        assert rt.executor.pending() == 0
    assert W.count(str(tmp_path), "slow") <= 1
    assert W.count(str(tmp_path), "slow-finished") == 0


def test_worker_crash_is_a_failed_attempt(local_ray, tmp_path) -> None:
    with ray_runtime(str(tmp_path / "s"), W.crash_once(), W.crash_always()) as rt:
        h = rt.start("crash_once", {"dir": str(tmp_path)}, run_id="c1")
        events = list(h.events(timeout=T))
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["log"] == ["a", "survived attempt 2"]
        retrying = [e.data for e in events if e.kind == "retrying"]
        assert len(retrying) == 1 and retrying[0][0] == "StepCrashed"
        assert "WorkerCrashedError" in retrying[0][1]

        out = rt.start("crash_always", {"dir": str(tmp_path)}, run_id="c2").result(timeout=T)
        assert isinstance(out, Failed), out
        assert (out.error_type, out.step_id) == ("StepCrashed", "crash")
        assert "lost on Ray" in out.message and "WorkerCrashedError" in out.message
        assert "RayTaskError" not in out.error_type
    assert W.count(str(tmp_path), "crash") == 2
    assert W.count(str(tmp_path), "crash_always") == 1
