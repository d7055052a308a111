"""Messages between actors: frozen dataclasses, told (never asked) inside the runtime.

Public (code outside atomr sends them to a run's ``ActorRef`` from
``Runtime.ref``): :class:`Run`, :class:`Resume`. A run actor answers on
``reply_to`` (any object with ``tell``, e.g. a pykka ``ActorRef``) with the
outcome (:class:`~atomr.Done`, :class:`~atomr.Paused`, :class:`~atomr.Failed`)
or with :class:`Rejected` when the request is refused. ``listener`` (optional)
receives :class:`Accepted` and :class:`~atomr.StepEvent` s as the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from atomr.types import Command

__all__ = [
    "Run",
    "Resume",
    "Recover",
    "Cancel",
    "Admit",
    "Accepted",
    "Rejected",
    "StepDone",
    "Execute",
    "RetryStep",
    "StepTimedOut",
    "Append",
    "AppendGroup",
    "Committed",
    "Flush",
    "Maintain",
    "Subscribe",
    "Subscribed",
    "Tap",
    "Custom",
    "StreamEnd",
    "StreamLost",
]


@dataclass(frozen=True)
class Run:
    """Start the run with ``input`` (channel -> value). ``turn``: a done run
    takes another turn with it instead of being refused (RunExists); a run that
    does not exist starts (``start(..., if_exists="continue")``). ``found``:
    the caller saw the run done: if it is gone by now (deleted, purged), the
    continue is refused rather than starting a new run under its id."""

    input: Mapping[str, Any] | None = None
    reply_to: Any = None
    listener: Any = None
    meta: Mapping[str, Any] | None = None
    #: the runs of one ``start_many``: their first batches commit together or not at all
    group: Any = None
    turn: bool = False
    found: bool = False


@dataclass(frozen=True)
class Resume:
    """Resume a paused (or failed) run with a Command."""

    command: Command = field(default_factory=Command)
    reply_to: Any = None
    listener: Any = None


@dataclass(frozen=True)
class Recover:
    """Carry on a run found running in the store (after a crash). A run that is
    already executing gets a new subscriber; one that has settled meanwhile
    (paused, done, failed) answers with its outcome at once."""

    reply_to: Any = None
    listener: Any = None


@dataclass(frozen=True)
class Cancel:
    """Cancel the run (running, paused, failed or sleeping): it ends with
    :class:`~atomr.types.Cancelled`, told to ``reply_to``. Writes of steps that
    finish later are discarded; the super-step in flight is not committed."""

    reason: str = ""
    reply_to: Any = None
    listener: Any = None


@dataclass(frozen=True)
class Admit:
    """A queued run's turn came (``max_concurrent_runs``): start executing it."""


@dataclass(frozen=True)
class Accepted:
    """The Run/Resume/Recover was accepted (and, with durability="sync", is durable).
    ``after``: the journal cursor the request's events follow (stream from it)."""

    workflow_id: str
    run_id: str
    after: int = 0


@dataclass(frozen=True)
class Rejected:
    """The Run/Resume was refused; nothing was written. ``error`` says why."""

    workflow_id: str
    run_id: str
    error: BaseException

    status = "rejected"


# --- internal ---------------------------------------------------------------

OK, ERROR, INTERRUPT = 0, 1, 2
STEP, ITEM, LOOP_BODY = 0, 1, 2


class StepDone(NamedTuple):
    """A step execution finished (step executor -> run actor).

    Immutable like every message; a named tuple rather than a frozen
    dataclass because it is made once per step on the hot path (a frozen
    dataclass's ``__init__`` costs ten times as much)."""

    token: int
    step: str
    attempt: int
    kind: int  # OK | ERROR | INTERRUPT
    writes: list[tuple[str, Any]] | None = None
    record: bytes | None = None  # the encoded event (StepCompleted, ItemCompleted, LoopIterated)
    error_type: str = ""
    message: str = ""
    retryable: bool = False
    index: int = 0  # interrupt index within the step
    payload: Any = None  # interrupt payload
    part: str | None = None  # Map element / Loop iteration id, None for a plain step
    result: Any = None  # a Map element's result
    event: Any = None  # the event ``record`` encodes: the run actor folds this very object
    traceback: str | None = None  # a step that raised: its user frames


class Execute(NamedTuple):
    """Run one step (run actor -> step executor). A named tuple for the same
    reason as :class:`StepDone`."""

    token: int
    step: str
    fn: Any
    state: Mapping[str, Any]
    workflow_id: str
    run_id: str
    super_step: int
    attempt: int
    idempotency_key: str
    resume: list[Any]
    channels: frozenset[str]
    reply_to: Any
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    is_async: bool = False
    part: str | None = None  # "step[i]" (Map element i) or "step#n" (Loop iteration n)
    mode: int = 0  # STEP | ITEM | LOOP_BODY
    index: int = 0  # element index / iteration number
    item: Any = None  # the Map element
    emit: Any = None  # ctx.emit(payload) calls it: the run's live stream taps (None: dropped)
    cancelled: Any = None  # the run's cancel flag (is_set()): ctx.cancelled reads it


@dataclass(frozen=True, slots=True)
class RetryStep:
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StepTimedOut:
    step: str
    token: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Append:
    """Events to make durable (run actor -> checkpointer)."""

    batch: Any  # AppendBatch
    sender: Any  # the run actor's ref: told Committed on ack or on error
    token: int
    ack: bool


@dataclass(frozen=True, slots=True)
class AppendGroup:
    """The first batches of a ``start_many``'s runs: committed in one transaction,
    all or none (a StartGroup -> checkpointer)."""

    appends: tuple[Append, ...]
    group: Any  # the StartGroup: names the run that did not fit when the group is refused


@dataclass(frozen=True, slots=True)
class Committed:
    token: int
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Flush:
    """Commit whatever is queued (asked by the runtime: a barrier)."""


@dataclass(frozen=True, slots=True)
class Maintain:
    """Run ``fn(store)`` in the writer thread after a flush (asked)."""

    fn: Any


# --- streams ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Stream a run's events to ``sink`` (anything with ``tell``): answered with
    :class:`Subscribed`, then a :class:`Tap` per event the run journals,
    :class:`Custom` payloads, and :class:`StreamEnd` or :class:`StreamLost`."""

    sink: Any


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Taps follow for events after ``seq``. Events ``pending_first..seq`` are
    not in the store yet: their ``pending`` records come along; the rest up to
    ``pending_first - 1`` are in the store once the writer is flushed."""

    seq: int
    status: str
    pending_first: int
    pending: list[bytes]


@dataclass(frozen=True, slots=True)
class Tap:
    seq: int
    event: Any


@dataclass(frozen=True, slots=True)
class Custom:
    """What a step sent with ``ctx.emit(payload)``; ``seq``: the run's last event then."""

    step: str
    payload: Any
    seq: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The run settled durably: ``outcome`` (Done, Paused, Failed)."""

    outcome: Any


@dataclass(frozen=True, slots=True)
class StreamLost:
    """The run's actor stopped without an outcome (crash, close): subscribe again."""
