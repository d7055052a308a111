"""Small text helpers for error messages (no imports of atomr)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["names", "human_bytes"]


def names(items: Iterable[object]) -> str:
    """``'a', 'b'`` sorted, or ``(none)``."""
    listed = sorted(str(i) for i in items)
    return ", ".join(repr(i) for i in listed) if listed else "(none)"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.0f} {unit}"
        n = n / 1024
    return str(n)
