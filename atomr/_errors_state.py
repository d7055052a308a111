"""The state errors of :mod:`atomr.errors` that need no other: ``StateError``
and ``MissingInput``. Import them from :mod:`atomr.errors`; they live here
only to keep that module short (each says it belongs to ``atomr.errors``)."""

from __future__ import annotations

from collections.abc import Iterable

from atomr._errors_base import AtomrError
from atomr._text import names as _names

__all__ = ["MissingInput", "StateError"]


class StateError(AtomrError):
    """A write could not be applied to the state."""


class MissingInput(StateError):
    """A fresh run's input lacks fields its typed state requires (no default)."""

    def __init__(self, fields: Iterable[str], schema: str, where: str = "the run input") -> None:
        self.fields, self.schema = sorted(fields), schema
        many = len(self.fields) > 1
        super().__init__(
            f"{where} lacks the required field{'s' if many else ''} {_names(self.fields)} of {schema} "
            f"(fields without a default); pass {'them' if many else 'it'} in the input, or give the "
            "field a default")


for _cls in (StateError, MissingInput):
    _cls.__module__ = "atomr.errors"
