"""Recovery after kill -9: runs carry on where their journal stops, and no step
whose completion was committed runs again — on LMDB, SQLite (synchronous
"full" and "normal") and Postgres, in every durability mode."""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from atomr import Done, MemoryStore, Runtime
from atomr import events as ev
from workflows import CRASH_KINDS, CrashTarget, T, crash_targets
from workflows import kill_chain as kc

crash_target = crash_targets(*CRASH_KINDS)

SCRIPT = Path(kc.__file__).resolve()
N_RUNS = 5


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def _committed_completions(target: CrashTarget) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Per run: idempotency keys of the steps whose StepCompleted is committed;
    and each run's status in the run index."""
    store = target.open()
    try:
        done: dict[str, set[str]] = {}
        status = {}
        for s in store.runs(workflow_id=kc.WID):
            status[s.run_id] = s.status
            done[s.run_id] = {
                f"{kc.WID}/{s.run_id}/{e.super_step}/{e.step}"
                for _, e in store.journal(kc.WID, s.run_id) if type(e) is ev.StepCompleted
            }
        return done, status
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_recovery_after_kill_9(tmp_path, crash_target, mode):
    side = tmp_path / "side.txt"
    side.touch()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), crash_target.url, str(side), str(N_RUNS), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        got = lines.get(timeout=60)
        assert got == "READY", f"script said {got!r}; stderr: {proc.stderr.read() if got is None else ''}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=T)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    committed, status = _committed_completions(crash_target)
    assert set(status.values()) <= {"running"}  # steps from BLOCK_AT on never return
    if mode == "sync":  # every start and every super-step was durable before the next
        assert sorted(status) == [f"run{i}" for i in range(N_RUNS)]
        for run_id, keys in committed.items():
            assert len(keys) >= kc.READY_AT - 1, (run_id, len(keys))
    if mode == "exit":  # nothing is written before a pause or the end
        assert status == {}
    for keys in committed.values():
        assert len(keys) < kc.BLOCK_AT

    with Runtime(store=crash_target.open(), durability="sync") as rt:
        rt.register(kc.workflow(str(side)))
        handles = rt.recover()
        assert sorted(h.run_id for h in handles) == sorted(status)
        outcomes = {h.run_id: h.result(timeout=T) for h in handles}
        assert rt.runs(status="running") == []
        journals = {r: [e for _, e in rt.store.journal(kc.WID, r)] for r in status}

    # the same state as a run that never crashed
    ref_side = tmp_path / "ref-side.txt"
    with Runtime(store=MemoryStore()) as ref_rt:
        ref_rt.register(kc.workflow(str(ref_side)))
        expected = ref_rt.start(kc.WID, {"n": 0}, run_id="ref").result(timeout=T)
    assert isinstance(expected, Done)
    assert expected.state == {"log": kc.step_names(), "n": kc.STEPS}
    for run_id, out in outcomes.items():
        assert isinstance(out, Done), out
        assert out.state == expected.state, run_id

    executed = collections.Counter(side.read_text().splitlines())
    for run_id, keys in committed.items():
        all_keys = {f"{kc.WID}/{run_id}/{i + 1}/{s}" for i, s in enumerate(kc.step_names())}
        mine = {k: c for k, c in executed.items() if k.startswith(f"{kc.WID}/{run_id}/")}
        assert set(mine) == all_keys, run_id  # every step ran
        for k in keys:  # a committed completion is never executed again
            assert mine[k] == 1, (k, mine[k])
        twice = [k for k, c in mine.items() if c > 1]
        assert all(mine[k] == 2 for k in twice), twice  # one crash: at most one re-run
        if mode == "sync":  # at most the one step in flight at the kill runs again
            assert len(twice) <= 1, twice
        # the journal: one completion per step, committed layers in order
        completed = [e.step for e in journals[run_id] if type(e) is ev.StepCompleted]
        assert completed == kc.step_names()
        assert [e.super_step for e in journals[run_id] if type(e) is ev.SuperStepCommitted] == list(
            range(1, kc.STEPS + 1))
        assert type(journals[run_id][-1]) is ev.RunCompleted
