"""Pages of the run index: the order, the cursor, the checks of a page's arguments.

Every backend lists runs newest first by creation: by ``(created_ms,
workflow_id, run_id)`` descending (ids compared as UTF-8 bytes), so the order
is total and a page ends at a definite run. A cursor names the last run of a
page; the next page holds the runs after it in that order. A cursor is an
opaque string (base64url of ``[created_ms, workflow_id, run_id]``): stable
across processes, restarts and backends, and the same text ``/api/runs``
hands out as ``next_cursor``.

No I/O and no threads: plain functions the stores and the server share.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Iterable
from typing import Any

from atomr.errors import StoreError

__all__ = ["PageKey", "run_cursor", "parse_cursor", "check_page", "page_of", "MAX_LIMIT", "SortedIndex"]

#: ``(created_ms, workflow_id, run_id)``: where a run stands in the index's order
PageKey = tuple[int, str, str]

#: The most runs one page may hold.
MAX_LIMIT = 1_000_000


def run_cursor(created_ms: int, workflow_id: str, run_id: str) -> str:
    """The cursor naming a run (what ``before=`` takes to list the runs after it)."""
    raw = json.dumps([created_ms, workflow_id, run_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode("ascii").rstrip("=")


def parse_cursor(text: object) -> PageKey:
    """The run a cursor names; StoreError for anything :func:`run_cursor` did not make."""
    if not isinstance(text, str) or not text or len(text) > 4096:
        raise StoreError(f"cursor {str(text)[:60]!r} is not a run cursor; pass the `cursor` of the last run "
                         "of the page before (RunSummary.cursor, or /api/runs' next_cursor)")
    try:
        created, wf, run = json.loads(base64.urlsafe_b64decode(text.encode("ascii") + b"==").decode("utf-8",
                                                                                                   "surrogatepass"))
        if type(created) is not int or not isinstance(wf, str) or not isinstance(run, str) or created < 0:
            raise ValueError
    except (ValueError, TypeError, UnicodeError, RecursionError):
        raise StoreError(f"cursor {text[:60]!r} is not a run cursor; pass the `cursor` of the last run of the "
                         "page before (RunSummary.cursor, or /api/runs' next_cursor)") from None
    return created, wf, run


def check_page(status: str | None, workflow_id: str | None, limit: int | None, before: str | None,
               statuses: Iterable[str]) -> PageKey | None:
    """Check a page's arguments (StoreError naming the bad one); the cursor's key."""
    if status is not None and status not in statuses:
        raise StoreError(f"unknown status {status!r}; use one of {', '.join(statuses)}")
    if workflow_id is not None and not isinstance(workflow_id, str):
        raise StoreError(f"workflow_id must be a str or None, got {type(workflow_id).__name__}")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_LIMIT):
        raise StoreError(f"limit must be an int from 1 to {MAX_LIMIT} or None (every run), got {limit!r}")
    return None if before is None else parse_cursor(before)


def page_of(summaries: Iterable[Any], status: str | None, workflow_id: str | None, limit: int | None,
            key: PageKey | None) -> list[Any]:
    """A page picked from every summary (a store without an index: reads them all)."""
    rows = [s for s in summaries
            if (status is None or s.status == status) and (workflow_id is None or s.workflow_id == workflow_id)
            and (key is None or _key(s) < key)]
    rows.sort(key=_key, reverse=True)
    return rows if limit is None else rows[:limit]


def _key(s: Any) -> PageKey:
    # str order is code point order, which is UTF-8 byte order: the stores' order
    return s.created_ms, s.workflow_id, s.run_id


class SortedIndex:
    """The run index's order kept in memory (MemoryStore): one sorted list of page
    keys per filter — every run, by status, by workflow, by both. Not thread-safe:
    its owner's lock guards it."""

    __slots__ = ("_lists",)

    def __init__(self) -> None:
        self._lists: dict[tuple[str | None, str | None], list[PageKey]] = {}

    @staticmethod
    def _filters(workflow_id: str, status: str) -> tuple[tuple[str | None, str | None], ...]:
        return (None, None), (None, status), (workflow_id, None), (workflow_id, status)

    def add(self, key: PageKey, status: str) -> None:
        for f in self._filters(key[1], status):
            bisect.insort(self._lists.setdefault(f, []), key)

    def remove(self, key: PageKey, status: str) -> None:
        for f in self._filters(key[1], status):
            lst = self._lists.get(f)
            if lst is None:
                continue
            i = bisect.bisect_left(lst, key)
            if i < len(lst) and lst[i] == key:
                del lst[i]
            if not lst:
                del self._lists[f]

    def page(self, status: str | None, workflow_id: str | None, limit: int | None,
             key: PageKey | None) -> list[PageKey]:
        """The keys of one page, newest first (a bisection and a slice)."""
        lst = self._lists.get((workflow_id, status), [])
        end = len(lst) if key is None else bisect.bisect_left(lst, key)
        start = 0 if limit is None else max(0, end - limit)
        return lst[start:end][::-1]
