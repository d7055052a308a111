"""All-or-nothing ``start_many``: the first batches of its runs commit in one transaction.

Each run of a ``start_many`` is started by its own run actor, in its own turn.
Their first batches (the ``RunStarted`` event, and "queued" when the run waits
for a slot) do not go to the store one by one: each actor hands its batch to
the batch's :class:`StartGroup` and waits for ``Committed``. The actor that
hands over the last batch sends them all to the checkpointer at once
(:class:`~atomr.messages.AppendGroup`), which writes them in one transaction,
all or none, isolated from the other callers' batches of the same group commit
(a refusal of the group refuses only its runs). When a run of the batch is
refused before it writes (its id was taken meanwhile), or the group cannot be
stored, every run of it hears :class:`~atomr.errors.StartRefused`, which names
the run that did not fit; none was written, so none executes.

Threads: the run actors' turns (:meth:`StartGroup.add`, :meth:`StartGroup.refuse`),
the checkpointer's thread (:func:`refusal`); one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import pykka

from atomr.actors.admission import queue_meta
from atomr.errors import RunExists, StartRefused
from atomr.messages import Append, AppendGroup, Committed, Run

if TYPE_CHECKING:
    from atomr.actors.core import Core
    from atomr.store.base import AppendBatch, Store
    from atomr.workflow import Workflow

__all__ = ["StartGroup", "refusal", "send_starts", "start_group"]


class StartGroup:
    """The runs of one ``start_many`` whose first batches are not stored yet."""

    def __init__(self, workflow_id: str, run_ids: Sequence[str]) -> None:
        self.workflow_id = workflow_id
        self.count = len(run_ids)
        self._waiting = set(run_ids)
        self._lock = threading.Lock()
        self._appends: list[Append] = []
        self._refused: StartRefused | None = None

    def add(self, core: Core, run_id: str, append: Append) -> None:
        """Run ``run_id``'s first batch (its actor waits for ``Committed``)."""
        with self._lock:
            refused = self._refused
            if refused is None:
                self._waiting.discard(run_id)
                self._appends.append(append)
                if self._waiting:
                    return
                appends, self._appends = tuple(self._appends), []
        if refused is not None:
            _tell(append, refused)
            return
        self._submit(core, appends)

    def withdraw(self, core: Core, run_id: str) -> None:
        """Run ``run_id`` writes nothing and that is no failure (``if_exists="attach"``
        found it started meanwhile): the others commit without it."""
        with self._lock:
            if self._refused is not None or run_id not in self._waiting:
                return
            self._waiting.discard(run_id)
            if self._waiting or not self._appends:
                return
            appends, self._appends = tuple(self._appends), []
        self._submit(core, appends)

    def refuse(self, run_id: str, cause: BaseException) -> BaseException:
        """Run ``run_id`` was refused before it wrote: the whole batch is refused.
        Returns the error that run's caller hears (the batch's StartRefused)."""
        with self._lock:
            if self._refused is not None:
                return self._refused
            if run_id not in self._waiting:
                return cause
            self._refused = StartRefused(self.workflow_id, run_id, self.count, cause)
            appends, self._appends = self._appends, []
        for a in appends:
            _tell(a, self._refused)
        return self._refused

    def _submit(self, core: Core, appends: tuple[Append, ...]) -> None:
        cp = core.checkpointer
        if cp is not None:
            for _ in appends:
                core.gate.told()
            cp.tell(AppendGroup(appends, self))
            return
        # a store written from any thread (MemoryStore): here, in one transaction
        batches = [a.batch for a in appends]
        try:
            results = core.store.write(batches, groups=[0] * len(batches))
        except Exception as exc:  # noqa: BLE001 - reported to every run of the batch
            results = [exc] * len(batches)
        err = results[0] if results else None
        if err is not None:
            err = refusal(core.store, self, batches, err)
        for a in appends:
            _tell(a, err)


def _tell(append: Append, err: BaseException | None) -> None:
    try:
        append.sender.tell(Committed(append.token, err))
    except pykka.ActorDeadError:
        pass


def start_group(workflow_id: str, run_ids: Sequence[str]) -> StartGroup | None:
    """The group of a start of ``run_ids`` (None for one run: it is all or nothing anyway)."""
    return StartGroup(workflow_id, run_ids) if len(run_ids) > 1 else None


def refusal(store: Store, group: StartGroup, batches: Sequence[AppendBatch], err: BaseException) -> StartRefused:
    """The error every run of a refused group hears, naming the run that did not fit:
    one whose id another caller took meanwhile, else the largest (the likeliest not
    to fit). Runs in the thread that wrote (the store's writer)."""
    if isinstance(err, StartRefused):
        return err
    culprit = None
    for b in batches:
        try:
            if store.summary(b.workflow_id, b.run_id) is not None:
                culprit, err = b, RunExists(b.workflow_id, b.run_id)
                break
        except Exception:  # noqa: BLE001 - the write's own error is reported
            break
    if culprit is None:
        culprit = max(batches, key=lambda b: sum(len(r) for r in b.records) + len(b.snapshot or b""))
    return StartRefused(group.workflow_id, culprit.run_id, group.count, err)


def send_starts(core: Core, wf: Workflow, datas: Sequence[dict[str, Any]], ids: Sequence[str],
                existing: set[str], meta: dict[str, Any] | None, priority: int,
                new_inbox: Callable[[str], Any], turn: bool = False,
                found: Collection[str] = ()) -> list[tuple[str, Any]]:
    """Tell each new run of a start its ``Run`` (the caller's thread): ``(run id, inbox)``
    in input order (inbox None: an existing run to attach to). When a run cannot be
    told, the batch is refused: the runs told already write nothing. ``turn``: a
    done run takes another turn (``if_exists="continue"``); ``found``: the done
    runs it found (one deleted since is refused, not started anew)."""
    pending: list[tuple[str, Any]] = []
    group = start_group(wf.id, [rid for rid in ids if rid not in existing])
    for data, rid in zip(datas, ids):
        if rid in existing:
            pending.append((rid, None))  # attach: a handle that watches the run
            continue
        inbox = new_inbox(rid)
        try:
            core.supervisor.ref(wf, rid).tell(Run(data, inbox, inbox, queue_meta(wf, meta, priority), group,
                                                  turn=turn, found=rid in found))
        except BaseException as exc:
            if group is not None:
                group.refuse(rid, exc)
            raise
        pending.append((rid, inbox))
    return pending
