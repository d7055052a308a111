"""Test support for atomr and for code built on it.

* :class:`StoreConformance`: the behaviour every store backend must show;
  subclass it in a pytest module and implement ``make_store(tmp_path)``.
* :func:`check_rehydration`: assert that a stored run rehydrates (latest
  snapshot + journal tail, and from every snapshot) to exactly the fold of its
  whole journal.
* :func:`full_replay`, :func:`fold`, :func:`demo_plan`, :func:`demo_events`,
  :func:`encode_batch`: the helpers the suite is built from
  (:mod:`atomr.testing.journals`).
* :func:`replay`: re-run a recorded run's steps against its journal
  (:mod:`atomr.testing.replay`).

Importing this package needs pytest (a development dependency).
"""

from atomr.testing.conformance import StoreConformance
from atomr.testing.journals import (
    check_rehydration,
    demo_events,
    demo_plan,
    encode_batch,
    filler_events,
    fold,
    full_replay,
)
from atomr.testing.replay import Mismatch, ReplayResult, replay

__all__ = [
    "StoreConformance",
    "check_rehydration",
    "demo_events",
    "demo_plan",
    "encode_batch",
    "filler_events",
    "fold",
    "full_replay",
    "Mismatch",
    "ReplayResult",
    "replay",
]
