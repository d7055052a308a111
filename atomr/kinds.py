"""Step kinds beyond a plain function: Loop, Map, Human, Subgraph; and dispatch_fan_out.

A kind is passed where a step function goes: ``.step("refine", Loop(...))``.
The run actor drives them (predicates, the Map scheduler and the child run of a
Subgraph stay in the run actor's thread); the pieces of user code they wrap (a
Loop body, a Map element) run on the step executor like any step.

Every kind is durable: Map elements and Loop iterations are journaled one by
one (the steps of a Dag body one by one, in the iteration's child run), so
after a crash or a pause only unfinished work runs again.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from atomr._check import check_int
from atomr.errors import GraphError, InvalidResumeValue, Rejected
from atomr.graph.dag import BranchSpec, Dag, StepKind
from atomr.graph.schema import StateSchema
from atomr.workflow import Workflow

__all__ = ["Branch", "Loop", "Map", "Human", "Subgraph", "dispatch_fan_out"]

#: A conditional fan-out, declared with ``DagBuilder.branch(step, router, {label: target})``
#: (found on ``dag.branches[step]``).
Branch = BranchSpec

T = TypeVar("T")
R = TypeVar("R")


def _channel_arg(kind: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(f"{kind} {name} must be a channel name (a non-empty str), got {value!r}; "
                         "pass the key of a channel of the workflow's StateSchema")
    return value


def _channel_list(kind: str, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise GraphError(f"{kind} {name} must be a list of channel names, got {value!r}; "
                         f"pass e.g. [{value!r}]")
    return tuple(_channel_arg(kind, name, v) for v in value)


def _need_channel(kind: str, step: str, name: str, channel: str, schema: StateSchema) -> None:
    if channel not in schema:
        known = ", ".join(repr(k) for k in sorted(schema.keys())) or "(none)"
        raise GraphError(f"{kind} step {step!r}: {name}={channel!r} is not a channel of the workflow "
                         f"(channels: {known}); declare it in the StateSchema or fix the name")


class Loop(StepKind):
    """Run ``body(state, ctx)`` while ``while_(state)`` holds (checked before each
    iteration: zero iterations is fine). Each iteration's writes are merged at
    once and make a checkpoint (``loop:<step>:<n>`` in history). If ``while_``
    still holds after ``max_iterations`` iterations the run fails with
    ``LoopLimitError``.

    ``body`` may also be a :class:`~atomr.Dag` over the same state, of any steps
    a workflow takes (``async def`` steps, branches, interrupts, Map, Subgraph,
    Human, a nested Loop): each iteration runs it as a child run of workflow
    ``"<workflow>:<step>"`` with run id ``"<workflow>/<run>/<step>#<n>@<super-step>"``,
    its steps journaled, retried, timed out and streamed one by one like any
    step; the iteration's writes are all of its steps' writes in merge order.
    An interrupt of body step ``s`` has id ``"<step>#<n>/s:<ss>:<i>"``."""

    def __init__(self, body: Callable[..., Any] | Dag, while_: Callable[[Mapping[str, Any]], bool],
                 max_iterations: int = 25) -> None:
        if isinstance(body, Dag):
            body = DagBody(body)
        elif not callable(body):
            raise GraphError(f"Loop body must be callable fn(state, ctx) or a Dag, got {type(body).__name__}")
        if not callable(while_):
            raise GraphError(f"Loop while_ must be callable fn(state) -> bool, got {type(while_).__name__}")
        self.body = body
        self.while_ = while_
        self.max_iterations = check_int(
            max_iterations, "Loop max_iterations", lo=1, hi=1_000_000_000, error=GraphError,
            hint="pass the most iterations the loop may take")

    def check(self, step: str, schema: StateSchema) -> None:
        if isinstance(self.body, DagBody):
            self.body.bind(schema)

    def __repr__(self) -> str:
        return f"Loop({getattr(self.body, '__name__', self.body)!r}, max_iterations={self.max_iterations})"


class DagBody:
    """A Loop body made of a sub-DAG, run as a child workflow per iteration.

    The parent workflow binds its state schema; :meth:`workflow_for` builds
    (once per parent workflow) the child :class:`~atomr.Workflow` its runs use,
    with the parent's retry policy and step timeout."""

    def __init__(self, dag: Dag) -> None:
        if not isinstance(dag, Dag):
            raise GraphError(f"a Loop body must be a built Dag, got {type(dag).__name__}")
        self.dag = dag
        self.schema: StateSchema | None = None
        self._workflows: dict[tuple[str, str], Workflow] = {}
        self.__name__ = f"dag[{dag.entry}]"

    def bind(self, schema: StateSchema) -> None:
        if self.schema is not None and self.schema is not schema:
            raise GraphError("this Loop's sub-DAG is already used by a workflow with another schema; "
                             "build a separate Loop for each workflow")
        if self.schema is None:
            Workflow("loop body", self.dag, schema)  # checks its steps and kinds against the schema now
        self.schema = schema

    def workflow_for(self, parent: Workflow, step: str) -> Workflow:
        """The child workflow that runs this body for Loop ``step`` of ``parent``."""
        key = (parent.id, step)
        wf = self._workflows.get(key)
        if wf is None:
            assert self.schema is not None, "a Loop's sub-DAG runs inside a Workflow"
            wf = Workflow(body_workflow_id(parent.id, step), self.dag, self.schema, retry=parent.retry,
                          step_timeout_s=parent.step_timeout_s, version=parent.version,
                          compatible_with=parent.compatible_with, retention_s=parent.retention_s)
            self._workflows[key] = wf
        return wf

    def __repr__(self) -> str:
        return f"DagBody({self.dag!r})"


def body_workflow_id(workflow_id: str, step: str) -> str:
    """The id of the child workflow that runs the Dag body of Loop ``step``."""
    return f"{workflow_id}:{step}"


def child_workflows(wf: Workflow) -> list[Workflow]:
    """Workflows that ``wf``'s steps run as child runs: Subgraphs given a Workflow
    object, and the Dag bodies of its Loops (registered along with ``wf``)."""
    out: list[Workflow] = []
    for step, fn in wf.dag.steps.items():
        if isinstance(fn, Subgraph) and not isinstance(fn.workflow, str):
            out.append(fn.workflow)
        elif isinstance(fn, Loop) and isinstance(fn.body, DagBody):
            out.append(fn.body.workflow_for(wf, step))
    return out


class Map(StepKind):
    """Run ``fn(item, ctx)`` for each element of the list in channel ``items``,
    at most ``max_concurrency`` at once; write the list of results (input order)
    to channel ``into`` through its reducer.

    Per element (each is its own unit, ``step[i]``, with ``ctx.attempt`` and an
    idempotency key of its own):

    * retries: the step's RetryPolicy (``DagBuilder.step(..., retry=)``, else the
      workflow's) applies to each element on its own: a failing element is
      attempted again, alone, up to ``max_attempts`` times;
    * timeouts: the step's ``timeout_s`` (else the workflow's ``step_timeout_s``)
      limits each element's attempt, not the whole Map;
    * durability: each element's result is journaled when it finishes, so after
      a crash, a pause or a failed run resumed, only the unfinished elements run.

    Once an element fails for good no new element starts; those running finish,
    then the run fails at this step. The whole Map is one step of its layer: its
    results are merged into ``into`` (once, in input order) when every element
    is done."""

    def __init__(self, fn: Callable[..., Any], items: str, into: str, max_concurrency: int = 4) -> None:
        if not callable(fn) or isinstance(fn, StepKind):
            raise GraphError(f"Map fn must be callable fn(item, ctx), got {type(fn).__name__}; pass a function")
        self.fn = fn
        self.items = _channel_arg("Map", "items", items)
        self.into = _channel_arg("Map", "into", into)
        self.max_concurrency = check_int(
            max_concurrency, "Map max_concurrency", lo=1, hi=100_000, error=GraphError,
            hint="pass how many elements may run at once")

    def check(self, step: str, schema: StateSchema) -> None:
        _need_channel("Map", step, "items", self.items, schema)
        _need_channel("Map", step, "into", self.into, schema)

    def __repr__(self) -> str:
        return f"Map(items={self.items!r}, into={self.into!r}, max_concurrency={self.max_concurrency})"


class Human(StepKind):
    """Pause until a person answers. The interrupt payload is
    ``{"prompt": prompt, "step": step_id}``; resume with
    ``Command(resume={"approved": True, "by": "alice"})``. A rejection fails the
    run with ``Rejected`` (``on_reject="fail"``) or is written to ``into`` like
    an approval (``on_reject="continue"``, so a Branch can route on it)."""

    def __init__(self, prompt: str, into: str, on_reject: str = "fail") -> None:
        if not isinstance(on_reject, str) or on_reject not in ("fail", "continue"):
            raise GraphError(f"Human on_reject must be 'fail' or 'continue', got {on_reject!r}; pass one of those")
        if not isinstance(prompt, str):
            raise GraphError(f"Human prompt must be a str, got {type(prompt).__name__}; pass the question to ask")
        self.prompt = prompt
        self.into = _channel_arg("Human", "into", into)
        self.on_reject = on_reject

    def check(self, step: str, schema: StateSchema) -> None:
        _need_channel("Human", step, "into", self.into, schema)

    @staticmethod
    def check_answer(step: str, value: Any) -> None:
        """Raise InvalidResumeValue unless ``value`` is a valid answer."""
        if not isinstance(value, Mapping) or not isinstance(value.get("approved"), bool):
            raise InvalidResumeValue(
                f"Human step {step!r} expects a resume value like {{'approved': True, 'by': "
                f"'alice'}} or {{'approved': False, 'reason': '...'}}, got {value!r}; the run "
                "stays paused"
            )

    def __call__(self, state: Mapping[str, Any], ctx: Any) -> list[tuple[str, Any]]:
        answer = ctx.interrupt({"prompt": self.prompt, "step": ctx.step_id})
        self.check_answer(ctx.step_id, answer)
        if not answer["approved"] and self.on_reject == "fail":
            reason = answer.get("reason") or "no reason given"
            raise Rejected(f"step {ctx.step_id!r} was rejected by {answer.get('by') or 'someone'}: "
                           f"{reason}; fork the run or resume it with Command(goto=...) to redo it")
        return [(self.into, dict(answer))]

    def __repr__(self) -> str:
        return f"Human({self.prompt!r}, into={self.into!r}, on_reject={self.on_reject!r})"


class Subgraph(StepKind):
    """Run a child workflow as a step. ``inputs`` channels are copied into the
    child's input; ``outputs`` channels of the child's final state are merged
    back through the parent's reducers. The child run is stored under its own
    workflow id with run id ``"<parent workflow>/<parent run>/<step>"``; in a
    later turn of the parent, ``"<parent workflow>/<parent run>/<step>/<super-step>"``."""

    def __init__(self, workflow: Workflow | str, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> None:
        if not isinstance(workflow, (Workflow, str)) or workflow == "":
            raise GraphError(f"Subgraph takes a Workflow or a registered workflow id, got {workflow!r}; "
                             "pass one of those")
        self.workflow = workflow
        self.inputs = _channel_list("Subgraph", "inputs", inputs)
        self.outputs = _channel_list("Subgraph", "outputs", outputs)
        if isinstance(workflow, Workflow):
            for k in self.inputs:
                if k not in workflow.channels:
                    raise GraphError(f"Subgraph input {k!r} is not a channel of child workflow {workflow.id!r}")
            for k in self.outputs:
                if k not in workflow.channels:
                    raise GraphError(f"Subgraph output {k!r} is not a channel of child workflow {workflow.id!r}")

    def check(self, step: str, schema: StateSchema) -> None:
        for name, group in (("inputs", self.inputs), ("outputs", self.outputs)):
            for k in group:
                _need_channel("Subgraph", step, name, k, schema)

    @property
    def workflow_id(self) -> str:
        return self.workflow if isinstance(self.workflow, str) else self.workflow.id

    def __repr__(self) -> str:
        return f"Subgraph({self.workflow_id!r}, inputs={list(self.inputs)}, outputs={list(self.outputs)})"


def dispatch_fan_out(items: Iterable[T], fn: Callable[[T], R], max_concurrency: int = 4) -> list[R]:
    """Run ``fn`` on each item on worker threads, at most ``max_concurrency`` at
    once; return the results in input order. The first exception is raised once
    the calls already running finish; no new call starts after it."""
    if not callable(fn):
        raise GraphError(f"dispatch_fan_out fn must be callable, got {type(fn).__name__}; pass a function fn(item)")
    max_concurrency = check_int(max_concurrency, "dispatch_fan_out max_concurrency", lo=1, hi=100_000,
                                error=GraphError, hint="pass how many calls may run at once")
    todo = list(items)
    results: list[Any] = [None] * len(todo)
    error: BaseException | None = None
    with cf.ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="atomr-fanout") as pool:
        running: dict[cf.Future[R], int] = {}
        nxt = 0
        while nxt < len(todo) or running:
            while error is None and nxt < len(todo) and len(running) < max_concurrency:
                running[pool.submit(fn, todo[nxt])] = nxt
                nxt += 1
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                i = running.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                else:
                    results[i] = fut.result()
            if error is not None and not running:
                break
    if error is not None:
        raise error
    return results
