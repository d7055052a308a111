"""Workflow: a DAG, its state schema and how to run it (breakpoints, retries, timeouts)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from atomr._check import check_int, check_number, check_optional_number
from atomr._mermaid import to_mermaid
from atomr.errors import GraphError, WorkflowSpecError
from atomr.graph.dag import Dag, StepKind, is_async_step
from atomr.graph.options import RetryPolicy
from atomr.graph.schema import StateSchema
from atomr.graph.superstep import Plan
from atomr.graph.view import viewer

__all__ = ["Limit", "RetryPolicy", "Workflow"]


@dataclass(frozen=True)
class Limit:
    """At most ``concurrency`` executions of a step at once, and at most
    ``per_second`` starts per second (None: no limit), across every run of a
    runtime (``scope="worker"``, the default) or of every worker of a shared
    store (``scope="global"``: the slots are held in the store; needs an
    SqliteStore or a PostgresStore). Waiting executions hold no thread."""

    concurrency: int | None = None
    per_second: float | None = None
    scope: str = "worker"

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            check_int(self.concurrency, "Limit.concurrency", lo=1, error=GraphError,
                      hint="pass how many may run at once, or None")
        if self.per_second is not None:
            check_number(self.per_second, "Limit.per_second", lo=0, lo_open=True, error=GraphError,
                         hint="pass starts per second, or None")
        if self.concurrency is None and self.per_second is None:
            raise GraphError("a Limit needs concurrency=, per_second= or both")
        if self.scope not in ("worker", "global"):
            raise GraphError(f"Limit.scope must be 'worker' or 'global', got {self.scope!r}")


class Workflow:
    """A named, runnable workflow. Immutable; register it with ``Runtime.register``.

    ``interrupt_before`` / ``interrupt_after``: step ids to pause before their
    super-step runs / after it is committed. ``retry``: the default policy of
    every step. ``step_timeout_s``: a step running longer is a failed attempt
    with error type ``StepTimeout`` (None: no limit). A step's own
    ``DagBuilder.step(..., retry=, timeout_s=)`` overrides both for that step. ``run_timeout_s``: time
    spent executing (not paused or sleeping) beyond it fails the run with
    error type ``RunTimeout``, abandoning what is in flight as a cancel does.
    ``max_concurrent_runs``: starts beyond it wait, durably and in order, with
    status "queued". ``step_limits``: ``{step: Limit(concurrency=, per_second=)}`` across all
    runs of the runtime. ``version``: recorded by each run it starts; a run is resumed or recovered
    only by the same version or by one whose ``compatible_with`` names it. ``spec``:
    ``"pkg.mod:attr"``, where the CLI finds this workflow (recorded in each run's meta as
    ``module``); None: found at ``register()``, the module-level name bound to it. ``retention_s``:
    finished runs (done, failed, cancelled) whose end is older than this are deleted
    in the background (None: kept).
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
        run_timeout_s: float | None = None,
        version: str | None = None,
        compatible_with: Iterable[str] = (),
        step_limits: Mapping[str, Limit] | None = None,
        max_concurrent_runs: int | None = None,
        spec: str | None = None,
        retention_s: float | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise GraphError(f"workflow id must be a non-empty string, got {id!r}; pass a name")
        if not isinstance(dag, Dag):
            raise GraphError(f"workflow {id!r}: dag must be a built Dag (Dag.builder(...).build()), got {type(dag).__name__}")
        if not isinstance(schema, StateSchema):
            raise GraphError(f"workflow {id!r}: schema must be a StateSchema, got {type(schema).__name__}; pass StateSchema({{...}})")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise GraphError(f"workflow {id!r}: retry must be a RetryPolicy or None, got {type(retry).__name__}; pass RetryPolicy(max_attempts=...)")
        step_timeout_s = check_optional_number(
            step_timeout_s, f"workflow {id!r}: step_timeout_s", lo=0, lo_open=True, error=GraphError,
            hint="pass a finite number of seconds, or None for no limit")
        run_timeout_s = check_optional_number(
            run_timeout_s, f"workflow {id!r}: run_timeout_s", lo=0, lo_open=True, error=GraphError,
            hint="pass a finite number of seconds, or None for no limit")
        if version is not None and (not isinstance(version, str) or not version):
            raise GraphError(f"workflow {id!r}: version must be a non-empty str or None, got {version!r}")
        if isinstance(compatible_with, str) or not isinstance(compatible_with, Iterable) \
                or not all(isinstance(v, str) for v in compatible_with):
            raise GraphError(f"workflow {id!r}: compatible_with must be a set of version strings, "
                             f"got {compatible_with!r}; pass e.g. {{'1'}}")
        for name, group in (("interrupt_before", interrupt_before), ("interrupt_after", interrupt_after)):
            if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
                raise GraphError(f"workflow {id!r}: {name} must be a list of step ids, got {group!r}; pass e.g. [{group!r}]")
        if spec is not None and (not isinstance(spec, str) or spec.count(":") != 1
                                 or not all(spec.partition(":")[::2])):
            raise WorkflowSpecError(f"workflow {id!r}: spec must be 'MODULE:ATTR' (e.g. 'app.flows:workflow'), "
                                    f"got {spec!r}")
        #: "module:attr" the CLI loads this workflow by (None: not known yet)
        self.spec: str | None = spec
        #: the module whose code built this workflow (where register() looks for its name)
        self.defined_in: str | None = sys._getframe(1).f_globals.get("__name__")
        self.id = id
        self.dag = dag
        self.schema = schema
        self.interrupt_before = tuple(interrupt_before)
        self.interrupt_after = tuple(interrupt_after)
        self.retry = retry or RetryPolicy()
        self.step_timeout_s = step_timeout_s
        opts = dag.options
        #: step -> the RetryPolicy / timeout (s) it runs with: its own, else the workflow's
        self.step_retry: dict[str, RetryPolicy] = {
            s: (o.retry if (o := opts.get(s)) is not None and o.retry is not None else self.retry) for s in dag.steps}
        self.step_timeouts: dict[str, float | None] = {
            s: (o.timeout_s if (o := opts.get(s)) is not None and o.timeout_s is not None else step_timeout_s)
            for s in dag.steps}
        self.run_timeout_s = run_timeout_s
        self.version = version
        self.compatible_with = frozenset(compatible_with)
        limits = dict(step_limits or {})
        for step, lim in limits.items():
            if step not in dag.steps:
                raise GraphError(f"workflow {id!r}: step_limits names step {step!r}, which is not in the DAG; "
                                 f"steps: {', '.join(sorted(dag.steps))}")
            if not isinstance(lim, Limit):
                raise GraphError(f"workflow {id!r}: step_limits[{step!r}] must be a Limit(...), got {lim!r}")
        self.step_limits: dict[str, Limit] = limits
        if max_concurrent_runs is not None:
            check_int(max_concurrent_runs, f"workflow {id!r}: max_concurrent_runs", lo=1, error=GraphError,
                      hint="pass how many runs may execute at once, or None")
        self.max_concurrent_runs: int | None = max_concurrent_runs
        self.retention_s: float | None = check_optional_number(
            retention_s, f"workflow {id!r}: retention_s", lo=0, lo_open=True, error=GraphError,
            hint="pass how many seconds a finished run is kept, or None to keep every run")
        self.plan = Plan(dag, schema, self.interrupt_before, self.interrupt_after)
        self.is_async: dict[str, bool] = {
            s: (not isinstance(fn, StepKind)) and is_async_step(fn) for s, fn in dag.steps.items()
        }
        self.channels = schema.keys()
        #: values -> the read-only state its steps get (``state.field`` too over a typed schema)
        self.view = viewer(schema)
        for step, fn in dag.steps.items():
            if isinstance(fn, StepKind):
                fn.check(step, schema)

    def runs_version(self, version: str | None) -> bool:
        """May this workflow carry on a run started by ``version``?"""
        return version == self.version or (version is not None and version in self.compatible_with)

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, steps={len(self.dag)})"

    def to_mermaid(self) -> str:
        """Mermaid flowchart text of the DAG (branches labelled, kinds marked)."""
        return to_mermaid(self)
