"""Who hears about a run: ``reply_to`` targets get the outcome, listeners get
:class:`~atomr.messages.Accepted` and :class:`~atomr.StepEvent` s too.

Runs in the run actor's turn. A broken target never breaks the run.
"""

from __future__ import annotations

from typing import Any

import pykka

from atomr._hooks import logger
from atomr.types import StepEvent

__all__ = ["tell", "Subscribers"]

log = logger("atomr.run")


def tell(target: Any, message: Any) -> None:
    """``target.tell(message)``; a dead or broken target is ignored (logged)."""
    try:
        target.tell(message)
    except pykka.ActorDeadError:
        pass
    except Exception:  # noqa: BLE001 - a broken reply target must not break the run
        log.exception("could not deliver %s", type(message).__name__)


def targets_of(msg: Any) -> list[Any]:
    """The distinct reply targets of a request (reply_to and listener may be one object)."""
    return list({id(t): t for t in (msg.reply_to, msg.listener) if t is not None}.values())


class Subscribers:
    """``reply_to`` targets, listeners, and the listeners that want StepEvents
    (a listener with ``wants_events = False``, like a RunHandle's inbox, gets
    Accepted and the outcome only: its handle streams events from the journal)."""

    __slots__ = ("reply_to", "listeners", "key", "watchers")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.reply_to: list[Any] = []
        self.listeners: list[Any] = []
        self.watchers: list[Any] = []

    def add(self, msg: Any) -> None:
        if msg.reply_to is not None:
            self.reply_to.append(msg.reply_to)
        if msg.listener is not None:
            self.listeners.append(msg.listener)
            if getattr(msg.listener, "wants_events", True):
                self.watchers.append(msg.listener)

    def to_listeners(self, message: Any) -> None:
        for target in self.listeners:
            tell(target, message)

    def event(self, kind: str, super_step: int, step: str | None, attempt: int, data: Any = None) -> None:
        if self.watchers:
            e = StepEvent(kind, self.key[0], self.key[1], super_step, step, attempt, data)
            for target in self.watchers:
                tell(target, e)

    def report(self, outcome: Any, super_step: int) -> None:
        """Tell the outcome to every subscriber, then forget them."""
        for target in self.reply_to:
            tell(target, outcome)
        self.event("outcome", super_step, None, 0, outcome)
        self.reply_to = []
        self.listeners = []
        self.watchers = []

    def take(self) -> tuple[list[Any], list[Any]]:
        out = (self.reply_to, self.listeners)
        self.reply_to, self.listeners, self.watchers = [], [], []
        return out
