"""Property: a stored run rehydrates to exactly what the live run saw.

Random small workflows (chains and diamonds of up to four layers) write to an
AppendList, a LastWriteWins and a MergeMap channel; some steps interrupt (once
or twice), some have before/after breakpoints, resumes may carry updates. At
every outcome of a real Runtime run (MemoryStore and LmdbStore), rehydration
(latest snapshot + journal tail, :func:`atomr._load.load_progress`) must equal

* the live outcome and ``get_state``,
* the fold of the whole journal from event 1 without snapshots
  (:func:`atomr.graph.superstep.replay`), and the fold from every snapshot,
* an independent model of the values (writes folded layer by layer).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomr import (
    AppendList,
    Command,
    Dag,
    Done,
    LastWriteWins,
    LmdbStore,
    MemoryStore,
    MergeMap,
    Paused,
    Runtime,
    StateSchema,
    Workflow,
)
from atomr._load import load_progress
from atomr.graph.superstep import replay
from atomr.store.base import Store
from atomr.testing import check_rehydration

TIMEOUT = 60.0


@dataclass
class Spec:
    layers: list[list[str]]
    edges: list[tuple[str, str]]
    writes: dict[str, list[tuple[str, Any]]]
    interrupts: dict[str, int]
    before: list[str]
    after: list[str]
    updates: list[dict[str, Any] | None]
    input: dict[str, Any]
    snapshot_every: int
    durability: str


small = st.integers(-3, 9) | st.text("abc", max_size=2) | st.tuples(st.integers(0, 3), st.booleans())
write = st.one_of(
    st.tuples(st.just("log"), st.lists(small, min_size=1, max_size=2)),
    st.tuples(st.just("last"), small),
    st.tuples(st.just("m"), st.dictionaries(st.sampled_from(["x", "y", 1, 2]), small, min_size=1, max_size=2)),
)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    layers = [["s0"]]
    edges: list[tuple[str, str]] = []
    for i in range(1, draw(st.integers(1, 4))):
        layer = [f"s{i}{chr(97 + j)}" for j in range(draw(st.integers(1, 3)))]
        for step in layer:  # each step hangs off a non-empty subset of the layer above
            preds = draw(st.lists(st.sampled_from(layers[-1]), min_size=1, max_size=len(layers[-1]), unique=True))
            edges += [(p, step) for p in preds]
        layers.append(layer)
    steps = [s for layer in layers for s in layer]
    return Spec(
        layers=layers,
        edges=edges,
        writes={s: draw(st.lists(write, max_size=3)) for s in steps},
        interrupts={s: draw(st.sampled_from([0, 0, 0, 1, 2])) for s in steps},
        before=draw(st.lists(st.sampled_from(steps[1:] or ["s0"]), max_size=2, unique=True)) if len(steps) > 1 else [],
        after=draw(st.lists(st.sampled_from(steps), max_size=2, unique=True)),
        updates=draw(st.lists(st.none() | st.fixed_dictionaries({"last": small}) | st.fixed_dictionaries(
            {"log": st.lists(small, min_size=1, max_size=1), "m": st.just({"u": 1})}), min_size=1, max_size=4)),
        input=draw(st.fixed_dictionaries({"last": small}, optional={"log": st.lists(small, max_size=2)})),
        snapshot_every=draw(st.integers(1, 5)),
        durability=draw(st.sampled_from(["sync", "sync", "async", "exit"])),
    )


def _step(name: str, writes: list[tuple[str, Any]], n_interrupts: int) -> Any:
    def fn(state: Any, ctx: Any) -> list[tuple[str, Any]]:
        out = list(writes)
        for i in range(n_interrupts):
            answer = ctx.interrupt({"step": name, "i": i})
            out.append(("log", [[name, answer]]))
        return out

    return fn


def build(spec: Spec) -> Workflow:
    b = Dag.builder("s0")
    for layer in spec.layers:
        for s in layer:
            b.step(s, _step(s, spec.writes[s], spec.interrupts[s]))
    for a, c in spec.edges:
        b.edge(a, c)
    schema = StateSchema({"log": (AppendList(), []), "last": LastWriteWins(), "m": (MergeMap(), {})})
    return Workflow("prop", b.build(), schema, interrupt_before=spec.before, interrupt_after=spec.after)


def model(wf: Workflow, spec: Spec, answers: dict[str, Any], updates_at: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The values the run must end with: input, then per layer the updates made
    while paused before its commit, then its steps' writes in topological order."""
    values = {"log": [], "last": None, "m": {}}
    reducers = {k: wf.schema.reducer(k) for k in values}

    def merge(pairs: Any) -> None:
        for k, v in pairs:
            values[k] = reducers[k](values[k], v)

    merge(spec.input.items())
    n = len(wf.plan.layers)
    for layer in range(n + 1):
        for at, update in updates_at:
            if at == layer:
                merge(update.items())
        if layer == n:
            break
        for s in wf.plan.layers[layer]:
            merge(spec.writes[s])
            for i in range(spec.interrupts[s]):
                merge([("log", [[s, answers[f"{s}:{layer + 1}:{i}"]]])])
    return values


def check(rt: Runtime, wf: Workflow, run: str, out: Any) -> Any:
    store = rt.store
    p = load_progress(store, wf.plan, wf.id, run)
    assert p is not None
    full = replay(wf.plan, wf.id, run, store.journal(wf.id, run, 1))
    assert p == full
    assert check_rehydration(store, wf.plan, wf.id, run) == p
    view = rt.get_state(wf.id, run)
    assert (view.values, view.super_step, view.status, view.next) == (p.values, p.super_step, p.status,
                                                                      p.next_steps(wf.plan))
    assert [(i.id, i.step_id, i.payload) for i in view.interrupts] == [(i.id, i.step_id, i.payload)
                                                                       for i in p.interrupts]
    summary = store.summary(wf.id, run)
    assert summary is not None
    assert (summary.status, summary.super_step, summary.last_seq) == (p.status, p.super_step, p.seq)
    assert summary.snapshot_seq == p.seq, "pauses and ends always snapshot"
    if isinstance(out, Done):
        assert p.status == "done" and out.state == p.values
    else:
        assert isinstance(out, Paused), out
        assert (p.status, p.super_step, p.pause_reason, p.pause_steps) == ("paused", out.super_step, out.reason,
                                                                           out.steps)
        assert [(i.id, i.payload) for i in p.interrupts] == [(i.id, i.payload) for i in out.interrupts]
    return p


def drive(store: Store, spec: Spec) -> Any:
    wf = build(spec)
    answers: dict[str, Any] = {}
    updates_at: list[tuple[int, dict[str, Any]]] = []
    with Runtime(store=store, durability=spec.durability, step_workers=2) as rt:
        rt.register(wf)
        out = rt.start(wf.id, spec.input, run_id="r").result(timeout=TIMEOUT)
        pauses = 0
        while True:
            last = check(rt, wf, "r", out)
            if isinstance(out, Done):
                break
            assert pauses < 40, "the run does not finish"
            update = spec.updates[pauses % len(spec.updates)]
            asked = {i.id: (pauses, i.id) for i in out.interrupts}
            answers.update(asked)
            if update:
                updates_at.append((out.super_step, update))
            out = rt.resume(wf.id, "r", Command(resume=asked or None, update=update)).result(timeout=TIMEOUT)
            pauses += 1
        assert out.state == model(wf, spec, answers, updates_at)
        assert len(store.snapshots(wf.id, "r")) >= pauses + 1  # every pause and the end
    return last


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(specs())
def test_memory_store_rehydrates_to_the_live_run(spec: Spec) -> None:
    drive(MemoryStore(snapshot_every=spec.snapshot_every), spec)


@SETTINGS
@given(specs())
def test_lmdb_store_rehydrates_to_the_live_run(spec: Spec) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/store"
        last = drive(LmdbStore(path, map_size=1 << 20, snapshot_every=spec.snapshot_every, fsync="none"), spec)
        # and the same again from the files, in a fresh store
        with LmdbStore(path) as store:
            wf = build(spec)
            assert load_progress(store, wf.plan, wf.id, "r") == last
            assert check_rehydration(store, wf.plan, wf.id, "r") == last


def test_model_matches_a_known_run() -> None:
    """The model itself, on one hand-checked diamond with an interrupt."""
    spec = Spec(
        layers=[["s0"], ["s1a", "s1b"], ["s2a"]],
        edges=[("s0", "s1a"), ("s0", "s1b"), ("s1a", "s2a"), ("s1b", "s2a")],
        writes={"s0": [("log", [0])], "s1a": [("last", 1), ("m", {"x": 1})], "s1b": [("last", 2)],
                "s2a": [("m", {"x": 2, "y": 3})]},
        interrupts={"s0": 0, "s1a": 1, "s1b": 0, "s2a": 0},
        before=[], after=[], updates=[{"last": 9}], input={"last": 5}, snapshot_every=2, durability="sync",
    )
    state = drive(MemoryStore(snapshot_every=2), spec).values
    assert state == {"log": [0, ["s1a", (0, "s1a:2:0")]], "last": 2, "m": {"x": 2, "y": 3}}
