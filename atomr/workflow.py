"""Workflow: a DAG, its state schema and how to run it (breakpoints, retries, timeouts)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from atomr.errors import GraphError
from atomr.graph.dag import Dag, StepKind
from atomr.graph.schema import StateSchema
from atomr.graph.superstep import Plan

__all__ = ["RetryPolicy", "Workflow"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing step is attempted, and how long to wait between attempts.

    The wait before attempt ``n + 1`` is ``backoff_s * multiplier ** (n - 1)``,
    at most ``max_backoff_s``. Only exceptions that are instances of
    ``retry_on`` are retried; atomr's own misuse errors never are.
    """

    max_attempts: int = 1
    backoff_s: float = 0.0
    multiplier: float = 2.0
    max_backoff_s: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise GraphError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}; use 1 for no retry")
        if self.backoff_s < 0 or self.multiplier < 1:
            raise GraphError(f"RetryPolicy needs backoff_s >= 0 and multiplier >= 1, got {self.backoff_s} and {self.multiplier}; fix them")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.backoff_s * self.multiplier ** (attempt - 1), self.max_backoff_s)


class Workflow:
    """A named, runnable workflow. Immutable; register it with ``Runtime.register``.

    ``interrupt_before`` / ``interrupt_after``: step ids to pause before their
    super-step runs / after it is committed. ``retry``: the default policy of
    every step. ``step_timeout_s``: a step running longer is a failed attempt
    with error type ``StepTimeout`` (None: no limit).
    """

    def __init__(
        self,
        id: str,
        dag: Dag,
        schema: StateSchema,
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        step_timeout_s: float | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise GraphError(f"workflow id must be a non-empty string, got {id!r}")
        if not isinstance(dag, Dag):
            raise GraphError(f"workflow {id!r}: dag must be a built Dag (Dag.builder(...).build()), got {type(dag).__name__}")
        if not isinstance(schema, StateSchema):
            raise GraphError(f"workflow {id!r}: schema must be a StateSchema, got {type(schema).__name__}")
        if step_timeout_s is not None and step_timeout_s <= 0:
            raise GraphError(f"workflow {id!r}: step_timeout_s must be > 0 or None, got {step_timeout_s}")
        self.id = id
        self.dag = dag
        self.schema = schema
        self.interrupt_before = tuple(interrupt_before)
        self.interrupt_after = tuple(interrupt_after)
        self.retry = retry or RetryPolicy()
        self.step_timeout_s = step_timeout_s
        self.plan = Plan(dag, schema, self.interrupt_before, self.interrupt_after)
        self.is_async: dict[str, bool] = {
            s: (not isinstance(fn, StepKind)) and is_async_step(fn) for s, fn in dag.steps.items()
        }
        self.channels = schema.keys()
        from atomr.kinds import DagBody, Loop

        for fn in dag.steps.values():
            if isinstance(fn, Loop) and isinstance(fn.body, DagBody):
                fn.body.bind(schema)

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, steps={len(self.dag)})"

    def to_mermaid(self) -> str:
        """Mermaid flowchart text of the DAG (branches labelled, kinds marked)."""
        from atomr._mermaid import to_mermaid

        return to_mermaid(self)


def is_async_step(fn: Any) -> bool:
    """True for an ``async def`` function or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)
