"""``ctx.emit`` items to other processes, on Postgres: NOTIFY payloads.

A worker's step calls ``ctx.emit(payload)``; the run's local streams get it at
once, and :class:`Emitter` sends it as a ``NOTIFY`` on the schema's channel, so
that a client in another process streaming that run (``atomr._follow``) gets it
while the step runs. Postgres bounds a payload to 8000 bytes: an item whose
encoding is longer (or that the codec cannot encode) stays in the executing
process. Items are sent in order by one daemon thread on its own connection,
many in one statement; at most ``MAX_QUEUED`` wait (past that, new ones are
dropped for other processes: a stream is live, not durable).

The payload of a commit's NOTIFY is empty; an item's is ``c`` + base64 of the
framed msgpack ``[workflow_id, run_id, step, payload, seq]``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import threading
from typing import Any

from atomr.store import format as fmt

__all__ = ["Emitter", "decode_item", "MAX_PAYLOAD"]

#: what a NOTIFY payload may hold (Postgres: < 8000 bytes)
MAX_PAYLOAD = 7900
MAX_QUEUED = 10_000


def encode_item(workflow_id: str, run_id: str, step: str, payload: Any, seq: int) -> str | None:
    """The NOTIFY payload of one item, or None when it cannot go (too big, not encodable)."""
    try:
        raw = fmt.encode_obj([workflow_id, run_id, step, payload, seq])
    except Exception:  # noqa: BLE001 - not storable: it stays in this process
        return None
    text = "c" + base64.b64encode(raw).decode()
    return text if len(text) <= MAX_PAYLOAD else None


def decode_item(text: str) -> tuple[str, str, str, Any, int] | None:
    """``(workflow_id, run_id, step, payload, seq)`` of an item's payload; None for a commit's."""
    if not text.startswith("c"):
        return None
    try:
        wf, run, step, payload, seq = fmt.decode_obj(base64.b64decode(text[1:]))
    except Exception:  # noqa: BLE001 - not ours, or damaged: ignored
        return None
    return str(wf), str(run), str(step), payload, int(seq)


class Emitter:
    """Sends items as NOTIFYs from one thread (lazy), on a connection of its own."""

    def __init__(self, connect: Any, channel: str) -> None:
        self._connect = connect
        self.channel = channel
        self._q: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._closed = False

    def emit(self, workflow_id: str, run_id: str, step: str, payload: Any, seq: int) -> None:
        """Any thread (a step's): queue the item; never blocks on the database."""
        text = encode_item(workflow_id, run_id, step, payload, seq)
        if text is None or len(self._q) >= MAX_QUEUED or self._closed:
            return
        with self._cond:
            self._q.append(text)
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="atomr-emit", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._q and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                batch = [self._q.popleft() for _ in range(min(len(self._q), 100))]
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, i) "
                                   "ORDER BY i", (self.channel, batch))
            except Exception:  # noqa: BLE001 - live items only: dropped while the server is away
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
