"""Small helpers shared by the step-kind tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from atomr import events as ev

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> Any:
    """Import ``examples.<name>`` from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"examples.{name}")


def events(rt: Any, wid: str, run_id: str) -> list[Any]:
    return [e for _, e in rt.store.journal(wid, run_id)]


def of_type(rt: Any, wid: str, run_id: str, t: type) -> list[Any]:
    return [e for e in events(rt, wid, run_id) if type(e) is t]


def maybe_reopen(runtimes: Any, rt: Any, store_kind: str) -> Any:
    """On LMDB, close the runtime and open a new one on the same files (a
    process restart) with the same workflows; on memory, keep ``rt``."""
    if store_kind != "lmdb":
        return rt
    path = runtimes._paths[id(rt)]
    wfs = list(rt.workflows.values())
    rt.close()
    new = runtimes("lmdb", rt.durability, path=path)
    for wf in wfs:  # a parent registers its Subgraph children itself
        if wf.id not in new.workflows:
            new.register(wf)
    return new


__all__ = ["ROOT", "example", "events", "of_type", "maybe_reopen", "ev"]
