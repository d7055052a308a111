"""StateSchema.from_type: TypedDict, dataclass and pydantic state classes."""

from __future__ import annotations

import dataclasses
import operator
import subprocess
import sys
from pathlib import Path
from typing import Annotated, NotRequired, Required, TypedDict

import pytest

from atomr import (AppendList, AppendMessages, Command, Dag, Done, Failed, LastWriteWins, LmdbStore,
                   MemoryStore, Paused, Runtime, StateSchema, Workflow)
from atomr.errors import ReducerError, SchemaError, StateValidationError
from atomr.graph.schema import Channel
from atomr.graph.state import apply_writes

ROOT = Path(__file__).resolve().parents[1]
T = 30


def chain(*fns, interrupt_after=()) -> Dag:
    b = Dag.builder(fns[0].__name__)
    for f in fns:
        b = b.step(f.__name__, f)
    for x, y in zip(fns, fns[1:]):
        b = b.edge(x.__name__, y.__name__)
    return b.build()


# -- TypedDict --------------------------------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list, AppendMessages()]
    total: Annotated[int, operator.add]
    seen: Annotated[list[str], operator.add]
    n: int
    note: NotRequired[str]
    tags: NotRequired[Annotated[list[str], operator.add]]


def test_typeddict_channels_reducers_and_initial_values():
    s = StateSchema.from_type(Chat)
    assert list(s) == ["messages", "total", "seen", "n", "note", "tags"]
    assert s.reducer("messages") == AppendMessages() and s.reducer("n") == LastWriteWins()
    assert s.reducer("total")(1, 2) == 3 and s.reducer("seen")(["a"], ["b"]) == ["a", "b"]
    # a key with a reducer starts empty, a plain key None, a NotRequired key absent
    assert s.initial_values() == {"messages": [], "total": 0, "seen": [], "n": None}
    assert s.channels["note"].absent and s.channels["tags"].absent
    # a callable reducer of an absent channel takes the first write as it is
    v = apply_writes(s, s.initial_values(), [("tags", ["x"]), ("tags", ["y"]), ("note", "hi")])
    assert v["tags"] == ["x", "y"] and v["note"] == "hi"
    assert s.source is Chat and s._validators == {}
    assert s == StateSchema.from_type(Chat)


def test_typeddict_total_false_and_required():
    class Base(TypedDict):
        a: int

    class More(Base, total=False):
        b: int
        c: Required[Annotated[list, AppendList()]]

    s = StateSchema.from_type(More)
    assert s.initial_values() == {"a": None, "c": []}
    assert s.channels["b"].absent


def test_a_run_over_a_typeddict_state():
    def first(state: Chat, ctx):
        assert "note" not in state  # NotRequired: absent until written
        return {"messages": [{"id": "m1", "text": "hi"}], "total": 2, "n": state["n"] + 1}

    def second(state: Chat, ctx):
        return {"messages": [{"id": "m1", "text": "hello"}, {"id": "m2", "text": "bye"}],
                "total": 3, "note": "done", "tags": ["t"]}

    wf = Workflow("typed", chain(first, second), StateSchema.from_type(Chat))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("typed", {"n": 1}, run_id="r").result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state == {"messages": [{"id": "m1", "text": "hello"}, {"id": "m2", "text": "bye"}],
                             "total": 5, "seen": [], "n": 2, "note": "done", "tags": ["t"]}
        assert "note" not in rt.history("typed", "r")[0].values


def test_misdeclared_reducers_are_refused():
    class Cls(TypedDict):
        a: Annotated[list, AppendList]

    with pytest.raises(SchemaError, match=r"instantiate it: AppendList\(\)"):
        StateSchema.from_type(Cls)

    class Two(TypedDict):
        a: Annotated[list, operator.add, AppendList()]

    with pytest.raises(SchemaError, match="two reducers"):
        StateSchema.from_type(Two)
    for bad in (int, dict, 3, "State"):
        with pytest.raises(SchemaError, match="TypedDict, a dataclass or a pydantic model"):
            StateSchema.from_type(bad)


# -- dataclass --------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    required: str
    log: Annotated[list[str], AppendList()] = dataclasses.field(default_factory=list)
    attempts: Annotated[int, operator.add] = 0
    owner: str = "nobody"
    total: Annotated[int, max] = None  # type: ignore[assignment]
    ticket: str = dataclasses.field(default=None)  # type: ignore[assignment]
    result: Annotated[dict, operator.or_] = dataclasses.field(default_factory=dict)
    input_only: int = dataclasses.field(default=0)


def test_dataclass_defaults():
    s = StateSchema.from_type(Job)
    assert s.initial_values() == {"log": [], "attempts": 0, "owner": "nobody", "total": None,
                                  "ticket": None, "result": {}, "input_only": 0}
    assert s.channels["required"].absent
    v = apply_writes(s, s.initial_values(), [("total", 3), ("total", 7), ("total", 5), ("result", {"a": 1})])
    assert v["total"] == 7 and v["result"] == {"a": 1}
    assert s._validators == {}  # a dataclass is not validated unless asked


# -- pydantic ---------------------------------------------------------------------------------

pydantic = pytest.importorskip("pydantic")


class Msg(pydantic.BaseModel):
    id: str | None = None
    role: str = "user"
    content: str


class Conversation(pydantic.BaseModel):
    messages: Annotated[list[Msg], AppendMessages()] = []
    count: Annotated[int, operator.add] = 0
    n: int = pydantic.Field(default=1, gt=0)
    title: str
    tags: list[str] = pydantic.Field(default_factory=lambda: ["new"])


def test_pydantic_model_defaults_and_required_fields():
    s = StateSchema.from_type(Conversation)
    assert s.initial_values() == {"messages": [], "count": 0, "n": 1, "tags": ["new"]}
    assert s.channels["title"].absent
    assert set(s._validators) == set(Conversation.model_fields)
    assert StateSchema.from_type(Conversation, validate=False)._validators == {}


def test_pydantic_writes_are_validated_and_coerced():
    s = StateSchema.from_type(Conversation)
    v = apply_writes(s, s.initial_values(), [("n", "3"), ("messages", [{"id": "a", "content": "hi"}]),
                                              ("messages", Msg(id="b", content="yo"))])
    assert v["n"] == 3
    assert v["messages"] == [Msg(id="a", content="hi"), Msg(id="b", content="yo")]
    before = dict(v)
    with pytest.raises(StateValidationError) as ei:
        apply_writes(s, v, [("count", 1), ("n", 0)], step="bump")
    assert isinstance(ei.value, ReducerError)  # handlers of ReducerError still catch it
    text = str(ei.value)
    assert "step 'bump'" in text and "channel 'n'" in text and "valid int" in text
    assert "greater than 0" in text and "state was left unchanged" in text
    assert ei.value.channel == "n" and ei.value.step == "bump" and ei.value.type == "int"
    assert v == before
    with pytest.raises(ReducerError, match=r"channel 'messages' that is not a valid list\[Msg\].*content"):
        apply_writes(s, v, [("messages", [{"id": "c"}])], step="talk")


def _conversation_workflow(bad: bool = False) -> Workflow:
    def greet(state, ctx):
        return {"messages": [{"id": "m1", "content": f"hello {state['title']}"}], "count": 1}

    def reply(state, ctx):
        assert isinstance(state["messages"][0], Msg)  # validated values are kept
        if bad:
            return {"count": 1, "n": "many"}
        return {"messages": [Msg(id="m2", role="ai", content="hi")], "count": 1, "n": 2}

    return Workflow("conv", chain(greet, reply), StateSchema.from_type(Conversation))


def test_pydantic_run_round_trips_through_lmdb(tmp_path):
    path = str(tmp_path / "s")
    with Runtime(store=LmdbStore(path)) as rt:
        rt.register(_conversation_workflow())
        out = rt.start("conv", {"title": "t"}, run_id="r").result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["messages"] == [Msg(id="m1", content="hello t"), Msg(id="m2", role="ai", content="hi")]
        assert out.state["count"] == 2 and out.state["n"] == 2
    with Runtime(store=LmdbStore(path)) as rt:  # rehydrated from the store in a new runtime
        rt.register(_conversation_workflow())
        view = rt.get_state("conv", "r")
        assert view.values == out.state
        assert [c.values["count"] for c in rt.history("conv", "r")] == [0, 1, 2, 2]


def test_pydantic_bad_input_is_refused_and_nothing_is_written():
    with Runtime(store=MemoryStore()) as rt:
        rt.register(_conversation_workflow())
        with pytest.raises(StateValidationError, match=r"channel 'title' that is not a valid str"):
            rt.start("conv", {"title": 3}, run_id="r").result(timeout=T)
        assert rt.runs() == []


def test_pydantic_bad_write_fails_its_step_and_leaves_the_state():
    with Runtime(store=MemoryStore()) as rt:
        rt.register(_conversation_workflow(bad=True))
        out = rt.start("conv", {"title": "t"}, run_id="r").result(timeout=T)
        assert isinstance(out, Failed), out
        assert out.step_id == "reply" and out.error_type == "StateValidationError"
        assert "step 'reply'" in out.message and "channel 'n'" in out.message and "valid int" in out.message
        view = rt.get_state("conv", "r")
        assert view.values["count"] == 1 and view.values["n"] == 1  # the bad layer is not merged
        # an update is validated too, and refused without a write
        with pytest.raises(ReducerError, match="channel 'n'"):
            rt.resume("conv", "r", Command(update={"n": -5})).result(timeout=T)


def test_input_with_a_pause_validates_on_resume_update():
    def wait(state, ctx):
        ctx.interrupt("go?")
        return {"count": 1}

    wf = Workflow("conv2", chain(wait), StateSchema.from_type(Conversation))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        assert isinstance(rt.start("conv2", {"title": "x"}, run_id="r").result(timeout=T), Paused)
        out = rt.resume("conv2", "r", Command(resume="yes", update={"n": "7"})).result(timeout=T)
        assert isinstance(out, Done) and out.state["n"] == 7 and out.state["count"] == 1


# -- field validators of the model run on channel writes ---------------------------------------


class Ticket(pydantic.BaseModel):
    title: str = "untitled"
    labels: list[str] = []
    priority: int = 1
    log: Annotated[list[str], operator.add] = []

    @pydantic.field_validator("title")
    @classmethod
    def title_is_trimmed_and_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a title must not be blank")
        return v.strip()

    @pydantic.field_validator("labels", mode="before")
    @classmethod
    def labels_from_csv(cls, v):
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else v

    @pydantic.field_validator("priority")
    @classmethod
    def priority_in_range(cls, v: int, info: pydantic.ValidationInfo) -> int:
        if not 1 <= v <= 5:
            raise ValueError(f"{info.field_name} must be 1..5")
        return v


def test_field_validators_run_on_channel_writes_as_on_the_model():
    s = StateSchema.from_type(Ticket)
    v = apply_writes(s, s.initial_values(), [("title", "  fix login  "), ("labels", "bug, ui"), ("priority", "3")])
    assert v["title"] == "fix login" and v["labels"] == ["bug", "ui"] and v["priority"] == 3
    model = Ticket(title="  fix login  ", labels="bug, ui", priority="3")  # the model gives the same values
    assert (model.title, model.labels, model.priority) == (v["title"], v["labels"], v["priority"])
    before = dict(v)
    with pytest.raises(StateValidationError) as ei:
        apply_writes(s, v, [("log", ["x"]), ("title", "   ")], step="rename")
    e = ei.value
    assert e.channel == "title" and e.step == "rename" and e.type == "str"
    assert "a title must not be blank" in str(e) and "step 'rename'" in str(e) and "channel 'title'" in str(e)
    assert v == before
    with pytest.raises(StateValidationError, match=r"channel 'priority'.*priority must be 1\.\.5"):
        apply_writes(s, v, [("priority", 9)], step="bump")
    with pytest.raises(pydantic.ValidationError, match="priority must be 1..5"):
        Ticket(priority=9)  # the same rule, on the model


class Tidy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(str_strip_whitespace=True)
    name: str = ""
    score: int = 0
    note: str = ""

    @pydantic.field_validator("*", mode="wrap")
    @classmethod
    def double_scores(cls, v, handler, info):
        out = handler(v)
        return out * 2 if info.field_name == "score" else out

    @pydantic.field_validator("note", mode="plain")
    @staticmethod
    def note_as_text(v):
        return f"{v}!"


def test_wrap_plain_and_star_validators_and_the_model_config_apply_to_channels():
    s = StateSchema.from_type(Tidy)
    v = apply_writes(s, s.initial_values(), [("name", "  ada "), ("score", "3"), ("note", 5)])
    m = Tidy(name="  ada ", score="3", note=5)
    assert v == m.model_dump() == {"name": "ada", "score": 6, "note": "5!"}
    with pytest.raises(StateValidationError, match=r"channel 'score' that is not a valid int \(Tidy.score\)"):
        apply_writes(s, v, [("score", "many")], step="s")


def test_a_field_validator_fails_the_step_that_wrote_and_refuses_a_bad_input():
    def rename(state, ctx):
        return {"title": "  ", "log": ["renamed"]}

    def label(state, ctx):
        return {"labels": "a,b", "log": ["labelled"]}

    wf = Workflow("tickets", chain(label, rename), StateSchema.from_type(Ticket))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        with pytest.raises(StateValidationError, match="channel 'priority'"):
            rt.start("tickets", {"priority": 0}, run_id="bad")
        out = rt.start("tickets", {"title": " t "}, run_id="r").result(timeout=T)
        assert isinstance(out, Failed) and out.step_id == "rename" and out.error_type == "StateValidationError"
        assert "a title must not be blank" in out.message
        with pytest.raises(StateValidationError) as ei:
            out.raise_error()
        assert isinstance(ei.value, ReducerError)
        view = rt.get_state("tickets", "r")
        assert view.values["title"] == "t" and view.values["labels"] == ["a", "b"]
        assert view.values["log"] == ["labelled"]


# -- type checkers ----------------------------------------------------------------------------


def test_mypy_sees_the_channel_names(tmp_path):
    pytest.importorskip("mypy")
    example = ROOT / "examples" / "typed_state.py"
    text = example.read_text(encoding="utf-8")
    bad = tmp_path / "typed_state_bad.py"
    bad.write_text(text.replace("state['topic'].capitalize()", "state['topik'].capitalize()")
                   .replace('"tokens": len(question.text.split())}', '"tokens": "many"}'), encoding="utf-8")
    assert bad.read_text(encoding="utf-8") != text
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=skip", "--ignore-missing-imports",
         "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(example), str(bad)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert all(line.startswith(str(bad)) for line in errors), out  # the example itself is clean
    assert any('has no key "topik"' in line for line in errors), out
    assert any('TypedDict item "tokens" has type "int"' in line for line in errors), out


def test_typed_state_example_runs():
    sys.path.insert(0, str(ROOT))
    try:
        from examples import typed_state
    finally:
        sys.path.remove(str(ROOT))
    out = typed_state.main()
    assert [m.id for m in out.state["messages"]] == ["q", "a"]
    assert out.state["messages"][0].text.endswith("in one line?")
    assert out.state["summary"] == "2 messages, 12 tokens" and out.state["tokens"] == 12
