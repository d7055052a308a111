"""The checkpointer: the one writer of an LMDB store, with group commit.

Threads: one pykka thread. It is the only thread that opens LMDB write
transactions. Run actors ``tell`` it :class:`~atomr.messages.Append` s; it
buffers them while more messages are queued and, once its inbox is empty (or
the buffer is large), writes the whole buffer in ONE transaction with ONE
fsync, then tells each sender :class:`~atomr.messages.Committed`. Many
concurrent runs therefore share the cost of a sync.

A refused batch (map full past ``max_map_size``, disk full, a journal gap) is
reported to the run that sent it; other runs' batches in the same group are
written (the store isolates failures), and the checkpointer keeps going.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from atomr.messages import Append, Committed, Flush, Maintain
from atomr.store.base import Store

__all__ = ["Checkpointer"]

log = logging.getLogger("atomr.checkpointer")

#: Commit at the latest after this many buffered batches, even under load.
MAX_GROUP = 512


class Checkpointer(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self._buf: list[Append] = []
        self.commits = 0  # transactions written (for stats)
        self.batches = 0

    def on_receive(self, message: Any) -> Any:
        try:
            t = type(message)
            if t is Append:
                self._buf.append(message)
                if len(self._buf) >= MAX_GROUP or self.actor_inbox.empty():
                    self._flush()
                return None
            if t is Flush:
                self._flush()
                return True
            if t is Maintain:
                self._flush()
                return message.fn(self.store)
        except Exception:
            if t is Maintain:
                raise  # asked: the caller gets the exception
            log.exception("checkpointer: unexpected error (continuing)")
        return None

    def _flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        self._buf = []
        try:
            results = self.store.write([m.batch for m in buf])
        except Exception as exc:  # noqa: BLE001 - reported to every sender
            results = [exc] * len(buf)
        self.commits += 1
        self.batches += len(buf)
        for m, err in zip(buf, results):
            if m.ack or err is not None:
                try:
                    m.sender.tell(Committed(m.token, err))
                except pykka.ActorDeadError:
                    pass

    def on_stop(self) -> None:
        self._flush()
