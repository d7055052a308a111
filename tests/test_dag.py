from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomr.errors import (
    BranchError,
    CycleError,
    DuplicateStepError,
    EntryError,
    GraphError,
    JoinError,
    NotCallableError,
    UnknownStepError,
    UnreachableStepError,
)
from atomr.graph import BranchSpec, Dag, StepKind, find_cycle, unreachable_steps


def fn(state, ctx):
    return None


async def afn(state, ctx):
    return None


def chain(*ids: str) -> Dag:
    b = Dag.builder(ids[0])
    for i in ids:
        b.step(i, fn)
    for a, c in zip(ids, ids[1:]):
        b.edge(a, c)
    return b.build()


def diamond() -> Dag:
    return (
        Dag.builder("a")
        .step("a", fn)
        .step("b", fn)
        .step("c", afn)
        .step("d", fn)
        .edge("a", "b")
        .edge("a", "c")
        .edge("b", "d")
        .edge("c", "d")
        .build()
    )


# --- validation ---------------------------------------------------------------


def test_duplicate_step_is_reported_at_build():
    b = Dag.builder("a").step("a", fn).step("b", fn).step("a", afn)
    with pytest.raises(DuplicateStepError) as ei:
        b.build()
    assert ei.value.step == "a"
    assert "'a'" in str(ei.value) and "rename" in str(ei.value)


def test_duplicate_step_comes_before_entry_error():
    b = Dag.builder("zz").step("a", fn).step("a", fn)
    with pytest.raises(DuplicateStepError):
        b.build()


def test_entry_not_a_step():
    with pytest.raises(EntryError) as ei:
        Dag.builder("start").step("a", fn).build()
    msg = str(ei.value)
    assert "'start'" in msg and "'a'" in msg and ".step('start', fn)" in msg


def test_non_callable_step():
    with pytest.raises(NotCallableError) as ei:
        Dag.builder("a").step("a", fn).step("b", 42).edge("a", "b").build()
    assert ei.value.step == "b"
    assert "'b'" in str(ei.value) and "int" in str(ei.value) and "pass a function" in str(ei.value)


def test_step_kind_instances_are_valid_steps():
    class Loop(StepKind):
        pass

    dag = Dag.builder("a").step("a", Loop()).build()
    assert "a" in dag


@pytest.mark.parametrize("a,b,bad", [("a", "x", "x"), ("y", "a", "y")])
def test_edge_to_unknown_step(a, b, bad):
    with pytest.raises(UnknownStepError) as ei:
        Dag.builder("a").step("a", fn).edge(a, b).build()
    assert ei.value.step == bad
    msg = str(ei.value)
    assert f"'{bad}'" in msg and f"edge {a} -> {b}" in msg and "known steps: 'a'" in msg


def test_invalid_step_id():
    with pytest.raises(GraphError, match="non-empty str"):
        Dag.builder("a").step("", fn)


def test_cycle_reports_one_actual_cycle_in_order():
    b = Dag.builder("r").step("r", fn)
    for s in "abc":
        b.step(s, fn)
    b.edge("r", "a").edge("a", "b").edge("b", "c").edge("c", "a")
    with pytest.raises(CycleError) as ei:
        b.build()
    assert ei.value.cycle == ["a", "b", "c", "a"]
    assert "a -> b -> c -> a" in str(ei.value) and "remove one of these edges" in str(ei.value)


def test_self_edge_is_a_cycle():
    with pytest.raises(CycleError) as ei:
        Dag.builder("a").step("a", fn).edge("a", "a").build()
    assert ei.value.cycle == ["a", "a"]


def test_cycle_detection_is_deterministic():
    def build():
        b = Dag.builder("a")
        for s in "abcde":
            b.step(s, fn)
        for x, y in [("a", "b"), ("b", "c"), ("c", "b"), ("a", "d"), ("d", "e"), ("e", "d")]:
            b.edge(x, y)
        return b

    cycles = set()
    for _ in range(5):
        with pytest.raises(CycleError) as ei:
            build().build()
        cycles.add(tuple(ei.value.cycle))
    assert cycles == {("b", "c", "b")}


def test_validation_order_non_callable_before_unknown_edge_before_cycle():
    b = Dag.builder("a").step("a", fn).step("b", None).edge("a", "zz").edge("a", "a")
    with pytest.raises(NotCallableError):
        b.build()
    b = Dag.builder("a").step("a", fn).edge("a", "zz").edge("a", "a")
    with pytest.raises(UnknownStepError):
        b.build()


def test_unreachable_steps_on_a_cyclic_graph():
    steps = ["a", "b", "c", "d"]
    edges = {"a": ["b"], "c": ["d"], "d": ["c"]}
    assert unreachable_steps(steps, edges) == {"c", "d"}
    assert unreachable_steps(steps, [("a", "b"), ("c", "d"), ("d", "c")]) == {"c", "d"}
    assert unreachable_steps(["x", "y"], {"x": ["y"], "y": ["x"]}) == {"x", "y"}
    assert unreachable_steps(["a", "b"], {"a": ["b"]}) == set()
    assert unreachable_steps([], {}) == set()


def test_unreachable_error_message():
    err = UnreachableStepError({"c", "d"})
    assert "'c', 'd'" in str(err) and "connect them" in str(err)


def test_find_cycle_none_on_dag():
    assert find_cycle("abc", {"a": ["b"], "b": ["c"]}) is None


def test_duplicate_edges_kept_once():
    dag = Dag.builder("a").step("a", fn).step("b", fn).edge("a", "b").edge("a", "b").build()
    assert dag.edges == {"a": ("b",), "b": ()}
    assert dag.preds == {"a": (), "b": ("a",)}


# --- orderings -----------------------------------------------------------------


def test_topo_sort_breaks_ties_by_id():
    b = Dag.builder("root")
    for s in ["root", "zeta", "alpha", "mid", "beta"]:
        b.step(s, fn)
    for t in ["zeta", "alpha", "mid"]:
        b.edge("root", t)
    b.edge("alpha", "beta")
    dag = b.build()
    assert dag.topo_sort() == ["root", "alpha", "beta", "mid", "zeta"]
    assert list(dag) == dag.topo_sort()
    assert [dag.topo_index(s) for s in dag.topo_sort()] == list(range(5))


def test_topo_sort_several_roots():
    dag = Dag.builder("b").step("b", fn).step("a", fn).step("c", fn).edge("b", "c").build()
    assert dag.roots() == ["a", "b"]
    assert dag.topo_sort() == ["a", "b", "c"]


def test_layers_diamond():
    dag = diamond()
    assert dag.layers() == [["a"], ["b", "c"], ["d"]]
    assert [dag.layer_of(s) for s in "abcd"] == [0, 1, 1, 2]
    assert dag.roots() == ["a"]
    assert len(dag) == 4 and "c" in dag and "x" not in dag


def test_layers_several_roots():
    dag = (
        Dag.builder("a")
        .step("a", fn)
        .step("x", fn)
        .step("b", fn)
        .step("y", fn)
        .edge("a", "b")
        .edge("x", "y")
        .edge("y", "b")
        .build()
    )
    assert dag.roots() == ["a", "x"]
    assert dag.layers() == [["a", "x"], ["y"], ["b"]]


def test_layers_long_path_wins_at_a_join():
    # a -> j (short) and a -> p1 -> p2 -> j (long): j is on layer 3.
    dag = (
        Dag.builder("a")
        .step("a", fn)
        .step("j", fn)
        .step("p1", fn)
        .step("p2", fn)
        .edge("a", "j")
        .edge("a", "p1")
        .edge("p1", "p2")
        .edge("p2", "j")
        .build()
    )
    assert dag.layer_of("j") == 3
    assert dag.layers() == [["a"], ["p1"], ["p2"], ["j"]]


def test_queries_on_unknown_step():
    dag = diamond()
    with pytest.raises(UnknownStepError):
        dag.layer_of("nope")
    with pytest.raises(UnknownStepError):
        dag.topo_index("nope")


def test_dag_is_immutable_and_returns_copies():
    dag = diamond()
    with pytest.raises(AttributeError):
        dag.entry = "b"  # type: ignore[misc]
    dag.topo_sort().append("x")
    dag.layers()[0].append("x")
    assert dag.topo_sort() == ["a", "b", "c", "d"]
    assert dag.layers() == [["a"], ["b", "c"], ["d"]]
    assert "Dag(" in repr(dag)


def test_long_chain_has_no_recursion_problem():
    ids = [f"s{i:05d}" for i in range(3000)]
    dag = chain(*ids)
    assert dag.topo_sort() == ids
    assert dag.layer_of(ids[-1]) == 2999


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_dags_orderings_are_consistent(data):
    n = data.draw(st.integers(1, 12))
    ids = [f"n{i}" for i in range(n)]
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=30)
    )
    edges = [(ids[i], ids[j]) for i, j in pairs if i < j]  # forward edges: acyclic
    shuffled = data.draw(st.permutations(ids))

    def build(order):
        b = Dag.builder(ids[0])
        for s in order:
            b.step(s, fn)
        for a, c in edges:
            b.edge(a, c)
        return b.build()

    d1, d2 = build(ids), build(shuffled)
    assert d1.topo_sort() == d2.topo_sort()
    assert d1.layers() == d2.layers()
    pos = {s: i for i, s in enumerate(d1.topo_sort())}
    for a, c in edges:
        assert pos[a] < pos[c]
        assert d1.layer_of(a) < d1.layer_of(c)
    for s in ids:
        expected = max((d1.layer_of(p) + 1 for p in d1.preds[s]), default=0)
        assert d1.layer_of(s) == expected
    for layer in d1.layers():
        assert layer == sorted(layer, key=pos.__getitem__)
    assert sorted(s for layer in d1.layers() for s in layer) == sorted(ids)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_graphs_with_back_edge_report_a_real_cycle(data):
    n = data.draw(st.integers(1, 8))
    ids = [f"n{i}" for i in range(n)]
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=20)
    )
    b = Dag.builder(ids[0])
    for s in ids:
        b.step(s, fn)
    for i, j in pairs:
        b.edge(ids[i], ids[j])
    try:
        b.build()
    except CycleError as e:
        cyc = e.cycle
        assert cyc[0] == cyc[-1] and len(set(cyc[:-1])) == len(cyc) - 1
        edge_set = {(ids[i], ids[j]) for i, j in pairs}
        assert all(pair in edge_set for pair in zip(cyc, cyc[1:]))
    else:
        assert find_cycle(ids, {s: [ids[j] for i, j in pairs if ids[i] == s] for s in ids}) is None


# --- branches and joins ------------------------------------------------------------


def router(state):
    return "yes" if state.get("ok") else "no"


def branchy():
    return (
        Dag.builder("check")
        .step("check", fn)
        .step("good", fn)
        .step("bad", fn)
        .step("end", fn)
        .edge("check", "good")
        .branch("check", router, {"yes": "good", "no": "bad"})
        .edge("good", "end")
        .edge("bad", "end")
        .join("end", "any")
    )


def test_branch_records_spec_and_adds_edges_once():
    dag = branchy().build()
    assert dag.branches == {"check": BranchSpec("check", router, {"yes": "good", "no": "bad"})}
    assert dag.edges["check"] == ("good", "bad")
    assert dag.join_policy == {"end": "any"}
    assert dag.layers() == [["check"], ["bad", "good"], ["end"]]


def test_branch_spec_resolve():
    spec = branchy().build().branches["check"]
    assert spec.resolve("yes") == ["good"]
    assert spec.resolve(["no", "yes", "no"]) == ["bad", "good"]
    with pytest.raises(BranchError, match="unknown label 'maybe'.*'yes', 'no'"):
        spec.resolve("maybe")


def test_join_all_is_default_and_not_stored():
    dag = diamond()
    assert dag.join_policy == {}
    dag = Dag.builder("a").step("a", fn).join("a", "all").build()
    assert dag.join_policy == {}


def test_unknown_join_policy():
    with pytest.raises(JoinError) as ei:
        Dag.builder("a").step("a", fn).join("a", "most").build()
    assert isinstance(ei.value, GraphError)
    msg = str(ei.value)
    assert "'most'" in msg and "'a'" in msg and "'all'" in msg and "'any'" in msg


def test_join_on_unknown_step():
    with pytest.raises(UnknownStepError) as ei:
        Dag.builder("a").step("a", fn).join("ghost", "any").build()
    assert ei.value.step == "ghost" and "join" in str(ei.value)


def test_branch_on_unknown_step():
    with pytest.raises(BranchError) as ei:
        Dag.builder("a").step("a", fn).branch("ghost", router, {"yes": "a"}).build()
    assert "'ghost'" in str(ei.value) and "add the step" in str(ei.value)


def test_branch_to_unknown_target():
    b = Dag.builder("a").step("a", fn).step("b", fn).branch("a", router, {"yes": "b", "no": "zz"})
    with pytest.raises(BranchError) as ei:
        b.build()
    msg = str(ei.value)
    assert "'zz'" in msg and "'no'" in msg and "fix the target" in msg


def test_branch_declared_twice():
    b = (
        Dag.builder("a")
        .step("a", fn)
        .step("b", fn)
        .step("c", fn)
        .branch("a", router, {"yes": "b"})
        .branch("a", router, {"no": "c"})
    )
    with pytest.raises(BranchError, match="'a' has two branch declarations"):
        b.build()


@pytest.mark.parametrize(
    "router_, targets, needle",
    [(None, {"yes": "b"}, "not callable"), (router, {}, "no targets"), (router, {1: "b"}, "not a str")],
)
def test_branch_misdeclared(router_, targets, needle):
    with pytest.raises(BranchError, match=needle):
        Dag.builder("a").step("a", fn).step("b", fn).branch("a", router_, targets).build()


def test_branch_cycle_is_detected():
    b = (
        Dag.builder("a")
        .step("a", fn)
        .step("b", fn)
        .edge("a", "b")
        .branch("b", router, {"yes": "a", "no": "a"})
    )
    with pytest.raises(CycleError) as ei:
        b.build()
    assert ei.value.cycle == ["a", "b", "a"]
