"""A workflow compiled for execution: layers, merge order, breakpoints, any-joins.

Pure: no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from atomr.errors import UnknownStepError
from atomr.graph.dag import Dag
from atomr.graph.schema import StateSchema

__all__ = ["Plan"]


class Plan:
    """A workflow compiled for execution: layers, merge order, breakpoints."""

    __slots__ = (
        "dag", "schema", "layers", "layer_of", "order", "before", "after", "n_layers",
        "topo_index", "cancel_on_done",
    )

    def __init__(
        self,
        dag: Dag,
        schema: StateSchema,
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
    ) -> None:
        self.dag = dag
        self.schema = schema
        self.layers: list[list[str]] = [list(layer) for layer in dag.layers()]
        self.n_layers = len(self.layers)
        self.layer_of = {s: i for i, layer in enumerate(self.layers) for s in layer}
        self.order = dag.topo_sort()
        self.topo_index = {s: i for i, s in enumerate(self.order)}
        #: step -> siblings to cancel when it finishes (it feeds an any-join)
        self.cancel_on_done: dict[str, tuple[str, ...]] = {}
        for j, policy in getattr(dag, "join_policy", {}).items():
            if policy == "any":
                preds = dag.preds[j]
                for q in preds:
                    others = tuple(r for r in preds if r != q and self.layer_of[r] == self.layer_of[q])
                    if others:
                        self.cancel_on_done[q] = tuple(dict.fromkeys(self.cancel_on_done.get(q, ()) + others))
        self.before = frozenset(interrupt_before)
        self.after = frozenset(interrupt_after)
        for name, group in (("interrupt_before", self.before), ("interrupt_after", self.after)):
            for s in group:
                if s not in self.layer_of:
                    raise UnknownStepError(s, self.layer_of, where=name)

