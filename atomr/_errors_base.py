"""The root of atomr's exception tree, apart so that :mod:`atomr.errors` can be
split into modules (every class still says it belongs to ``atomr.errors``)."""

from __future__ import annotations

__all__ = ["AtomrError", "RunError", "StartRefused"]


class AtomrError(Exception):
    """Base class of every error atomr raises on purpose."""


class RunError(AtomrError):
    """A run-level request was refused, or a run failed."""


class StartRefused(RunError):
    """A run of a ``start_many`` could not be stored: none of the batch was started."""

    def __init__(self, workflow_id: str, run_id: str, count: int, cause: BaseException) -> None:
        self.workflow_id, self.run_id, self.count, self.cause = workflow_id, run_id, count, cause
        super().__init__(
            f"run {workflow_id}/{run_id} of a start_many() could not be stored ({type(cause).__name__}: "
            f"{cause}); none of the {count} runs was started and nothing of them was written: fix "
            "that run (or the store) and start the batch again")


for _cls in (AtomrError, RunError, StartRefused):
    _cls.__module__ = "atomr.errors"
