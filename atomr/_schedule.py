"""Schedules: start runs of a workflow on a cron expression or every N seconds.

Mixin of :class:`~atomr.Runtime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomr.runtime import Runtime

__all__ = ["Schedules"]


class Schedules:
    """Mixin of :class:`~atomr.Runtime`: ``schedule``, ``unschedule``, ``schedules``."""

    def _arm_schedules(self: Runtime, wf: Any) -> None:
        """Arm the timers of the stored schedules of ``wf`` (called by register)."""
