"""The part of the store conformance suite every group of tests shares: the
backend hooks, the ``store`` fixture and the write/read helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomr.graph.superstep import Plan, RunProgress, apply_event
from atomr.store.base import AppendBatch, Store
from atomr.testing.journals import demo_events, demo_plan, encode_batch, snapshot_points

__all__ = ["SuiteBase"]


class SuiteBase:
    """Hooks and helpers of :class:`~atomr.testing.StoreConformance`."""

    WF = "wf"

    # -- hooks for backends ---------------------------------------------------------

    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty store (``tmp_path`` is a fresh directory for this test)."""
        raise NotImplementedError("subclass StoreConformance and implement make_store(tmp_path)")

    def reopen_store(self, store: Store, tmp_path: Path) -> Store | None:
        """Close ``store`` and open the same data again; None: not supported (skip)."""
        return None

    # -- fixtures / helpers -----------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        self._opened: list[Store] = []
        s = self.make_store(tmp_path)
        self._opened.append(s)
        try:
            yield s
        finally:
            for x in reversed(self._opened):
                x.close()

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        new = self.reopen_store(store, tmp_path)
        if new is None:
            pytest.skip(f"{type(store).__name__} keeps no data across close(): nothing to reopen")
        self._opened.append(new)
        return new

    @staticmethod
    def write_ok(store: Store, *batches: AppendBatch) -> None:
        results = store.write(list(batches))
        assert results == [None] * len(batches), results

    @staticmethod
    def events_of(store: Store, wf: str, run: str, from_seq: int = 1, to_seq: int | None = None) -> list[tuple[int, Any]]:
        return list(store.journal(wf, run, from_seq, to_seq))

    def write_demo(self, store: Store, run: str = "r1", every: int = 3, wf: str | None = None) -> tuple[Plan, list[Any]]:
        """Write :func:`demo_events` in batches of ``every`` events, each with a snapshot
        of the reference fold; statuses follow the run. Returns (plan, events)."""
        wf = wf or self.WF
        plan = demo_plan()
        events = demo_events(wf, run)
        p = RunProgress(wf, run)
        first = 1
        for last in snapshot_points(len(events), every):
            chunk = events[first - 1 : last]
            for i, e in enumerate(chunk, first):
                apply_event(plan, p, e, i)
            self.write_ok(store, encode_batch(wf, run, first, chunk, status=p.status if p.status != "new" else "running",
                                              super_step=p.super_step, snapshot=p))
            first = last + 1
        return plan, events

    def _corrupt(self, store: Store, wf: str, run: str, seq: int, data: bytes) -> None:
        hook = getattr(store, "_corrupt", None)
        if hook is None:
            pytest.skip(f"{type(store).__name__} has no _corrupt test hook")
        hook(wf, run, seq, data)
