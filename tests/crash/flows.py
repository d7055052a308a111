"""Workflows of the crash harness, and the driver that carries runs to their end.

Imported by ``tests/test_crash_harness.py`` (reference runs on a MemoryStore,
the last generation of each scenario) and by ``child.py`` (the generations the
test kills with SIGKILL).

Every step appends ``"<idempotency_key> <attempt>\\n"`` to the side file of the
current generation (one ``write`` on an O_APPEND descriptor, then ``fsync``)
before it does anything else, so the side files hold every execution that
could have been committed.

Workflows (all deterministic: the final state depends only on the input and the
answers given to interrupts):

* ``chain``: ``c0 -> c1 -> ... -> c7``;
* ``fan``: ``src -> w0..w7 -> sink`` (a wide layer: partial layers get committed);
* ``ask``: ``a -> ask1 -> b -> ask2 -> c``, each ``ask`` pauses with ``ctx.interrupt``;
* ``flaky``: ``p -> f1 -> q -> f2 -> r``, ``f1``/``f2`` fail their first attempt
  and succeed on the retry ``RetryPolicy`` schedules.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    Failed,
    LastWriteWins,
    Paused,
    RetryPolicy,
    Runtime,
    StateSchema,
    Workflow,
)

#: the side file steps append to (None: record nothing, as in reference runs)
SIDE: str | None = None

#: generous bound for any wait
T = 120.0

WORKFLOW_IDS = ("chain", "fan", "ask", "flaky")

CHAIN = [f"c{i}" for i in range(8)]
FAN = [f"w{i}" for i in range(8)]


class FlakyError(Exception):
    """Raised by a flaky step on its first attempt."""


def record(ctx: Any) -> None:
    """Append this execution to the side file, durably, in one write."""
    if SIDE is None:
        return
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{ctx.idempotency_key} {ctx.attempt}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema() -> StateSchema:
    return StateSchema({
        "log": AppendList(),
        "n": (LastWriteWins(), 0),
        "answers": AppendList(),
        "pace": (LastWriteWins(), 0.0),
        "tag": (LastWriteWins(), ""),
    })


def _step(name: str, *, count: bool = True, asks: int = 0, fail_first: bool = False,
          slow: float = 0.0) -> Callable[..., Any]:
    def step(state: Mapping[str, Any], ctx: Any) -> Any:
        record(ctx)
        got = [ctx.interrupt({"step": name, "i": i, "tag": state["tag"]}) for i in range(asks)]
        if fail_first and ctx.attempt == 1:
            raise FlakyError(f"{name} fails its first attempt")
        if state["pace"] or slow:
            time.sleep(state["pace"] + slow)
        out: dict[str, Any] = {"log": [f"{name}:{state['tag']}"]}
        if count:
            out["n"] = state["n"] + 1
        if got:
            out["answers"] = [[name, *got]]
        return out

    step.__name__ = f"step_{name}"
    return step


def _chain_of(wid: str, names: list[str], steps: dict[str, Callable[..., Any]], **kw: Any) -> Workflow:
    b = Dag.builder(names[0])
    for s in names:
        b.step(s, steps[s])
    for x, y in zip(names, names[1:]):
        b.edge(x, y)
    return Workflow(wid, b.build(), _schema(), **kw)


def workflows() -> list[Workflow]:
    chain = _chain_of("chain", CHAIN, {s: _step(s) for s in CHAIN})

    b = Dag.builder("src").step("src", _step("src"))
    for i, w in enumerate(FAN):
        # fan-out steps finish one after the other: a kill finds half-committed layers
        b.step(w, _step(w, count=False, slow=0.005 * (i % 4))).edge("src", w).edge(w, "sink")
    b.step("sink", _step("sink"))
    fan = Workflow("fan", b.build(), _schema())

    ask_names = ["a", "ask1", "b", "ask2", "c"]
    ask = _chain_of("ask", ask_names, {s: _step(s, asks=1 if s.startswith("ask") else 0) for s in ask_names})

    flaky_names = ["p", "f1", "q", "f2", "r"]
    flaky = _chain_of("flaky", flaky_names,
                      {s: _step(s, fail_first=s.startswith("f")) for s in flaky_names},
                      retry=RetryPolicy(max_attempts=3, backoff_s=0.01, retry_on=(FlakyError,)))
    return [chain, fan, ask, flaky]


def plan_runs(n: int, pace: float = 0.01) -> list[tuple[str, str, dict[str, Any]]]:
    """``n`` runs spread over the workflows, each at its own pace."""
    out = []
    for i in range(n):
        wid = WORKFLOW_IDS[i % len(WORKFLOW_IDS)]
        out.append((wid, f"{wid}-{i:04d}", {"pace": pace * (i % 3), "tag": f"t{i}"}))
    return out


def answer(run_id: str, interrupt_id: str) -> str:
    return f"{run_id}|{interrupt_id}"


def _resume_paused(rt: Runtime, wid: str, run_id: str) -> Any:
    pending = rt.get_state(wid, run_id).interrupts
    command = Command(resume={i.id: answer(run_id, i.id) for i in pending}) if pending else Command()
    return rt.resume(wid, run_id, command, timeout=T)


def drive(rt: Runtime, runs: Iterable[tuple[str, str, Mapping[str, Any]]], final: bool,
          say: Callable[[str], None] = lambda s: None) -> dict[tuple[str, str], Any]:
    """Carry every run of ``runs`` on: recover the running ones, answer the
    paused ones, start those not in the store yet; then wait for outcomes.

    ``final``: answer runs that pause meanwhile too, until every run is done
    (else a run that pauses stays paused for the next generation).
    Returns the last outcome of each run.
    """
    handles: dict[tuple[str, str], Any] = {}
    for h in rt.recover():
        handles[(h.workflow_id, h.run_id)] = h
    for s in rt.runs(status="paused"):
        if (s.workflow_id, s.run_id) not in handles:  # one recover() handed out may have paused since
            handles[(s.workflow_id, s.run_id)] = _resume_paused(rt, s.workflow_id, s.run_id)
    known = {(s.workflow_id, s.run_id) for s in rt.runs()}
    todo = [(wid, rid, inp) for wid, rid, inp in runs if (wid, rid) not in known]
    say(f"STARTING {len(handles)} {len(todo)}")
    for wid, rid, inp in todo:
        handles[(wid, rid)] = rt.start(wid, dict(inp), run_id=rid, timeout=T)
    say("READY")
    outcomes: dict[tuple[str, str], Any] = {}
    while handles:
        for key, h in list(handles.items()):
            out = h.result(timeout=T)
            outcomes[key] = out
            if isinstance(out, Paused) and final:
                handles[key] = _resume_paused(rt, *key)
            else:
                del handles[key]
                if isinstance(out, Failed):
                    say(f"FAILED {key[0]} {key[1]} {out.error_type}: {out.message}")
    return outcomes


def reference(runs: list[tuple[str, str, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Final states of ``runs`` executed without any crash (MemoryStore)."""
    from atomr import MemoryStore

    global SIDE
    saved, SIDE = SIDE, None
    try:
        with Runtime(store=MemoryStore(), durability="sync") as rt:
            for wf in workflows():
                rt.register(wf)
            outcomes = drive(rt, runs, final=True)
    finally:
        SIDE = saved
    out = {}
    for key, o in outcomes.items():
        assert isinstance(o, Done), (key, o)
        out[key] = o.state
    return out
