"""atomr.codec.register: user types (pydantic models, dataclasses, enums) stored without pickle."""

from __future__ import annotations

import dataclasses
import enum
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from atomr import (AppendList, AppendMessages, Command, Dag, Done, LastWriteWins, LmdbStore, MemoryStore,
                   Paused, Runtime, StateSchema, Workflow, codec)
from atomr import _usertypes
from atomr.cli.render import json_text, plain
from atomr.codec import decode, encode, encode_writes
from atomr.errors import CodecError, StoredTypeMismatch, UnregisteredType

pydantic = pytest.importorskip("pydantic")

ROOT = Path(__file__).resolve().parents[1]
T = 30


# -- types (registered by the fixture of each test that needs them) ---------------------------


class Role(enum.Enum):
    HUMAN = "human"
    AI = "ai"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    norm: int = dataclasses.field(default=0, init=False)


class ChatMessage(pydantic.BaseModel):
    """Shaped like LangChain's messages: a pydantic model with an optional ``id``."""

    id: str | None = None
    type: str = "human"
    content: str
    tool_calls: list[dict[str, Any]] = []
    role: Role = Role.HUMAN


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=False)
    full_name: str = pydantic.Field(alias="fullName")


class Opaque:
    """Neither a model, a dataclass nor an enum: needs encode/decode."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value


class RayNote(pydantic.BaseModel):
    """Registered in the driver only (the Ray test): the worker gets it with the step."""

    text: str


@pytest.fixture
def registry():
    """The registry as it was before the test, restored after it."""
    saved = (_usertypes.BY_TYPE, _usertypes.BY_NAME)
    yield codec
    _usertypes.BY_TYPE, _usertypes.BY_NAME = saved
    _usertypes._snapshot = None


@pytest.fixture
def types(registry):
    for cls in (Role, Priority, Point, ChatMessage):
        codec.register(cls)
    return registry


# -- round trips ------------------------------------------------------------------------------


def test_registered_values_round_trip(types):
    msg = ChatMessage(id="m1", content="hi", tool_calls=[{"name": "f", "args": {"a": (1, 2)}}], role=Role.AI)
    value = {"msg": msg, "pts": [Point(1, 2, ("a",)), Point(3)], "role": Role.AI, "prio": Priority.HIGH,
             "nested": (msg, {Role.HUMAN})}
    back = decode(encode(value))
    assert back == value
    assert type(back["msg"]) is ChatMessage and type(back["prio"]) is Priority and back["role"] is Role.AI
    assert type(back["pts"][0]) is Point and back["pts"][0].tags == ("a",)
    assert codec.registered()[f"{__name__}.ChatMessage"] is ChatMessage


def test_registered_type_name_is_stable_and_can_be_chosen(registry):
    codec.register(Point, name="geo.Point")
    data = encode(Point(1))
    assert b"geo.Point" in data and b"test_codec_registry" not in data
    codec.register(Point, name="geo.Point")  # again: a no-op
    assert decode(data) == Point(1)


def test_decorator_and_custom_encode_decode(registry):
    codec.register(Opaque, encode=lambda o: {"v": o.value}, decode=lambda d: Opaque(d["v"]))
    assert decode(encode([Opaque(3)])) == [Opaque(3)]

    @codec.register(name="tests.Local")
    class Local(enum.Enum):
        A = 1

    assert codec.registered()["tests.Local"] is Local and decode(encode(Local.A)) is Local.A
    assert codec.register(Point) is Point  # the plain decorator form returns the class


def test_dataclass_gains_a_field_with_a_default(registry):
    codec.register(Point, name="p")
    data = encode(Point(5, 6))
    codec.unregister(Point)

    @dataclasses.dataclass(frozen=True)
    class PointV2:
        x: int
        y: int = 0
        tags: tuple[str, ...] = ()
        norm: int = dataclasses.field(default=0, init=False)
        z: int = 7

    codec.register(PointV2, name="p")
    assert decode(data) == PointV2(5, 6, (), 7)


def test_aliases_round_trip(registry):
    codec.register(Aliased)
    assert decode(encode(Aliased(fullName="Ada"))) == Aliased(fullName="Ada")


# -- refusals ---------------------------------------------------------------------------------


def test_unknown_type_name_on_read_says_how_to_register_and_imports_nothing(registry):
    codec.register(Point, name="never_imported_module_xyz.Point")
    data = encode({"p": Point(1)})
    codec.unregister(Point)
    with pytest.raises(CodecError) as ei:
        decode(data)
    text = str(ei.value)
    assert "'never_imported_module_xyz.Point'" in text and "not registered" in text
    assert "atomr.codec.register(Point)" in text and "never imports" in text
    assert "never_imported_module_xyz" not in sys.modules


def test_a_type_that_cannot_be_rebuilt_names_itself(registry):
    codec.register(ChatMessage, name="chat")
    # a plain Enum in a field is stored as itself: its class must be registered too
    with pytest.raises(CodecError, match=r"test_codec_registry\.Role is not storable.*register"):
        encode(ChatMessage(content="x"))
    codec.register(Role)
    data = encode(ChatMessage(content="x"))
    codec.unregister(ChatMessage)

    class Stricter(pydantic.BaseModel):
        content: int

    codec.register(Stricter, name="chat")
    with pytest.raises(StoredTypeMismatch, match=r"stored 'chat' value does not fit the registered class "
                       r".*Stricter any more.*not damaged.*register\(Stricter, encode=\.\.\., decode=\.\.\.\)"):
        decode(data)


def test_unregistered_values_are_refused_with_a_hint(registry):
    with pytest.raises(CodecError, match=r"channel 'm' by step 's'.*ChatMessage.*atomr\.codec\.register"):
        encode_writes("s", [("m", ChatMessage(content="x"))])
    codec.register(ChatMessage)

    class Sub(ChatMessage):
        pass

    with pytest.raises(CodecError, match="Sub"):  # subclasses are registered one by one
        encode(Sub(content="x"))


def test_register_misuse(registry):
    for bad, match in [(3, "takes a class"), (dict, "stored already"), (Opaque, r"not a pydantic v2 model.*pass encode=")]:
        with pytest.raises(CodecError, match=match):
            codec.register(bad)
    with pytest.raises(CodecError, match="both encode= and decode="):
        codec.register(Opaque, encode=lambda o: o.value)

    class Inner(pydantic.BaseModel):
        a: int = 0

    with pytest.raises(CodecError, match="defined inside a function.*name="):
        codec.register(Inner)
    codec.register(Inner, name="tests.Inner")
    with pytest.raises(CodecError, match="registered already, as 'tests.Inner'"):
        codec.register(Inner, name="tests.Other")
    with pytest.raises(CodecError, match="taken by"):
        codec.register(Point, name="tests.Inner")


def test_a_redefined_class_replaces_the_old_one(registry):
    codec.register(ChatMessage)
    old = ChatMessage
    New = type("ChatMessage", (pydantic.BaseModel,), {"__module__": __name__, "__annotations__": {"content": str}})
    New.__qualname__ = "ChatMessage"
    codec.register(New)
    assert codec.registered()[f"{__name__}.ChatMessage"] is New and old not in _usertypes.BY_TYPE


def test_depth_limits_hold_inside_registered_values(registry):
    @dataclasses.dataclass
    class Box:
        inner: Any

    codec.register(Box, name="tests.Box")
    deep: Any = 0
    for _ in range(150):
        deep = [deep]
    with pytest.raises(CodecError, match="levels deep"):
        encode(Box(deep))
    nest: Any = 0
    for _ in range(40):
        nest = Box(nest)
    with pytest.raises(CodecError, match="nested in each other more than 32"):
        encode(nest)
    nest = 0
    for _ in range(30):
        nest = Box(nest)
    assert decode(encode(nest)) == nest


# -- through runs: LMDB, rehydration, fork, CLI JSON ------------------------------------------


def _chat_workflow() -> Workflow:
    def ask(state, ctx):
        return {"messages": [ChatMessage(id="q", content=state["topic"])], "roles": [Role.HUMAN]}

    def think(state, ctx):
        answer = ctx.interrupt({"draft": ChatMessage(id="a", type="ai", content="draft", role=Role.AI)})
        return {"messages": [ChatMessage(id="a", type="ai", content=answer, role=Role.AI,
                                         tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "t1"}])]}

    def revise(state, ctx):
        # same id: replaces the question in place (AppendMessages merges by id)
        return {"messages": [ChatMessage(id="q", content=state["topic"] + "?"), ChatMessage(content="no id")],
                "where": Point(1, 2)}

    dag = (Dag.builder("ask").step("ask", ask).step("think", think).step("revise", revise)
           .edge("ask", "think").edge("think", "revise").build())
    schema = StateSchema({"topic": LastWriteWins(), "messages": AppendMessages(), "roles": AppendList(),
                          "where": (LastWriteWins(), Point(0))})
    return Workflow("chat", dag, schema)


def test_message_models_through_append_messages_lmdb_rehydration_and_fork(types, tmp_path):
    path = str(tmp_path / "store")
    with Runtime(store=LmdbStore(path)) as rt:
        rt.register(_chat_workflow())
        out = rt.start("chat", {"topic": "durability"}, run_id="r").result(timeout=T)
        assert isinstance(out, Paused)
        assert out.interrupts[0].payload["draft"] == ChatMessage(id="a", type="ai", content="draft", role=Role.AI)
    with Runtime(store=LmdbStore(path)) as rt:  # a new process would see the same
        rt.register(_chat_workflow())
        done = rt.resume("chat", "r", Command(resume="an answer")).result(timeout=T)
        assert isinstance(done, Done), done
        msgs = done.state["messages"]
        assert [m.id for m in msgs] == ["q", "a", None]
        assert msgs[0].content == "durability?" and msgs[1].tool_calls[0]["id"] == "t1"
        assert all(type(m) is ChatMessage for m in msgs) and msgs[1].role is Role.AI
        assert done.state["roles"] == [Role.HUMAN] and done.state["where"] == Point(1, 2)
        history = rt.history("chat", "r")
        assert history[0].values["where"] == Point(0)
        assert rt.get_state("chat", "r").values == done.state
        fork = rt.fork("chat", "r", 1, edits={"messages": [ChatMessage(id="q", content="forked")]})
        view = rt.get_state("chat", fork)
        assert view.values["messages"][0] == ChatMessage(id="q", content="forked")
        # the CLI's JSON: registered values as their data
        text = json_text(plain(done.state))
        data = json.loads(text)
        assert data["messages"][1]["tool_calls"][0]["name"] == "search" and data["messages"][1]["role"] == "ai"
        assert data["where"] == {"x": 1, "y": 2, "tags": [], "norm": 0} and data["roles"] == ["human"]
    codec.unregister(ChatMessage)
    with Runtime(store=LmdbStore(path, readonly=True)) as rt:  # a reader that did not register it
        rt.register(_chat_workflow())
        with pytest.raises(UnregisteredType, match="ChatMessage.*not registered.*register"):
            rt.get_state("chat", "r")


def test_real_langchain_messages_through_append_messages(registry):
    lc = pytest.importorskip("langchain_core.messages")
    for cls in (lc.HumanMessage, lc.AIMessage, lc.ToolMessage):
        codec.register(cls)

    def llm(state, ctx):
        return {"messages": [lc.AIMessage(content="calling", id="a1",
                                          tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}])]}

    def tool(state, ctx):
        return {"messages": [lc.ToolMessage(content="42", tool_call_id="c1", id="t1"),
                             lc.AIMessage(content="the answer is 42", id="a1")]}

    dag = Dag.builder("llm").step("llm", llm).step("tool", tool).edge("llm", "tool").build()
    wf = Workflow("lc", dag, StateSchema({"messages": AppendMessages()}))
    with Runtime(store=MemoryStore()) as rt:
        rt.register(wf)
        out = rt.start("lc", {"messages": [lc.HumanMessage(content="hi", id="h1")]}, run_id="r").result(timeout=T)
        assert isinstance(out, Done), out
        assert [(type(m).__name__, m.id) for m in out.state["messages"]] == [
            ("HumanMessage", "h1"), ("AIMessage", "a1"), ("ToolMessage", "t1")]
        assert out.state["messages"][1].content == "the answer is 42"
        assert [c.values["messages"] for c in rt.history("lc", "r")][-1] == out.state["messages"]


def test_cli_show_json_of_registered_values(types, tmp_path):
    mod = tmp_path / "regwf.py"
    mod.write_text(
        "import atomr\nfrom atomr import Dag, LastWriteWins, StateSchema, Workflow, codec\n"
        "from test_codec_registry import ChatMessage, Role\n"
        "codec.register(ChatMessage); codec.register(Role)\n"
        "def s(state, ctx):\n    return {'m': ChatMessage(id='x', content='hi', role=Role.AI)}\n"
        "workflow = Workflow('reg', Dag.builder('s').step('s', s).build(), StateSchema({'m': LastWriteWins()}))\n",
        encoding="utf-8")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'tests'}:{ROOT}"}
    store = str(tmp_path / "st")
    run = subprocess.run([sys.executable, "-m", "atomr", "--store", store, "run", "regwf:workflow",
                          "--run-id", "r1"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    show = subprocess.run([sys.executable, "-m", "atomr", "--store", store, "show", "reg", "r1", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert show.returncode == 0, show.stderr
    assert '"content": "hi"' in show.stdout and '"role": "ai"' in show.stdout


# -- Ray: the registry travels with each step -------------------------------------------------


def ray_note(state: Any, ctx: Any) -> Any:
    """Runs on a Ray worker: writes a registered value (encoded there) and the
    trace id its code sees (the step span's, sent along with the step)."""
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    return {"note": RayNote(text=f"from {state['who']}"), "trace": f"{span.trace_id:032x}"}


@pytest.mark.ray
def test_registered_types_and_trace_context_travel_to_ray_workers(registry, tmp_path):
    pytest.importorskip("ray")
    otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import ray_workflows

    import atomr.otel
    from atomr.ray import RayExecutor

    codec.register(RayNote)  # here only: the worker imports this module, which does not register it
    exporter = InMemorySpanExporter()
    provider = otel_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    import ray

    if ray.is_initialized():  # pragma: no cover
        ray.shutdown()
    ray_workflows.init_local_ray(ray, num_cpus=1)
    atomr.otel.instrument(tracer_provider=provider)
    try:
        wf = Workflow("rn", Dag.builder("ray_note").step("ray_note", ray_note).build(),
                      StateSchema({"who": LastWriteWins(), "note": LastWriteWins(), "trace": LastWriteWins()}))
        with Runtime(store=LmdbStore(str(tmp_path / "s")), executor=RayExecutor()) as rt:
            rt.register(wf)
            out = rt.start("rn", {"who": "ray"}, run_id="r").result(timeout=120)
            assert isinstance(out, Done), out
            assert out.state["note"] == RayNote(text="from ray")
            assert rt.get_state("rn", "r").values["note"] == RayNote(text="from ray")
    finally:
        atomr.otel.uninstrument()
        ray.shutdown()
    [step] = [s for s in exporter.get_finished_spans() if s.name == "atomr.step ray_note"]
    assert out.state["trace"] == f"{step.context.trace_id:032x}"
