"""Per-step options: how often a step is attempted and how long an attempt may run.

:class:`RetryPolicy` is a workflow's default for every step
(``Workflow(retry=...)``); ``DagBuilder.step(id, fn, retry=..., timeout_s=...)``
gives one step its own, kept as a :class:`StepOptions` in ``Dag.options``.
Plain values, read by the run actor in its turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atomr._check import check_int, check_number, check_optional_number
from atomr.errors import GraphError

__all__ = ["RetryPolicy", "StepOptions", "step_options"]


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
        def num(name: str, lo: float) -> None:
            object.__setattr__(self, name, check_number(
                getattr(self, name), f"RetryPolicy.{name}", lo=lo, error=GraphError,
                hint=f"pass a finite number of {'seconds' if name != 'multiplier' else 'times'} >= {lo:g}"))

        object.__setattr__(self, "max_attempts", check_int(
            self.max_attempts, "RetryPolicy.max_attempts", lo=1, hi=1_000_000, error=GraphError,
            hint="use 1 for no retry"))
        num("backoff_s", 0)
        num("multiplier", 1)
        num("max_backoff_s", 0)
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not retry_on or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in retry_on
        ):
            raise GraphError(
                f"RetryPolicy.retry_on must be an exception class or a non-empty tuple of them, "
                f"got {retry_on!r}; pass the classes themselves, e.g. retry_on=(ValueError, "
                "TimeoutError), not their names"
            )
        object.__setattr__(self, "retry_on", retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            wait = self.backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.max_backoff_s
        return min(wait, self.max_backoff_s)


@dataclass(frozen=True)
class StepOptions:
    """One step's own options; None keeps the workflow's default."""

    retry: RetryPolicy | None = None
    timeout_s: float | None = None


def step_options(step: str, retry: Any, timeout_s: Any) -> StepOptions | None:
    """The checked options of ``DagBuilder.step(step, ..., retry=, timeout_s=)``;
    None when both are None. Raises GraphError naming the step."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise GraphError(f"step {step!r}: retry must be a RetryPolicy or None, got "
                         f"{type(retry).__name__}; pass RetryPolicy(max_attempts=...)")
    timeout_s = check_optional_number(
        timeout_s, f"step {step!r}: timeout_s", lo=0, lo_open=True, error=GraphError,
        hint="pass a finite number of seconds, or None for the workflow's step_timeout_s")
    if retry is None and timeout_s is None:
        return None
    return StepOptions(retry, timeout_s)
