"""One generation of the crash harness, run in a subprocess the test kills.

    python child.py STORE_DIR SIDE_FILE N_RUNS [--durability D] [--start N] [--pre-commit N] [--in-commit N]

Opens a Runtime on an LMDB store (durability "sync" unless told), recovers, answers paused
runs, starts missing runs (of the first ``--start`` of the plan), and carries
them on (see ``flows.drive``). Prints:

* ``READY`` once every run is under way;
* ``PRE_COMMIT n`` and then blocks, when the store is about to write its n-th
  transaction (the events of finished steps are queued, not durable yet);
* ``IN_COMMIT n`` and then blocks, inside the n-th write transaction (records
  of the first batches put, nothing committed);
* ``ALLDONE <commits>`` when nothing is left to do in this generation (it then exits 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows  # noqa: E402

from atomr import LmdbStore, Runtime  # noqa: E402
from atomr.store.base import AppendBatch, RunSummary  # noqa: E402

BLOCK_S = 60.0  # the test kills us long before


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class HookedStore(LmdbStore):
    """An LmdbStore that can stop before, or inside, its n-th write transaction."""

    def __init__(self, *a: Any, pre_commit: int = 0, in_commit: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.commits = 0
        self.pre_commit = pre_commit
        self.in_commit = in_commit
        self._batches_in_txn = 0
        self._hook_at = 0

    def _write_txn(self, batches: Sequence[AppendBatch]) -> None:
        self.commits += 1
        self._batches_in_txn = 0
        # stop after the first batch's records are put when there are several
        self._hook_at = min(len(batches), 2) if self.commits == self.in_commit else 0
        if self.commits == self.pre_commit:
            say(f"PRE_COMMIT {self.commits}")
            time.sleep(BLOCK_S)
        super()._write_txn(batches)

    def _next_summary(self, old: RunSummary | None, b: AppendBatch, ts: int) -> RunSummary:
        # called inside the write transaction, once per batch, before its records are put
        self._batches_in_txn += 1
        if self._batches_in_txn == self._hook_at:
            say(f"IN_COMMIT {self.commits}")
            time.sleep(BLOCK_S)
        return super()._next_summary(old, b, ts)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("side")
    ap.add_argument("runs", type=int)
    ap.add_argument("--pre-commit", type=int, default=0)
    ap.add_argument("--in-commit", type=int, default=0)
    ap.add_argument("--durability", default="sync")
    ap.add_argument("--start", type=int, default=None, help="start only the first N runs of the plan")
    args = ap.parse_args(argv)
    flows.SIDE = args.side
    store = HookedStore(args.store, map_size=64 << 20, pre_commit=args.pre_commit,
                        in_commit=args.in_commit)
    rt = Runtime(store=store, durability=args.durability)
    for wf in flows.workflows():
        rt.register(wf)
    flows.drive(rt, flows.plan_runs(args.runs)[:args.start], final=False, say=say)
    say(f"ALLDONE {store.commits}")
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
