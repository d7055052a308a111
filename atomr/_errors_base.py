"""The root of atomr's exception tree, apart so that :mod:`atomr.errors` can be
split into modules (every class still says it belongs to ``atomr.errors``)."""

from __future__ import annotations

__all__ = ["AtomrError"]


class AtomrError(Exception):
    """Base class of every error atomr raises on purpose."""


AtomrError.__module__ = "atomr.errors"
