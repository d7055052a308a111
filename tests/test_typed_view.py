"""Typed state reaches steps typed: ``state.field`` and ``state["field"]``, read-only;
a model's / dataclass's fields without a default are required at a fresh start()
and at schedule() (MissingInput), a TypedDict's keys stay optional."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Annotated, NotRequired, TypedDict

import pytest

from atomr import AppendList, Command, Dag, Done, Failed, Loop, Paused, StateSchema, Workflow
from atomr.errors import MissingInput
from atomr.graph.view import TypedState
from workflows import T, runtimes, ALL_STORES, store_kinds  # noqa: F401

pydantic = pytest.importorskip("pydantic")
store_kind = store_kinds(*ALL_STORES)


@dataclasses.dataclass
class Order:
    customer: str
    items: Annotated[list[str], AppendList()]  # a list reducer starts it empty: not required
    keys: int = 0                               # named like mapping methods: the field wins
    note: str | None = None


class Ticket(pydantic.BaseModel):
    title: str
    log: Annotated[list[str], AppendList()] = []
    get: str = "field"


class Loose(TypedDict):
    topic: str
    extra: NotRequired[str]


def _one(fn, sch, wid="typed", **kw) -> Workflow:
    return Workflow(wid, Dag.builder("s").step("s", fn).build(), sch, **kw)


def test_a_step_reads_fields_as_attributes_and_items(runtimes, store_kind):
    seen = {}

    def step(state, ctx):
        seen["attr"] = (state.customer, state.items, state.keys, state.note)
        seen["item"] = (state["customer"], state["items"], state["keys"])
        seen["mapping"] = (sorted(state), len(state), "customer" in state, state.to_dict()["keys"])
        with pytest.raises(AttributeError, match="read-only"):
            state.customer = "x"
        with pytest.raises(TypeError):
            state["customer"] = "x"  # type: ignore[index]
        with pytest.raises(AttributeError, match="no field 'nope'"):
            state.nope  # noqa: B018
        return {"items": [state.customer.upper()], "keys": state.keys + 1}

    rt = runtimes(store_kind, workflows=[_one(step, StateSchema.from_type(Order))])
    out = rt.start("typed", {"customer": "ann", "keys": 2}).result(timeout=T)
    assert isinstance(out, Done), out
    assert seen["attr"] == ("ann", [], 2, None) and seen["item"] == ("ann", [], 2)
    assert seen["mapping"] == (["customer", "items", "keys", "note"], 4, True, 2)
    assert out.state["items"] == ["ANN"] and out.state["keys"] == 3


def test_a_pydantic_field_named_get_wins_and_routers_see_the_view(runtimes):
    def first(state, ctx):
        assert state.get == "field" and state["get"] == "field"  # the field, not Mapping.get
        return {"log": [state.title]}

    def route(state):
        return "done" if state.log == ["t"] else "other"

    dag = (Dag.builder("first").step("first", first).step("done", lambda s, c: {"log": ["done"]})
           .step("other", lambda s, c: {"log": ["other"]})
           .branch("first", route, {"done": "done", "other": "other"}).build())
    rt = runtimes("memory", workflows=[Workflow("t", dag, StateSchema.from_type(Ticket))])
    out = rt.start("t", {"title": "t"}).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["t", "done"], out


def test_loop_predicate_and_body_get_the_view(runtimes):
    loop = Loop(lambda state, ctx: {"log": [str(len(state.log))]}, while_=lambda state: len(state.log) < 3)
    wf = Workflow("loop", Dag.builder("l").step("l", loop).build(), StateSchema.from_type(Ticket))
    out = runtimes("memory", workflows=[wf]).start("loop", {"title": "x"}).result(timeout=T)
    assert isinstance(out, Done) and out.state["log"] == ["0", "1", "2"], out


def test_an_absent_typeddict_key_is_an_attribute_error_naming_it(runtimes):
    def step(state, ctx):
        assert state.topic == "t" and getattr(state, "extra", "none") == "none"
        with pytest.raises(AttributeError, match="'extra' of Loose has no value yet"):
            state.extra  # noqa: B018
        return None

    rt = runtimes("memory", workflows=[_one(step, StateSchema.from_type(Loose))])
    assert isinstance(rt.start("typed", {"topic": "t"}).result(timeout=T), Done)
    # TypedDict keys stay optional: an empty input starts
    assert isinstance(rt.start("typed", {}).result(timeout=T), Failed)  # the step reads state.topic: None
    assert isinstance(rt.start("typed").result(timeout=T), Failed)


def test_a_plain_schema_keeps_a_plain_mapping(runtimes):
    def step(state, ctx):
        assert not isinstance(state, TypedState) and state["n"] == 1
        return None

    rt = runtimes("memory", workflows=[_one(step, StateSchema({"n": lambda a, b: b}))])
    assert isinstance(rt.start("typed", {"n": 1}).result(timeout=T), Done)


def test_the_view_pickles_as_a_view():
    v = TypedState({"items": [1], "a": 2}, frozenset({"items", "a"}), "Order")
    w = pickle.loads(pickle.dumps(v))
    assert isinstance(w, TypedState) and w.items == [1] and w == {"items": [1], "a": 2}


@pytest.mark.parametrize("cls, given, missing", [(Order, {}, "'customer'"), (Ticket, {"log": ["x"]}, "'title'")])
def test_required_fields_are_refused_at_start_with_a_named_error(runtimes, store_kind, cls, given, missing):
    rt = runtimes(store_kind, workflows=[_one(lambda s, c: None, StateSchema.from_type(cls))])
    with pytest.raises(MissingInput) as info:
        rt.start("typed", given, run_id="r")
    text = str(info.value)
    assert missing in text and cls.__qualname__ in text and "default" in text
    assert info.value.fields == [missing.strip("'")] and info.value.schema == cls.__qualname__
    assert rt.runs() == []  # nothing was written
    with pytest.raises(MissingInput):  # start_many checks every input first
        rt.start_many("typed", [{**given, missing.strip("'"): "x"}, given], ["a", "b"])
    assert rt.runs() == []


def test_required_fields_are_not_asked_again_when_a_run_carries_on(runtimes):
    def wait(state, ctx):
        return {"note": str(ctx.interrupt("go?"))}

    rt = runtimes("memory", workflows=[_one(wait, StateSchema.from_type(Order))])
    assert isinstance(rt.start("typed", {"customer": "c"}, run_id="r").result(timeout=T), Paused)
    h = rt.start("typed", {}, run_id="r", if_exists="attach")  # attaching is not a fresh start
    out = rt.resume("typed", "r", Command(resume="yes")).result(timeout=T)
    assert isinstance(out, Done) and out.state["note"] == "yes"
    assert h.result(timeout=T) == out


def test_required_fields_are_refused_at_schedule(runtimes):
    rt = runtimes("memory", workflows=[_one(lambda s, c: None, StateSchema.from_type(Ticket))])
    with pytest.raises(MissingInput, match="the schedule input lacks the required field 'title' of Ticket"):
        rt.schedule("every", "typed", every_s=3600, input={})
    assert rt.schedules() == []
    rt.schedule("every", "typed", every_s=3600, input={"title": "t"})
    assert [s.schedule_id for s in rt.schedules()] == ["every"]
