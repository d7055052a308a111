"""Tracing hooks: spans for run executions, super-steps and step attempts.

Off by default. The runtime calls in here only behind ``if _trace.enabled:``
(one attribute check each: a run actor's ``_advance``, ``_launch`` and
``_submit``, ``_record`` and ``_report``; ``execute_sync``; the async loop's
task; the Ray executor), so tracing costs nothing measurable until
:func:`atomr.otel.instrument` turns it on. OpenTelemetry is imported only then.

Spans (all with ``atomr.workflow_id`` and ``atomr.run_id``):

* ``atomr.run <workflow>``: one execution of a run, from its start or resume
  to its outcome (``atomr.outcome``: done, paused, failed, cancelled); a
  resumed execution links to the span of the execution before it — the one
  that paused in this process, or, resumed or taken over in another process
  (or after a restart), the one the run's meta keeps (``atomr_trace``: each
  execution writes its span context there with its next commit);
* ``atomr.super_step``: child of the run span, from its first step sent to
  the next super-step (or the outcome);
* ``atomr.step <step>``: child of its super-step, one per attempt (a retry is
  a new span; a Subgraph step: one while its child run executes for it, with
  ``atomr.child_workflow_id`` / ``atomr.child_run_id``, and each execution span
  of the child run links to it — within one process) with ``atomr.step_id``, ``atomr.super_step``, ``atomr.attempt``,
  ``atomr.outcome`` (completed, interrupted, failed, abandoned) and
  ``error.type``. The step function runs with this span as the current span,
  in whatever thread (or task, or Ray worker) runs it, so spans opened by the
  step's own code (an HTTP client, an LLM SDK) are its children.

Threads: spans are started and ended in run actors' turns; the step's thread
only makes its span current. The dicts here are changed one key at a time.

Every hook is guarded (:mod:`atomr._hooks`): the OpenTelemetry SDK calls span
processors (``on_start``, ``on_end``) and exporters unguarded, so an exception
from one of them is logged once and dropped here, and the run goes on (that
span may be missing from the trace). The bookkeeping is done before the SDK is
called, so a failing hook leaves nothing behind.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from atomr._hooks import guarded
from atomr.messages import INTERRUPT, OK

__all__ = ["enabled", "setup", "teardown", "advance", "launch", "subgraph", "subgraph_done", "step_done",
           "in_span", "enter", "carrier", "remote", "outcome"]

#: True while a tracer is installed (read by every hook site).
enabled = False

_tracer: Any = None
_api: Any = None  # opentelemetry.trace
_context: Any = None  # opentelemetry.context
_Link: Any = None
_ERROR: Any = None


class _RunTrace:
    __slots__ = ("span", "ctx", "layer", "layer_span", "layer_ctx", "steps", "subgraphs")

    def __init__(self, span: Any, ctx: Any) -> None:
        self.span, self.ctx = span, ctx
        self.layer = -1
        self.layer_span: Any = None
        self.layer_ctx: Any = None
        self.steps: set[int] = set()
        #: Subgraph step -> its span, open while its child run executes
        self.subgraphs: dict[str, Any] = {}


#: (workflow id, run id) -> the execution being traced
_runs: dict[tuple[str, str], _RunTrace] = {}
#: step token -> (span, context with the span current)
_steps: dict[int, tuple[Any, Any]] = {}
#: (workflow id, run id) -> span context of its last paused execution (links)
_paused: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
_PAUSED_MAX = 10_000
#: (child workflow id, child run id) -> span context of the Subgraph step that sent it a request
_parents: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()

_OUTCOMES = {"Done": "done", "Paused": "paused", "Failed": "failed", "Cancelled": "cancelled"}
#: the name failures of these hooks are logged and counted under (atomr._hooks.failures)
HOOK = "tracing (an OpenTelemetry span processor, exporter or tracer)"


def setup(tracer: Any) -> None:
    """Trace with ``tracer`` from now on (opentelemetry is importable: the caller checked)."""
    global enabled, _tracer, _api, _context, _Link, _ERROR
    from opentelemetry import context, trace

    _api, _context, _Link, _ERROR = trace, context, trace.Link, trace.StatusCode.ERROR
    _tracer = tracer
    enabled = True


def teardown() -> None:
    """Stop tracing; spans still open are dropped (never exported)."""
    global enabled, _tracer
    enabled = False
    _tracer = None
    _runs.clear()
    _steps.clear()
    _paused.clear()
    _parents.clear()


#: the run meta key that keeps the span context of a run's last execution (any process links to it)
TRACE_KEY = "atomr_trace"


def _stored_link(actor: Any) -> Any:
    """The span context of the run's last execution as the store keeps it (another
    process's, or one before a restart); None when it has none."""
    s = actor.core.store.summary(*actor.key)
    text = s.meta.get(TRACE_KEY) if s is not None else None
    try:
        trace_id, span_id = (int(x, 16) for x in str(text).split("-"))
    except ValueError:
        return None
    return _api.SpanContext(trace_id, span_id, is_remote=True, trace_flags=_api.TraceFlags(1))


def _start_run(actor: Any) -> _RunTrace:
    wid, rid = actor.key
    link = _paused.pop(actor.key, None)
    if link is None and actor.p.seq > 1:  # resumed or taken over here: link to where it was traced before
        link = _stored_link(actor)
    parent = _parents.pop(actor.key, None)  # a Subgraph's child run: link to the parent's step span
    links = [_Link(x) for x in (parent, link) if x is not None]
    span = _tracer.start_span(
        f"atomr.run {wid}", context=_context.Context(), links=links or None,
        attributes={"atomr.workflow_id": wid, "atomr.run_id": rid, "atomr.super_step": actor.p.super_step,
                    "atomr.resumed": link is not None or actor.p.super_step > 0})
    rt = _RunTrace(span, _api.set_span_in_context(span))
    _runs[actor.key] = rt
    sc = span.get_span_context()  # kept with the run (its next commit): a later execution anywhere links here
    j = actor.journal
    j.meta_new = {**(j.meta_new or {}), TRACE_KEY: f"{sc.trace_id:032x}-{sc.span_id:016x}"}
    return rt


@guarded(HOOK)
def advance(actor: Any) -> None:
    """A run actor advances: its execution span starts, if it has none yet."""
    if actor.key not in _runs and not actor.released and actor.p.status == "running":
        _start_run(actor)


@guarded(HOOK)
def launch(actor: Any, msgs: list[Any]) -> None:
    """Steps are sent (or run in the actor's turn): their super-step's span and
    one span per attempt (once per token)."""
    rt = _layer(actor)
    for m in msgs:
        if m.token in _steps:
            continue
        unit = m.part or m.step
        attrs = {"atomr.workflow_id": m.workflow_id, "atomr.run_id": m.run_id, "atomr.step_id": m.step,
                 "atomr.super_step": m.super_step, "atomr.attempt": m.attempt}
        if m.part is not None:
            attrs["atomr.unit"] = unit
        span = _tracer.start_span(f"atomr.step {unit}", context=rt.layer_ctx, attributes=attrs)
        _steps[m.token] = (span, _api.set_span_in_context(span))
        rt.steps.add(m.token)


def _layer(actor: Any) -> _RunTrace:
    """The run's trace, with the span of the super-step being run open."""
    rt = _runs.get(actor.key) or _start_run(actor)
    ss = actor.p.next_super_step
    if rt.layer != ss:
        if rt.layer_span is not None:
            _end(rt.layer_span, {"atomr.outcome": "committed"})
        wid, rid = actor.key
        rt.layer = ss
        rt.layer_span = _tracer.start_span("atomr.super_step", context=rt.ctx, attributes={
            "atomr.workflow_id": wid, "atomr.run_id": rid, "atomr.super_step": ss})
        rt.layer_ctx = _api.set_span_in_context(rt.layer_span)
    return rt


@guarded(HOOK)
def subgraph(actor: Any, step: str, child: tuple[str, str]) -> None:
    """A Subgraph step sends its child run a start, resume or recovery: the
    step's span (one while the child executes for it), and the child run's next
    execution span links to it."""
    rt = _layer(actor)
    span = rt.subgraphs.get(step)
    if span is None:
        wid, rid = actor.key
        span = rt.subgraphs[step] = _tracer.start_span(f"atomr.step {step}", context=rt.layer_ctx, attributes={
            "atomr.workflow_id": wid, "atomr.run_id": rid, "atomr.step_id": step,
            "atomr.super_step": actor.p.next_super_step, "atomr.child_workflow_id": child[0],
            "atomr.child_run_id": child[1]})
    _parents[child] = span.get_span_context()
    _parents.move_to_end(child)
    if len(_parents) > _PAUSED_MAX:
        _parents.popitem(last=False)


@guarded(HOOK)
def subgraph_done(actor: Any, step: str, result: Any) -> None:
    """A Subgraph step's child run reported ``result`` (Done, Paused, Failed, a refusal): its span ends."""
    rt = _runs.get(actor.key)
    span = rt.subgraphs.pop(step, None) if rt is not None else None
    if span is None:
        return
    name = type(result).__name__
    if name == "Failed":
        _end(span, {"atomr.outcome": "failed", "error.type": result.error_type}, result.message)
    elif name == "Rejected":
        _end(span, {"atomr.outcome": "failed", "error.type": type(result.error).__name__}, str(result.error))
    else:
        _end(span, {"atomr.outcome": "completed" if name == "Done" else "interrupted"})


@guarded(HOOK)
def step_done(actor: Any, d: Any) -> None:
    """A step attempt's result reached its run actor: its span ends."""
    entry = _steps.pop(d.token, None)
    if entry is None:
        return
    rt = _runs.get(actor.key)
    if rt is not None:
        rt.steps.discard(d.token)
    span = entry[0]
    kind = d.kind
    if kind == OK:
        span.set_attribute("atomr.outcome", "completed")
    elif kind == INTERRUPT:
        span.set_attribute("atomr.outcome", "interrupted")
    else:
        span.set_attribute("atomr.outcome", "failed")
        span.set_attribute("error.type", d.error_type or "Error")
        span.set_attribute("atomr.retryable", bool(d.retryable))
        span.set_status(_ERROR, d.message)
    span.end()


def in_span(msg: Any, fn: Callable[[Any, Any], Any], loop: Any) -> Any:
    """``fn(msg, loop)`` with the step's span current in this thread."""
    entry = _steps.get(msg.token)
    token = _attach(entry[1]) if entry is not None else None
    try:
        return fn(msg, loop)  # the step itself: its exceptions are its own
    finally:
        if token is not None:
            _detach(token)


@guarded(HOOK)
def _attach(ctx: Any) -> Any:
    return _context.attach(ctx)


@guarded(HOOK)
def _detach(token: Any) -> None:
    _context.detach(token)


@guarded(HOOK)
def enter(msg: Any) -> None:
    """Make the step's span current in the calling asyncio task (each task has
    its own context, which ends with it: nothing to detach)."""
    entry = _steps.get(msg.token)
    if entry is not None:
        _context.attach(entry[1])


@guarded(HOOK)
def carrier(token: int) -> dict[str, str] | None:
    """The W3C trace context of a step's span, to send with it to another process."""
    entry = _steps.get(token)
    if entry is None:
        return None
    from opentelemetry import propagate

    out: dict[str, str] = {}
    propagate.inject(out, context=entry[1])
    return out


def remote(carrier: dict[str, str], fn: Callable[[Any], Any], msg: Any) -> Any:
    """In another process (a Ray worker): ``fn(msg)`` under the sender's step span
    (spans the step opens are exported by that process's own tracer provider)."""
    try:
        from opentelemetry import context, propagate
    except ImportError:
        return fn(msg)
    try:
        token = context.attach(propagate.extract(carrier))
    except Exception:  # noqa: BLE001 - a broken propagator: the step runs untraced
        return fn(msg)
    try:
        return fn(msg)
    finally:
        try:
            context.detach(token)
        except Exception:  # noqa: BLE001
            pass


@guarded(HOOK)
def outcome(actor: Any, result: Any) -> None:
    """The run reports ``result``: every span of this execution ends."""
    rt = _runs.pop(actor.key, None)
    if rt is None:
        return
    steps = [e for e in (_steps.pop(token, None) for token in rt.steps) if e is not None]
    rt.steps.clear()  # nothing of this execution stays in the tables, whatever the SDK does below
    name = _OUTCOMES.get(type(result).__name__, "ended")
    subgraphs = list(rt.subgraphs.values())
    rt.subgraphs.clear()
    for span in [e[0] for e in steps] + subgraphs:
        _end(span, {"atomr.outcome": "abandoned"})
    if rt.layer_span is not None:
        committed = actor.p.super_step >= rt.layer
        _end(rt.layer_span, {"atomr.outcome": "committed" if committed else name})
    span = rt.span
    attrs: dict[str, Any] = {"atomr.outcome": name, "atomr.super_step": actor.p.super_step}
    status = None
    if name == "failed":
        attrs["error.type"] = result.error_type
        if result.step_id is not None:
            attrs["atomr.step_id"] = result.step_id
        status = result.message
    elif name == "paused":
        _paused[actor.key] = span.get_span_context()
        if len(_paused) > _PAUSED_MAX:
            _paused.popitem(last=False)
    _end(span, attrs, status)


@guarded(HOOK)
def _end(span: Any, attrs: dict[str, Any], error: str | None = None) -> None:
    """Set ``attrs`` (and an ERROR status) on ``span`` and end it: one span's
    failing processor does not keep the others open."""
    span.set_attributes(attrs)
    if error is not None:
        span.set_status(_ERROR, error)
    span.end()
