from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomr.graph import (
    AppendList,
    AppendMessages,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Reducer,
)

ALL = [LastWriteWins(), AppendList(), AppendMessages(), MergeMap(), MaxByTimestamp()]


def test_builtins_are_reducers_and_associative():
    for r in ALL:
        assert isinstance(r, Reducer)
        assert r.associative is True
    assert isinstance(lambda c, i: i, Reducer)


def test_equality_by_type_and_repr():
    assert AppendList() == AppendList()
    assert AppendList() != MergeMap()
    assert hash(MergeMap()) == hash(MergeMap())
    assert MaxByTimestamp() == MaxByTimestamp("ts_ms")
    assert MaxByTimestamp("t") != MaxByTimestamp()
    assert repr(AppendList()) == "AppendList()"
    assert repr(MaxByTimestamp()) == "MaxByTimestamp()"
    assert repr(MaxByTimestamp("t")) == "MaxByTimestamp(field='t')"
    for r in ALL:
        assert pickle.loads(pickle.dumps(r)) == r


def test_last_write_wins():
    assert LastWriteWins()(1, 2) == 2
    assert LastWriteWins()(1, None) is None


def test_append_list():
    r = AppendList()
    assert r(None, [1]) == [1]
    assert r([1], [2, 3]) == [1, 2, 3]
    assert r([1], 2) == [1, 2]
    assert r([1], (2, 3)) == [1, 2, 3]
    assert r(0, [1]) == [0, 1]
    assert r("ab", "cd") == ["ab", "cd"]
    assert r([1], {"a": 1}) == [1, {"a": 1}]
    assert r([1], None) == [1]
    assert r(None, None) == []


def test_append_list_never_mutates_and_returns_new():
    cur, inc = [1, 2], [3]
    out = AppendList()(cur, inc)
    assert cur == [1, 2] and inc == [3]
    assert out is not cur and out is not inc
    assert AppendList()(cur, []) is not cur


def m(id, text="", **kw):
    return {"id": id, "text": text, **kw}


def test_append_messages_replace_in_place():
    r = AppendMessages()
    cur = [m("1", "a"), m("2", "b"), m("3", "c")]
    snapshot = copy.deepcopy(cur)
    out = r(cur, [m("2", "B"), m("4", "d")])
    assert out == [m("1", "a"), m("2", "B"), m("3", "c"), m("4", "d")]
    assert cur == snapshot


def test_append_messages_single_message_and_none_current():
    r = AppendMessages()
    assert r(None, m("1", "a")) == [m("1", "a")]
    assert r([], []) == []
    assert r(None, None) == []


def test_append_messages_without_id_are_appended():
    r = AppendMessages()
    out = r([{"text": "x"}], [{"text": "x"}, {"id": None, "text": "y"}])
    assert out == [{"text": "x"}, {"text": "x"}, {"id": None, "text": "y"}]


def test_append_messages_duplicate_ids_in_incoming_collapse():
    r = AppendMessages()
    assert r([], [m("1", "a"), m("1", "b")]) == [m("1", "b")]


def test_append_messages_object_with_id_attribute():
    class Msg:
        def __init__(self, id, text):
            self.id, self.text = id, text

    a, b = Msg("1", "a"), Msg("1", "b")
    assert AppendMessages()([a], [b]) == [b]


def test_append_messages_non_str_id():
    with pytest.raises(TypeError, match="message id must be a str"):
        AppendMessages()([], [{"id": 3}])


def test_merge_map():
    r = MergeMap()
    cur = {"a": 1, "b": 2}
    out = r(cur, {"b": 3, "c": 4})
    assert out == {"a": 1, "b": 3, "c": 4}
    assert cur == {"a": 1, "b": 2}
    assert r(None, {"a": 1}) == {"a": 1}
    assert r([1, 2], {"a": 1}) == {"a": 1}
    inc = {"x": 1}
    assert r(None, inc) is not inc


@pytest.mark.parametrize("bad", [None, [("a", 1)], 3, "ab"])
def test_merge_map_non_dict_incoming(bad):
    with pytest.raises(TypeError, match="MergeMap needs a dict"):
        MergeMap()({}, bad)


def test_max_by_timestamp():
    r = MaxByTimestamp()
    old, new = {"ts_ms": 5, "v": "old"}, {"ts_ms": 7, "v": "new"}
    assert r(old, new) is new
    assert r(new, old) is new
    tie = {"ts_ms": 7, "v": "tie"}
    assert r(new, tie) is tie
    assert r(None, {"v": 1}) == {"v": 1}  # both missing: tie -> incoming
    assert r({"ts_ms": 1}, {"v": 1}) == {"ts_ms": 1}  # missing = -inf
    assert r({"ts_ms": 1}, "not a dict") == {"ts_ms": 1}
    assert r({"ts_ms": 1}, {"ts_ms": True}) == {"ts_ms": 1}  # bools are not timestamps
    assert r({"ts_ms": 1}, {"ts_ms": "9"}) == {"ts_ms": 1}
    assert r({"ts_ms": 1}, {"ts_ms": float("nan")}) == {"ts_ms": 1}
    assert MaxByTimestamp("t")({"t": 2}, {"t": 1}) == {"t": 2}


# --- associativity -------------------------------------------------------------

scalars = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=2))
lists = st.lists(st.integers(0, 9), max_size=4)
list_values = st.one_of(st.none(), st.integers(0, 9), lists, st.tuples(st.integers(0, 9)))
message = st.one_of(
    st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "c", "d"]), "v": st.integers(0, 3)}),
    st.fixed_dictionaries({"v": st.integers(0, 3)}),
    st.fixed_dictionaries({"id": st.none(), "v": st.integers(0, 3)}),
)
message_values = st.one_of(st.none(), message, st.lists(message, max_size=5))
dicts = st.dictionaries(st.sampled_from("abcd"), st.integers(0, 3), max_size=4)
stamped = st.one_of(
    st.none(),
    st.fixed_dictionaries({"ts_ms": st.integers(0, 5), "v": st.integers(0, 3)}),
    st.fixed_dictionaries({"v": st.integers(0, 3)}),
)


def assoc(r, a, b, c):
    before = copy.deepcopy((a, b, c))
    left = r(r(a, b), c)
    right = r(a, r(b, c))
    assert left == right
    assert (a, b, c) == before  # inputs untouched


@settings(max_examples=200)
@given(scalars, scalars, scalars)
def test_lww_associative(a, b, c):
    assoc(LastWriteWins(), a, b, c)


@settings(max_examples=200)
@given(list_values, list_values, list_values)
def test_append_list_associative(a, b, c):
    assoc(AppendList(), a, b, c)


@settings(max_examples=300)
@given(message_values, message_values, message_values)
def test_append_messages_associative(a, b, c):
    assoc(AppendMessages(), a, b, c)


@settings(max_examples=200)
@given(st.one_of(st.none(), dicts), dicts, dicts)
def test_merge_map_associative(a, b, c):
    assoc(MergeMap(), a, b, c)


@settings(max_examples=200)
@given(stamped, stamped, stamped)
def test_max_by_timestamp_associative(a, b, c):
    r = MaxByTimestamp()
    assert r(r(a, b), c) is r(a, r(b, c))


@settings(max_examples=100)
@given(message_values, message_values)
def test_append_messages_ids_unique_and_position_kept(a, b):
    out = AppendMessages()(a, b)
    ids = [x["id"] for x in out if x.get("id") is not None]
    assert len(ids) == len(set(ids))
    cur_ids = []
    for x in a if isinstance(a, list) else ([] if a is None else [a]):
        if x.get("id") is not None and x["id"] not in cur_ids:
            cur_ids.append(x["id"])
    assert ids[: len(cur_ids)] == cur_ids
