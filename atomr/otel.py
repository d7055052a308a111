"""OpenTelemetry traces of runs: ``atomr.otel.instrument()`` (the ``otel`` extra).

::

    from opentelemetry.sdk.trace import TracerProvider
    import atomr.otel

    atomr.otel.instrument(tracer_provider=TracerProvider())   # None: the global provider

From then on every run execution is a span (``atomr.run <workflow>``, from its
start or resume to its outcome), with a child span per super-step
(``atomr.super_step``) and per step attempt (``atomr.step <step>``; a retry is
a new span). Attributes: ``atomr.workflow_id``, ``atomr.run_id``,
``atomr.step_id``, ``atomr.super_step``, ``atomr.attempt``, ``atomr.outcome``
and, on failures, ``error.type`` with the span status ERROR. A paused
execution's spans end at the pause; the execution that resumes it links to
its run span (within one process: the link is not journaled). A Subgraph
step has one ``atomr.step`` span while its child run executes for it, and each
execution span of the child run links to it (within one process). The step
function runs with its step span current — in a step thread, in the async
loop's task of an ``async def`` step, or on a Ray worker (the W3C trace context
travels with the step; the worker exports with its own tracer provider) — so
spans that the step's code opens are its children.

Off by default, and :func:`uninstrument` turns it off again: while off, each
hook in the runtime is one attribute check (no OpenTelemetry import).
Only ``opentelemetry-api`` is needed here; configure an SDK (exporters,
sampling) in the application.
"""

from __future__ import annotations

from typing import Any

from atomr import _trace
from atomr.errors import AtomrError

__all__ = ["instrument", "is_instrumented", "uninstrument"]


def instrument(tracer_provider: Any = None) -> None:
    """Trace every run from now on, with ``tracer_provider`` (None: OpenTelemetry's
    global provider, as set by ``trace.set_tracer_provider`` or auto-instrumentation).
    Calling it again switches to the new provider for executions that start later."""
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise AtomrError(
            "atomr.otel needs OpenTelemetry: install the extra with  pip install 'atomr[otel]'  "
            f"(import failed: {exc})"
        ) from exc
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    try:
        from importlib.metadata import version

        ver = version("atomr")
    except Exception:  # noqa: BLE001 - a source tree that is not installed
        ver = None
    _trace.setup(provider.get_tracer("atomr", ver))


def uninstrument() -> None:
    """Stop tracing (spans of executions in flight are dropped)."""
    _trace.teardown()


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _trace.enabled
