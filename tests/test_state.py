from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomr.errors import (
    ReducerError,
    SchemaError,
    StateError,
    StepResultError,
    UnknownChannelError,
)
from atomr.graph import (
    AppendList,
    AppendMessages,
    Channel,
    LastWriteWins,
    MergeMap,
    RunState,
    StateSchema,
    apply_writes,
    check_channels,
    fold_superstep,
    normalize_writes,
)


def schema() -> StateSchema:
    return StateSchema(
        {"log": AppendList(), "n": (LastWriteWins(), 0), "meta": (MergeMap(), {"v": 1})}
    )


# --- schema ------------------------------------------------------------------------


def test_schema_short_form():
    s = schema()
    assert s.keys() == frozenset({"log", "n", "meta"})
    assert s.channels["n"] == Channel(LastWriteWins(), 0)
    assert s.reducer("log") == AppendList()
    assert "log" in s and "x" not in s
    assert s.initial_values() == {"log": [], "n": 0, "meta": {"v": 1}}  # a list channel starts empty
    assert "StateSchema(" in repr(s) and "'log': AppendList()" in repr(s)
    assert StateSchema().keys() == frozenset()


def test_list_and_map_channels_start_empty():
    s = StateSchema({"log": AppendList(), "msgs": AppendMessages(), "m": MergeMap(), "x": LastWriteWins(),
                     "given": (AppendList(), None)})
    v1, v2 = s.initial_values(), s.initial_values()
    assert v1 == {"log": [], "msgs": [], "m": {}, "x": None, "given": None}
    v1["log"].append(1)
    v1["m"]["k"] = 1
    assert v2["log"] == [] and v2["m"] == {} and s.initial_values()["log"] == []  # fresh each time
    b = StateSchema.builder().add("log", AppendList()).add("m", MergeMap()).build()
    assert b.initial_values() == {"log": [], "m": {}}
    assert repr(s).startswith("StateSchema({'log': AppendList(), 'msgs': AppendMessages(), 'm': MergeMap()")


def test_schema_channels_read_only():
    s = schema()
    with pytest.raises(TypeError):
        s.channels["x"] = Channel(LastWriteWins())  # type: ignore[index]


def test_initial_values_are_deep_copies():
    s = StateSchema({"m": (MergeMap(), {"nested": [1]})})
    v1 = s.initial_values()
    v1["m"]["nested"].append(2)
    assert s.initial_values() == {"m": {"nested": [1]}}
    assert s.channels["m"].default == {"nested": [1]}


def test_schema_builder():
    s = (
        StateSchema.builder()
        .add("log", AppendList())
        .add_with_default("n", LastWriteWins(), 5)
        .add_lww("x")
        .build()
    )
    assert s.initial_values() == {"log": [], "n": 5, "x": None}
    assert s.reducer("x") == LastWriteWins()
    assert s == StateSchema({"log": AppendList(), "n": (LastWriteWins(), 5), "x": LastWriteWins()})


def test_schema_builder_duplicate_key():
    b = StateSchema.builder().add_lww("x")
    with pytest.raises(SchemaError, match="'x' is declared twice"):
        b.add("x", AppendList())


@pytest.mark.parametrize("bad", [3, "append", None, (LastWriteWins(),), (1, 2)])
def test_schema_non_callable_reducer(bad):
    with pytest.raises(SchemaError) as ei:
        StateSchema({"chan": bad})
    assert "'chan'" in str(ei.value)
    assert isinstance(ei.value, StateError)


def test_schema_reducer_class_instead_of_instance():
    with pytest.raises(SchemaError, match=r"instantiate it: AppendList\(\)"):
        StateSchema({"log": AppendList})  # type: ignore[dict-item]


@pytest.mark.parametrize("key", ["", 3, None])
def test_schema_bad_key(key):
    with pytest.raises(SchemaError, match="non-empty str"):
        StateSchema({key: LastWriteWins()})  # type: ignore[dict-item]


def test_schema_reducer_unknown_channel():
    with pytest.raises(UnknownChannelError, match="'zz'"):
        schema().reducer("zz")


def test_lambda_reducer():
    s = StateSchema({"n": (lambda c, i: (c or 0) + i, 0)})
    assert apply_writes(s, s.initial_values(), [("n", 2), ("n", 3)]) == {"n": 5}


# --- normalize_writes ------------------------------------------------------------


def test_normalize_writes_accepted_shapes():
    assert normalize_writes("s", None) == []
    assert normalize_writes("s", {"a": 1, "b": 2}) == [("a", 1), ("b", 2)]
    assert normalize_writes("s", [("a", 1), ["b", 2]]) == [("a", 1), ("b", 2)]
    assert normalize_writes("s", (("a", 1),)) == [("a", 1)]
    assert normalize_writes("s", []) == []


@pytest.mark.parametrize(
    "bad,needle",
    [
        (3, "returned int"),
        ("ab", "returned str"),
        ([("a", 1), ("b",)], "item 1"),
        ([("a", 1, 2)], "item 0"),
        ([(1, 2)], "key 1"),
        ({1: 2}, "key 1"),
        (("a", 1), "wrap a single pair in a list"),
        ({("a", 1)}, "returned set"),
    ],
)
def test_normalize_writes_rejects(bad, needle):
    with pytest.raises(StepResultError) as ei:
        normalize_writes("stepx", bad)
    assert ei.value.step == "stepx"
    msg = str(ei.value)
    assert "'stepx'" in msg and needle in msg and "a dict of writes" in msg


# --- apply_writes / fold_superstep -------------------------------------------


def test_check_channels():
    check_channels(schema(), [("log", 1)])
    with pytest.raises(UnknownChannelError) as ei:
        check_channels(schema(), [("log", 1), ("oops", 2), ("bad", 3)], step="s1")
    assert ei.value.channel == "oops" and ei.value.step == "s1"
    msg = str(ei.value)
    assert "'oops'" in msg and "'s1'" in msg and "'log', 'meta', 'n'" in msg and "declare it" in msg


def test_apply_writes_order_and_no_mutation():
    s = schema()
    values = s.initial_values()
    before = copy.deepcopy(values)
    out = apply_writes(s, values, [("log", 1), ("n", 3), ("log", [2, 3]), ("meta", {"w": 2})])
    assert out == {"log": [1, 2, 3], "n": 3, "meta": {"v": 1, "w": 2}}
    assert values == before and out is not values
    assert apply_writes(s, values, {"n": 9})["n"] == 9
    assert apply_writes(s, values, iter([("n", 8)]))["n"] == 8


def test_apply_writes_validates_before_merging():
    s = schema()
    values = {"log": [1], "n": 0, "meta": {}}
    with pytest.raises(UnknownChannelError):
        apply_writes(s, values, [("log", 2), ("nope", 1)])
    assert values == {"log": [1], "n": 0, "meta": {}}


def test_apply_writes_reducer_error():
    s = schema()
    values = {"log": [1], "n": 0, "meta": {}}
    with pytest.raises(ReducerError) as ei:
        apply_writes(s, values, [("log", 2), ("meta", 5)], step="s2")
    err = ei.value
    assert err.channel == "meta" and err.step == "s2"
    assert isinstance(err.__cause__, TypeError)
    assert "'meta'" in str(err) and "'s2'" in str(err) and "left unchanged" in str(err)
    assert values == {"log": [1], "n": 0, "meta": {}}


def test_fold_superstep_order_and_skip():
    s = schema()
    values = s.initial_values()
    writes = {"c": [("log", "c1")], "a": [("log", "a1"), ("log", "a2")], "b": [("n", 1)]}
    out = fold_superstep(s, values, writes, ["a", "b", "c", "missing"])
    assert out["log"] == ["a1", "a2", "c1"] and out["n"] == 1
    out2 = fold_superstep(s, values, writes, ["c", "b", "a"])
    assert out2["log"] == ["c1", "a1", "a2"]
    assert values == s.initial_values()


def test_fold_superstep_steps_outside_order_folded_last_sorted():
    s = schema()
    writes = {"z": [("log", "z")], "y": [("log", "y")], "a": [("log", "a")]}
    out = fold_superstep(s, {}, writes, ["a"])
    assert out["log"] == ["a", "y", "z"]


def test_fold_superstep_duplicate_step_in_order_applied_once():
    s = schema()
    out = fold_superstep(s, {}, {"a": [("log", 1)]}, ["a", "a"])
    assert out["log"] == [1]


def test_fold_superstep_errors_name_the_step():
    s = schema()
    values = {"log": None, "n": 0, "meta": {}}
    with pytest.raises(UnknownChannelError) as ei:
        fold_superstep(s, values, {"a": [("log", 1)], "b": [("zz", 1)]}, ["a", "b"])
    assert ei.value.step == "b"
    with pytest.raises(ReducerError) as ei2:
        fold_superstep(s, values, {"a": [("log", 1)], "b": [("meta", 1)]}, ["a", "b"])
    assert ei2.value.step == "b" and ei2.value.channel == "meta"
    assert values == {"log": None, "n": 0, "meta": {}}


# --- RunState ------------------------------------------------------------------------


def test_runstate_basics():
    st_ = RunState(schema())
    assert st_.super_step == 0
    assert st_.read("n") == 0 and st_["log"] == []
    assert st_.get("n") == 0 and st_.get("zz", 7) == 7
    with pytest.raises(UnknownChannelError):
        st_.read("zz")
    with pytest.raises(UnknownChannelError):
        st_["zz"]
    st_.merge_writes([("log", 1), ("log", 2), ("n", 4)])
    assert st_.values == {"log": [1, 2], "n": 4, "meta": {"v": 1}}
    st_.write("log", 3)
    assert st_.read("log") == [1, 2, 3]
    assert st_.advance() == 1 and st_.super_step == 1
    snap = st_.snapshot()
    snap["n"] = 100
    assert st_.read("n") == 4
    assert "super_step=1" in repr(st_)


def test_runstate_absent_value_reads_none():
    st_ = RunState(schema(), values={"n": 1}, super_step=3)
    assert st_.read("log") is None and st_.get("log", "d") == "d"
    assert st_.super_step == 3


def test_runstate_unknown_channel_rejects_whole_batch():
    st_ = RunState(schema())
    before = st_.snapshot()
    old_values = st_.values
    with pytest.raises(UnknownChannelError) as ei:
        st_.merge_writes([("n", 5), ("log", 1), ("ghost", 1)])
    assert ei.value.channel == "ghost"
    assert st_.values == before and st_.values is old_values


def test_runstate_reducer_error_leaves_state_unchanged():
    st_ = RunState(schema())
    before = st_.snapshot()
    with pytest.raises(ReducerError):
        st_.merge_writes([("n", 5), ("meta", "not a dict")])
    assert st_.values == before


def test_runstate_old_values_dict_never_mutated():
    st_ = RunState(schema())
    old = st_.values
    st_.merge_writes({"n": 2, "log": [1]})
    assert old == {"log": [], "n": 0, "meta": {"v": 1}}
    assert st_.values is not old


def test_runstate_eq():
    a, b = RunState(schema()), RunState(schema())
    assert a == b
    a.merge_writes([("n", 1)])
    assert a != b
    b.merge_writes([("n", 1)])
    b.advance()
    assert a != b
    a.advance()
    assert a == b
    assert a != "x"


def test_runstate_merge_superstep():
    st_ = RunState(schema())
    st_.merge_superstep({"b": [("log", "b")], "a": [("log", "a")]}, ["a", "b"])
    assert st_.read("log") == ["a", "b"]


# --- properties ----------------------------------------------------------------------

PROP_SCHEMA = StateSchema(
    {
        "log": AppendList(),
        "msgs": AppendMessages(),
        "meta": (MergeMap(), {}),
        "last": LastWriteWins(),
    }
)

write_st = st.one_of(
    st.tuples(st.just("log"), st.one_of(st.integers(0, 9), st.lists(st.integers(0, 9), max_size=3))),
    st.tuples(
        st.just("msgs"),
        st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "c"]), "v": st.integers(0, 3)}),
    ),
    st.tuples(st.just("meta"), st.dictionaries(st.sampled_from("xyz"), st.integers(0, 3), max_size=2)),
    st.tuples(st.just("last"), st.integers(0, 9)),
)
step_ids = st.sampled_from(["s0", "s1", "s2", "s3", "s4"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(step_ids, st.lists(write_st, max_size=4), max_size=5), st.data())
def test_fold_superstep_equals_sequential_merge(writes_by_step, data):
    order = data.draw(st.permutations(sorted(writes_by_step)))
    values = PROP_SCHEMA.initial_values()
    before = copy.deepcopy(values)
    folded = fold_superstep(PROP_SCHEMA, values, writes_by_step, order)
    assert fold_superstep(PROP_SCHEMA, values, writes_by_step, order) == folded
    seq = RunState(PROP_SCHEMA)
    for step in order:
        seq.merge_writes(writes_by_step[step])
    assert seq.values == folded
    flat = [w for step in order for w in writes_by_step[step]]
    assert apply_writes(PROP_SCHEMA, values, flat) == folded
    assert values == before


@settings(max_examples=100, deadline=None)
@given(st.lists(write_st, max_size=8), st.integers(0, 8))
def test_apply_writes_split_anywhere_equals_whole(writes, cut):
    values = PROP_SCHEMA.initial_values()
    whole = apply_writes(PROP_SCHEMA, values, writes)
    assert apply_writes(PROP_SCHEMA, values, writes) == whole
    part = apply_writes(PROP_SCHEMA, apply_writes(PROP_SCHEMA, values, writes[:cut]), writes[cut:])
    assert part == whole
