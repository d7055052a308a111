"""Crash harness: real processes, real SIGKILL, several kills per scenario.

Each scenario runs runs of four workflows (a chain, a wide fan-out, one that
pauses on interrupts, one whose steps fail their first attempt and are
retried) in a child process (``crash/child.py``) on a store — LMDB with
durability "sync"; SQLite (synchronous "full" and "normal") and Postgres in
each durability mode — and kills it with SIGKILL: after a seeded random delay,
once the side file has grown by k lines, once some steps of a wide layer have
finished and others still run, while the store is about to commit (finished
steps' events queued, not durable), or inside a write transaction. A share of
the runs starts in each generation, so every generation has work to kill. The
next generation (a new child; an in-process Runtime for the last one) recovers,
answers the paused runs and carries on.

Checked after every kill: every journal is gap-free from 1 and every record
decodes; the run index agrees with the journal; rehydration from snapshots
equals the fold of the whole journal; no interrupt of a paused run is lost
(every question asked is answered or still pending, and a paused run has one).
Checked at the end: every run reaches the state it reaches without crashes
(MemoryStore reference); every step completed exactly once in the journal; in
one process life a step ran at most once (twice for a retry or a pause and its
resume); a step whose completion was committed when a generation died never
executed in a later generation (side files record every execution with its
idempotency key).

Bounded by default (LMDB: 4 scenarios; each SQL store: 3, one per durability;
5 kills x 24 runs each); ``ATOMR_FULL=1`` runs 10 scenarios per store x 12 x
100 and also kills "async" and "exit" LMDB runtimes. A summary line with the
totals is printed at the end of the module.

Inside a write transaction means, for SQLite, the group's journal rows
inserted and nothing committed; for Postgres, the group's statement waiting
in the server for a lock the killed process held (it then commits on its own
or not at all, before a new writer can take the schema's lock).
"""
from __future__ import annotations

import collections
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atomr import Done, Runtime
from atomr import events as ev
from atomr._load import load_progress
from atomr.graph.superstep import idempotency_key, replay

from crash import flows
from workflows import CrashTarget

CHILD = Path(__file__).resolve().parent / "crash" / "child.py"
FULL = os.environ.get("ATOMR_FULL") == "1"
SCENARIOS = 10 if FULL else 4
KILLS = 12 if FULL else 5
RUNS = 100 if FULL else 24
SEED = int(os.environ.get("ATOMR_CRASH_SEED", "20240611"))
MODES = ("delay", "lines", "in_commit", "mid_layer", "pre_commit")
#: durability of the killed generations: "sync"; the full form also tries "async" and "exit"
#: (ATOMR_CRASH_DURABILITY forces one)
DURABILITIES = ("sync", "async", "exit") if FULL else ("sync",)
DURABILITY = os.environ.get("ATOMR_CRASH_DURABILITY")
#: (store, durability, scenario): LMDB as above; each SQL store in every durability mode
SQL_KINDS = ("sqlite-full", "sqlite-normal", "postgres")
CASES = [("lmdb", DURABILITY or DURABILITIES[i % len(DURABILITIES)], i) for i in range(SCENARIOS)] + [
    (kind, DURABILITY or ("sync", "async", "exit")[i % 3], i) for kind in SQL_KINDS
    for i in range(SCENARIOS if FULL else 3)]
T = 120.0  # generous bound for any wait; a pass is much faster

#: steps that may legitimately run twice in one process life (a retry, a pause then a resume)
TWICE = {"ask1", "ask2", "f1", "f2"}

pytestmark = pytest.mark.slow


# --- the child process ------------------------------------------------------------------


class Child:
    """One generation in a subprocess; its stdout lines arrive on a queue."""

    def __init__(self, store: str, side: Path, runs: int, err: Path, **hooks: Any) -> None:
        args = [sys.executable, str(CHILD), store, str(side), str(runs)]
        for k, v in hooks.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.err_path = err
        self._err = open(err, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at EOF; "" when nothing came within ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return ""
        if line is not None:
            self.seen.append(line)
            if line.startswith("FAILED"):
                raise AssertionError(f"a run failed in the child: {line}")
        return line

    def wait_for(self, prefix: str, timeout: float = T) -> str | None:
        """Wait for a line starting with ``prefix`` (None if ALLDONE/EOF came first)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"child printed no {prefix!r} in {timeout}s; saw {self.seen}; "
                                     f"stderr: {self.stderr()}")
            line = self.next_line(min(left, 0.5))
            if line is None:
                return None
            if line.startswith(prefix):
                return line
            if line.startswith("ALLDONE"):
                return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=T)

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text()[-4000:]


def _lines_in(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _fan_started(path: Path) -> int:
    """The most fan-out steps started by one run, from the side file."""
    per_run: collections.Counter[str] = collections.Counter()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        wid, rid, _, step = key.split("/")
        if wid == "fan" and step.startswith("w"):
            per_run[rid] += 1
    return max(per_run.values(), default=0)


def generation(store: str, side: Path, err: Path, mode: str, start: int, durability: str,
               rng: random.Random) -> tuple[bool, str]:
    """Run one child generation (starting the first ``start`` runs of the plan)
    and SIGKILL it as ``mode`` says. Returns (killed, what triggered the kill)."""
    hooks: dict[str, Any] = {"start": start, "durability": durability}
    if mode in ("in_commit", "pre_commit"):
        hooks[mode] = rng.randint(2, 30)
    child = Child(store, side, RUNS, err, **hooks)
    try:
        if mode in ("in_commit", "pre_commit"):
            # the marker may come at any point, recovery included
            marker = "IN_COMMIT" if mode == "in_commit" else "PRE_COMMIT"
            got = child.wait_for(marker)
            what = got or f"{marker} {hooks[mode]} (not reached)"
            if got is None:
                return False, what
        else:
            if child.wait_for("STARTING") is None:
                raise AssertionError(f"child ended before starting; stderr: {child.stderr()}")
            if mode == "delay":
                delay = rng.uniform(0.0, 0.2)
                what = f"after {delay:.3f}s"
                deadline = time.monotonic() + delay
                while (left := deadline - time.monotonic()) > 0:
                    line = child.next_line(left)
                    if line is None or (line and line.startswith("ALLDONE")):
                        return False, what
            else:
                if mode == "lines":
                    k = rng.randint(3, 30)
                    what = f"after {k} side-file lines"
                    reached = lambda: _lines_in(side) >= k  # noqa: E731
                else:  # some steps of a wide layer finished and committed, others running
                    k = rng.randint(3, 7)
                    what = f"once {k} steps of a fan-out layer started"
                    reached = lambda: _fan_started(side) >= k  # noqa: E731
                deadline = time.monotonic() + T
                while not reached():
                    line = child.next_line(0.002)
                    if line is None or (line and line.startswith("ALLDONE")):
                        return False, what
                    if time.monotonic() > deadline:
                        raise AssertionError(f"side file stuck at {_lines_in(side)} lines; "
                                             f"stderr: {child.stderr()}")
        child.kill()
        assert child.proc.returncode == -signal.SIGKILL, (child.proc.returncode, child.stderr())
        return True, what
    finally:
        child.close()


# --- reading the store back -----------------------------------------------------------------


@dataclass
class Inspection:
    committed: set[str] = field(default_factory=set)  # keys with a committed StepCompleted
    completions: collections.Counter[str] = field(default_factory=collections.Counter)
    status: dict[tuple[str, str], str] = field(default_factory=dict)
    paused_with_interrupts: int = 0
    partial_layers: int = 0  # running runs with committed completions of an uncommitted layer
    records: int = 0


def inspect_store(target: CrashTarget, plans: dict[str, Any]) -> Inspection:
    """Open the store (nobody else holds it: a Postgres open waits for a
    statement the dead process left in the server) and check every run's journal."""
    out = Inspection()
    store = target.open()
    try:
        for s in store.runs():
            wid, rid = s.workflow_id, s.run_id
            events = list(store.journal(wid, rid))  # every record decodes (else CorruptRecord)
            seqs = [q for q, _ in events]
            assert s.first_seq == 1
            assert seqs == list(range(1, s.last_seq + 1)), f"journal of {wid}/{rid} has gaps: {seqs}"
            snaps = [q for q, _ in store.snapshots(wid, rid)]  # every snapshot decodes
            assert all(1 <= q <= s.last_seq for q in snaps), (wid, rid, snaps, s.last_seq)
            assert s.snapshot_seq == 0 or s.snapshot_seq in snaps, (wid, rid, s.snapshot_seq, snaps)
            if s.status != "running":  # a pause or an end is committed with its snapshot
                assert s.snapshot_seq == s.last_seq, (wid, rid, s.status, s.snapshot_seq, s.last_seq)
            out.records += len(seqs)
            plan = plans[wid]
            whole = replay(plan, wid, rid, events)
            loaded = load_progress(store, plan, wid, rid)
            assert loaded is not None
            for attr in ("values", "super_step", "layer", "status", "seq", "pending", "answers"):
                assert getattr(loaded, attr) == getattr(whole, attr), (wid, rid, attr)
            assert [i.id for i in loaded.interrupts] == [i.id for i in whole.interrupts]
            assert s.status == whole.status, (wid, rid, s.status, whole.status)
            assert s.super_step == whole.super_step, (wid, rid)
            out.status[(wid, rid)] = s.status
            if s.status == "running" and whole.pending:
                out.partial_layers += 1
            # no interrupt lost: every question asked is answered or still pending
            asked = {e.interrupt_id: e for _, e in events if type(e) is ev.Interrupted}
            answered: set[str] = set()
            for _, e in events:
                if type(e) is ev.Resumed:
                    answered.update(e.answers)
            pending = {i.id for i in whole.interrupts}
            assert answered <= set(asked), (wid, rid, answered, asked)
            assert pending == set(asked) - answered, (wid, rid, pending, asked, answered)
            if s.status == "paused":
                assert whole.pause_reason == "interrupt" and pending, (wid, rid, whole.pause_reason)
                for iid in pending:
                    assert asked[iid].payload["tag"] == whole.values["tag"]
                out.paused_with_interrupts += 1
            for _, e in events:
                if type(e) is ev.StepCompleted:
                    key = idempotency_key(wid, rid, e.super_step, e.step)
                    out.committed.add(key)
                    out.completions[key] += 1
    finally:
        store.close()
    return out


def _side_counts(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return counts
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"torn line in {path}"
    for line in text.splitlines():
        key, attempt = line.rsplit(" ", 1)
        assert int(attempt) >= 1 and key.count("/") == 3, line
        counts[key] += 1
    return counts


# --- the scenarios -----------------------------------------------------------------------------


@dataclass
class Tally:
    scenarios: int = 0
    kills: int = 0
    not_killed: int = 0
    runs: int = 0
    executions: int = 0
    reexecuted_committed: int = 0
    paused_seen: int = 0
    partial_layers: int = 0
    by_mode: collections.Counter[str] = field(default_factory=collections.Counter)
    durabilities: collections.Counter[str] = field(default_factory=collections.Counter)
    stores: collections.Counter[str] = field(default_factory=collections.Counter)


@pytest.fixture(scope="module")
def tally(request: Any) -> Any:
    t = Tally()
    yield t
    line = (f"crash harness: {t.scenarios} scenarios "
            f"({', '.join(f'{d} {n}' for d, n in sorted(t.durabilities.items()))}; "
            f"{', '.join(f'{k} {n}' for k, n in sorted(t.stores.items()))}), {t.kills} SIGKILLs survived "
            f"({', '.join(f'{m} {n}' for m, n in sorted(t.by_mode.items()))}; {t.not_killed} "
            f"generations ended before their trigger), {t.runs} runs, {t.executions} step executions, "
            f"{t.paused_seen} paused runs and {t.partial_layers} half-committed layers seen at kills, "
            f"re-executed committed steps: "
            f"{t.reexecuted_committed}")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print("\n" + line, flush=True)
    else:  # pragma: no cover
        print(line)


@pytest.fixture(scope="module")
def expected() -> dict[tuple[str, str], dict[str, Any]]:
    return flows.reference(flows.plan_runs(RUNS))


@pytest.fixture
def target(request: Any, tmp_path: Path) -> Any:
    if request.param == "postgres":
        from conftest import need_pg

        need_pg()
    t = CrashTarget(request.param, tmp_path)
    yield t
    t.drop()


@pytest.mark.parametrize("target,durability,scenario", CASES, indirect=["target"],
                         ids=[f"{k}-{d}-{i}" for k, d, i in CASES])
def test_kill_recover_repeat(target: CrashTarget, durability: str, scenario: int, tmp_path: Path, tally: Tally,
                             expected: dict[tuple[str, str], dict[str, Any]]) -> None:
    rng = random.Random(SEED * 100 + scenario)
    tally.durabilities[durability] += 1
    tally.stores[target.kind] += 1
    plans = {wf.id: wf.plan for wf in flows.workflows()}
    sides: list[Path] = []
    committed_at_death: list[set[str]] = []
    kills = 0
    for g in range(KILLS):
        mode = MODES[(g + scenario) % len(MODES)]
        side = tmp_path / f"side{g}.txt"
        sides.append(side)
        # a share of the runs starts in each generation: every generation has work to kill
        start = RUNS * (g + 2) // (KILLS + 1)
        killed, what = generation(target.url, side, tmp_path / f"err{g}.txt", mode, start, durability, rng)
        if killed:
            kills += 1
            tally.by_mode[mode] += 1
        else:
            tally.not_killed += 1
        seen = inspect_store(target, plans)
        tally.paused_seen += seen.paused_with_interrupts
        tally.partial_layers += seen.partial_layers
        committed_at_death.append(seen.committed)
        # a committed completion is never journaled twice
        assert max(seen.completions.values(), default=1) == 1, what

    # the last generation: an in-process runtime carries every run to its end
    final_side = tmp_path / f"side{KILLS}.txt"
    sides.append(final_side)
    flows.SIDE = str(final_side)
    try:
        with Runtime(store=target.open(), durability="sync") as rt:
            for wf in flows.workflows():
                rt.register(wf)
            outcomes = flows.drive(rt, flows.plan_runs(RUNS), final=True)
            assert rt.runs(status="running") == [] and rt.runs(status="paused") == []
    finally:
        flows.SIDE = None
    final = inspect_store(target, plans)

    # same final state as without crashes
    assert set(final.status) == set(expected)
    for key, state in expected.items():
        assert final.status[key] == "done", key
        out = outcomes.get(key)
        if out is not None:  # runs that ended in an earlier generation have no outcome here
            assert isinstance(out, Done) and out.state == state, (key, out)
    store = target.open()
    try:
        for (wid, rid), state in expected.items():
            p = load_progress(store, plans[wid], wid, rid)
            assert p is not None and p.values == state, (wid, rid)
    finally:
        store.close()

    # every step completed exactly once in the journal, and ran at least once
    counts = [_side_counts(s) for s in sides]
    total = collections.Counter[str]()
    for c in counts:
        total.update(c)
    assert max(final.completions.values()) == 1
    assert set(total) == final.committed, set(total) ^ final.committed
    # in one process life a step runs once (twice: a retry, or a pause then its resume)
    for g, c in enumerate(counts):
        for key, n in c.items():
            assert n <= (2 if key.rsplit("/", 1)[1] in TWICE else 1), (g, key, n)
    # a step whose completion was committed when a generation died never ran again
    again = []
    for g, keys in enumerate(committed_at_death):
        for h in range(g + 1, len(counts)):
            again += [(k, g, h, counts[h][k]) for k in keys if counts[h][k]]
    tally.scenarios += 1
    tally.kills += kills
    tally.runs += len(expected)
    tally.executions += sum(total.values())
    tally.reexecuted_committed += len(again)
    assert again == [], again[:10]
    assert kills >= KILLS // 2, f"only {kills} of {KILLS} generations were killed"


# --- a kill inside a large group commit -----------------------------------------------------------

BIG_RUNS = 120
BIG_GROUP = 16  # batches in the transaction the kill lands in


@pytest.fixture(scope="module")
def expected_big() -> dict[tuple[str, str], dict[str, Any]]:
    return flows.reference(flows.plan_runs(BIG_RUNS))


@pytest.mark.parametrize("target", ["lmdb", *SQL_KINDS], indirect=True)
def test_kill_inside_a_large_group_commit(target: CrashTarget, tmp_path: Path,
                                          expected_big: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Many runs commit in one transaction; SIGKILL lands inside it. The store
    opens, every run is consistent (gap-free journal, its snapshots there, the
    index agreeing with the fold), and a new process carries every run to the
    state it reaches without a crash, never re-running a committed step."""
    plans = {wf.id: wf.plan for wf in flows.workflows()}
    side = tmp_path / "side0.txt"
    child = Child(target.url, side, BIG_RUNS, tmp_path / "err0.txt", durability="async", big_commit=BIG_GROUP)
    try:
        big = child.wait_for("BIG_COMMIT")
        assert big is not None, f"no transaction of {BIG_GROUP} batches; stderr: {child.stderr()}"
        assert child.wait_for("IN_COMMIT") is not None, child.stderr()
        child.kill()
        assert child.proc.returncode == -signal.SIGKILL
    finally:
        child.close()
    seen = inspect_store(target, plans)
    assert seen.status, "nothing was committed before the big group"
    final_side = tmp_path / "side1.txt"
    flows.SIDE = str(final_side)
    try:
        with Runtime(store=target.open(), durability="sync") as rt:
            for wf in flows.workflows():
                rt.register(wf)
            flows.drive(rt, flows.plan_runs(BIG_RUNS), final=True)
    finally:
        flows.SIDE = None
    final = inspect_store(target, plans)
    assert set(final.status) == set(expected_big) and set(final.status.values()) == {"done"}
    store = target.open()
    try:
        for (wid, rid), state in expected_big.items():
            p = load_progress(store, plans[wid], wid, rid)
            assert p is not None and p.values == state, (wid, rid)
    finally:
        store.close()
    assert max(final.completions.values()) == 1
    again = [k for k, n in _side_counts(final_side).items() if k in seen.committed]
    assert again == [], again[:10]
