"""Observability never fails a run: tracing, metrics and logging hooks are guarded here.

atomr calls code it does not own to report what it does: OpenTelemetry span
processors and exporters (``span.end()`` runs every ``on_end``, unguarded by
the SDK), Prometheus metrics, logging filters, handlers and record
factories. An exception from any of them is caught where atomr calls it,
logged once per hook and exception type (with its traceback; later ones are
only counted in :data:`failures`), and dropped: the run goes on as if the
hook had not been there. New hooks (an exporter, an audit sink, an
operations callback) go through :func:`guarded` or :func:`call` too.

``logger(name)`` is the logger every atomr module uses: a
:class:`logging.LoggerAdapter` whose calls never raise, whatever a filter,
handler or record factory does (a failure is written once to stderr, as the
logging module itself does for a handler that fails).
"""

from __future__ import annotations

import collections
import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call", "failed", "failures", "guarded", "logger"]

F = TypeVar("F", bound=Callable[..., Any])

#: hook name -> how many times it raised (since the process started)
failures: collections.Counter[str] = collections.Counter()
_told: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _first(hook: str, exc: BaseException) -> bool:
    key = (hook, type(exc).__name__)
    with _lock:
        failures[hook] += 1
        if key in _told:
            return False
        _told.add(key)
        return True


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
    except Exception:  # noqa: BLE001 - nowhere left to tell
        pass


def failed(hook: str, exc: BaseException) -> None:
    """``hook`` raised ``exc``: log it the first time (per exception type), count it always."""
    if not _first(hook, exc):
        return
    log.warning("%s raised %s: %s; atomr dropped it and went on (logged once; later failures of this "
                "hook are counted only)", hook, type(exc).__name__, exc, exc_info=exc)


def call(hook: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; None when it raises (see :func:`failed`)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a hook never fails its caller
        failed(hook, exc)
        return None


def guarded(hook: str) -> Callable[[F], F]:
    """Decorator: the function is a hook; an exception from it is :func:`failed` and None returned."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def safe(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a hook never fails its caller
                failed(hook, exc)
                return None

        return safe  # type: ignore[return-value]

    return wrap


class _SafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose calls never raise (a filter, handler or record factory that does is dropped)."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the caller, not this frame
        try:
            super().log(level, msg, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - logging never fails a run
            if _first(f"logging to {self.logger.name!r}", exc):
                _stderr(f"atomr: logging to {self.logger.name!r} raised {type(exc).__name__}: {exc}; "
                        "the message was dropped and atomr went on (told once)")

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs


def logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """The logger ``name`` (``logging.getLogger(name)``), whose calls never raise."""
    return _SafeLogger(logging.getLogger(name), {})


log = logger("atomr.hooks")
