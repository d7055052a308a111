"""The workflow DAG: steps, edges, branches and join policies.

Build one with :meth:`Dag.builder`; :meth:`DagBuilder.build` validates the
graph and returns an immutable :class:`Dag` whose orderings (topological order,
layers) are computed once, so the runtime can query them for free.
"""

from __future__ import annotations

import heapq
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from atomr.graph.options import StepOptions, step_options

if TYPE_CHECKING:
    from atomr.graph.schema import StateSchema

__all__ = [
    "JOIN_POLICIES",
    "BranchSpec",
    "Dag",
    "DagBuilder",
    "Router",
    "StepKind",
    "find_cycle",
    "is_async_step",
    "unreachable_steps",
]

JOIN_POLICIES = ("all", "any")
"""Valid join policies: wait for ``all`` predecessors, or run after ``any`` of them."""

Router = Callable[[Mapping[str, Any]], "str | list[str]"]
"""A branch router: reads the state, returns the label(s) to follow."""


class StepKind:
    """Base class of special step objects (Loop, Map, Human, Subgraph...)."""

    __slots__ = ()

    def check(self, step: str, schema: StateSchema) -> None:
        """Refuse (with a GraphError naming ``step``) a kind that cannot run over
        ``schema``; called once by the Workflow it is part of."""


def is_async_step(fn: Any) -> bool:
    """True for an ``async def`` function or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def _is_step_fn(fn: object) -> bool:
    return callable(fn) or isinstance(fn, StepKind)


@dataclass(frozen=True)
class BranchSpec:
    """A conditional fan-out: ``router(state)`` picks labels, ``targets`` maps them to steps."""

    step: str
    router: Router
    targets: dict[str, str]

    def resolve(self, picked: str | Iterable[str]) -> list[str]:
        """The step ids of the labels ``picked`` (order kept, duplicates dropped).

        Raises :class:`BranchError` for a label this branch does not declare.
        """
        labels = [picked] if isinstance(picked, str) else list(picked)
        out: list[str] = []
        for label in labels:
            target = self.targets.get(label) if isinstance(label, str) else None
            if target is None:
                known = ", ".join(repr(k) for k in self.targets)
                raise BranchError(
                    f"router of step {self.step!r} picked unknown label {label!r}; "
                    f"known labels: {known}; return one of them from the router"
                )
            if target not in out:
                out.append(target)
        return out


def find_cycle(steps: Iterable[str], edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None when it is acyclic.

    Depth-first search from each step in ``steps`` order, successors in
    ``edges`` order, so the cycle reported is deterministic.
    """
    color: dict[str, int] = {}  # missing = unvisited, 1 = on the path, 2 = done
    for start in steps:
        if start in color:
            continue
        color[start] = 1
        path = [start]
        stack = [iter(edges.get(start, ()))]
        while stack:
            for nxt in stack[-1]:
                state = color.get(nxt)
                if state == 1:
                    return path[path.index(nxt) :] + [nxt]
                if state is None:
                    color[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(edges.get(nxt, ())))
                    break
            else:
                color[path.pop()] = 2
                stack.pop()
    return None


def unreachable_steps(
    steps: Iterable[str], edges: Mapping[str, Iterable[str]] | Iterable[tuple[str, str]]
) -> set[str]:
    """Steps not reachable from any root (a step with no predecessor).

    ``edges`` is either a successor map (``{a: [b, c]}``) or ``(a, b)`` pairs.
    Only a cyclic graph can have unreachable steps (a cycle nothing leads into).
    """
    ids = list(steps)
    pairs: Iterable[tuple[str, str]]
    if isinstance(edges, Mapping):
        pairs = ((a, b) for a, succ in edges.items() for b in succ)
    else:
        pairs = edges
    succs: dict[str, list[str]] = {s: [] for s in ids}
    has_pred: set[str] = set()
    for a, b in pairs:
        succs.setdefault(a, []).append(b)
        has_pred.add(b)
    seen = {s for s in ids if s not in has_pred}
    todo = list(seen)
    while todo:
        for nxt in succs.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return {s for s in ids if s not in seen}


class Dag:
    """An immutable, validated DAG of steps. Create it with :meth:`Dag.builder`.

    Attributes: ``entry``, ``steps`` (id -> fn, insertion order), ``edges``
    (id -> successor ids), ``preds`` (id -> predecessor ids), ``branches``
    (id -> :class:`BranchSpec`), ``join_policy`` (id -> "any"; "all" is implied),
    ``options`` (id -> :class:`~atomr.graph.options.StepOptions`, for steps given their own).
    """

    entry: str
    steps: dict[str, Any]
    edges: dict[str, tuple[str, ...]]
    preds: dict[str, tuple[str, ...]]
    branches: dict[str, BranchSpec]
    join_policy: dict[str, str]
    options: dict[str, StepOptions]

    def __init__(
        self,
        entry: str,
        steps: Mapping[str, Any],
        edges: Iterable[tuple[str, str]] = (),
        branches: Iterable[BranchSpec] = (),
        join_policy: Mapping[str, str] | None = None,
        options: Mapping[str, StepOptions] | None = None,
    ) -> None:
        """Validate and freeze a graph; prefer :meth:`Dag.builder`."""
        steps = dict(steps)
        if entry not in steps:
            raise EntryError(entry, steps)
        for sid, fn in steps.items():
            if not _is_step_fn(fn):
                raise NotCallableError(sid, fn)
        succ: dict[str, list[str]] = {s: [] for s in steps}
        for a, b in edges:
            for end in (a, b):
                if end not in steps:
                    raise UnknownStepError(end, steps, where=f"edge {a} -> {b}")
            if b not in succ[a]:
                succ[a].append(b)
        branch_map: dict[str, BranchSpec] = {}
        for spec in branches:
            _check_branch(spec, steps)
            if spec.step in branch_map:
                raise BranchError(
                    f"step {spec.step!r} has two branch declarations; declare one .branch() "
                    "per step with all its labels in one targets mapping"
                )
            branch_map[spec.step] = spec
            for target in spec.targets.values():
                if target not in succ[spec.step]:
                    succ[spec.step].append(target)
        joins: dict[str, str] = {}
        for sid, policy in (join_policy or {}).items():
            if sid not in steps:
                raise UnknownStepError(sid, steps, where="join")
            if policy not in JOIN_POLICIES:
                raise JoinError(
                    f"unknown join policy {policy!r} for step {sid!r}; "
                    "use 'all' (wait for every predecessor) or 'any' (run after the first)"
                )
            if policy != "all":
                joins[sid] = policy
        cycle = find_cycle(steps, succ)
        if cycle is not None:
            raise CycleError(cycle)
        lost = unreachable_steps(steps, succ)
        if lost:  # pragma: no cover - impossible once the graph is acyclic
            raise UnreachableStepError(lost)
        pred: dict[str, list[str]] = {s: [] for s in steps}
        for a, succs in succ.items():
            for b in succs:
                pred[b].append(a)
        d = self.__dict__
        d["entry"] = entry
        d["steps"] = steps
        d["edges"] = {s: tuple(v) for s, v in succ.items()}
        d["preds"] = {s: tuple(v) for s, v in pred.items()}
        d["branches"] = branch_map
        d["join_policy"] = joins
        d["options"] = {s: o for s, o in (options or {}).items() if s in steps}
        order = _kahn(steps, succ, pred)
        layer: dict[str, int] = {}
        for s in order:
            layer[s] = max((layer[p] for p in pred[s]), default=-1) + 1
        layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
        for s in order:
            layers[layer[s]].append(s)
        d["_order"] = tuple(order)
        d["_index"] = {s: i for i, s in enumerate(order)}
        d["_layer"] = layer
        d["_layers"] = tuple(tuple(x) for x in layers)
        d["_roots"] = tuple(s for s in order if not pred[s])

    @staticmethod
    def builder(entry: str) -> DagBuilder:
        """A new :class:`DagBuilder` whose entry step is ``entry``."""
        return DagBuilder(entry)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Dag is immutable (cannot set {name!r}); build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Dag is immutable (cannot delete {name!r})")

    def topo_sort(self) -> list[str]:
        """All steps in topological order, ties broken by step id."""
        return list(self._order)

    def layers(self) -> list[list[str]]:
        """Steps grouped by longest distance from a root; layer k is super-step k+1."""
        return [list(x) for x in self._layers]

    def layer_of(self, step: str) -> int:
        """The layer (0-based) of ``step``."""
        try:
            return self._layer[step]
        except KeyError:
            raise UnknownStepError(step, self.steps, where="layer_of") from None

    def topo_index(self, step: str) -> int:
        """The position of ``step`` in :meth:`topo_sort`."""
        try:
            return self._index[step]
        except KeyError:
            raise UnknownStepError(step, self.steps, where="topo_index") from None

    def roots(self) -> list[str]:
        """Steps without predecessors, in topological order."""
        return list(self._roots)

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __repr__(self) -> str:
        n_edges = sum(len(v) for v in self.edges.values())
        return f"Dag(entry={self.entry!r}, steps={len(self.steps)}, edges={n_edges}, layers={len(self._layers)})"


def _check_branch(spec: BranchSpec, steps: Mapping[str, Any]) -> None:
    known = ", ".join(repr(s) for s in sorted(steps))
    if spec.step not in steps:
        raise BranchError(
            f"branch on unknown step {spec.step!r} (steps: {known}); "
            "add the step with .step() or fix the name"
        )
    if not callable(spec.router):
        raise BranchError(
            f"router of the branch on step {spec.step!r} is not callable "
            f"(got {type(spec.router).__name__}); pass a function router(state) -> label"
        )
    if not spec.targets:
        raise BranchError(
            f"branch on step {spec.step!r} has no targets; pass {{label: step_id, ...}}"
        )
    for label, target in spec.targets.items():
        if not isinstance(label, str):
            raise BranchError(
                f"branch on step {spec.step!r}: label {label!r} is not a str; use string labels"
            )
        if target not in steps:
            raise BranchError(
                f"branch on step {spec.step!r}: target {target!r} of label {label!r} is not "
                f"a step (steps: {known}); add it with .step() or fix the target"
            )


def _kahn(
    steps: Iterable[str], succ: Mapping[str, list[str]], pred: Mapping[str, list[str]]
) -> list[str]:
    indeg = {s: len(pred[s]) for s in steps}
    heap = [s for s, n in indeg.items() if n == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        s = heapq.heappop(heap)
        order.append(s)
        for nxt in succ[s]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                heapq.heappush(heap, nxt)
    if len(order) != len(indeg):  # pragma: no cover - cycles are rejected before
        raise GraphError("dag has a cycle")
    return order


class DagBuilder:
    """Chainable builder of a :class:`Dag`; errors are reported by :meth:`build`."""

    def __init__(self, entry: str) -> None:
        self._entry = entry
        self._steps: dict[str, Any] = {}
        self._duplicates: list[str] = []
        self._edges: list[tuple[str, str]] = []
        self._branches: list[BranchSpec] = []
        self._joins: dict[str, str] = {}
        self._options: dict[str, StepOptions] = {}

    def step(self, id: str, fn: Any, *, retry: Any = None, timeout_s: float | None = None) -> DagBuilder:
        """Add step ``id`` running ``fn(state, ctx)`` (sync/async) or a :class:`StepKind`.

        ``retry`` (a RetryPolicy) and ``timeout_s`` override the workflow's
        ``retry`` / ``step_timeout_s`` for this step (for a Map: for each element)."""
        if not isinstance(id, str) or not id:
            raise GraphError(f"step id must be a non-empty str, got {id!r}; name the step")
        opts = step_options(id, retry, timeout_s)
        if id in self._steps:
            self._duplicates.append(id)
        elif opts is not None:
            self._steps[id], self._options[id] = fn, opts
        else:
            self._steps[id] = fn
        return self

    def edge(self, a: str, b: str) -> DagBuilder:
        """Run ``b`` after ``a``."""
        self._edges.append((a, b))
        return self

    def branch(
        self, step: str, router: Router, targets: Mapping[str, str]
    ) -> DagBuilder:
        """After ``step``, run only the targets whose labels ``router(state)`` returns."""
        self._branches.append(BranchSpec(step, router, dict(targets)))
        return self

    def join(self, step: str, policy: str = "all") -> DagBuilder:
        """Set how ``step`` waits for its predecessors: ``"all"`` or ``"any"``."""
        self._joins[step] = policy
        return self

    def build(self) -> Dag:
        """Validate the graph and return the immutable :class:`Dag`."""
        if self._duplicates:
            raise DuplicateStepError(self._duplicates[0])
        return Dag(self._entry, self._steps, self._edges, self._branches, self._joins, self._options)
