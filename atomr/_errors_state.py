"""The state errors of :mod:`atomr.errors` (``StateError`` and its subclasses).
Import them from :mod:`atomr.errors`; they live here only to keep that module short (each says it belongs to ``atomr.errors``)."""

from __future__ import annotations

from collections.abc import Iterable

from atomr._errors_base import AtomrError
from atomr._text import names as _names

__all__ = ["MissingInput", "ReducerError", "SchemaError", "StateError", "StateValidationError",
           "StepResultError", "UnknownChannelError"]


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



class UnknownChannelError(StateError):
    def __init__(self, channel: str, known: Iterable[str], step: str | None = None) -> None:
        self.channel = channel
        self.known = sorted(known)
        self.step = step
        by = f" by step {step!r}" if step else ""
        super().__init__(
            f"write to unknown channel {channel!r}{by}; known channels: {_names(self.known)}; "
            "declare it in the StateSchema or fix the key"
        )


class ReducerError(StateError):
    def __init__(self, channel: str, cause: BaseException, step: str | None = None) -> None:
        self.channel = channel
        self.step = step
        by = f" (write from step {step!r})" if step else ""
        super().__init__(
            f"reducer of channel {channel!r} raised {type(cause).__name__}: {cause}{by}; "
            "fix the reducer or the value written; the state was left unchanged"
        )


class StateValidationError(ReducerError):
    """A value merged into a channel of a typed state (``StateSchema.from_type`` of a pydantic
    model) does not validate: ``channel``, ``step`` (None: the input or an update), ``type``."""

    def __init__(self, channel: str, step: str | None, type: str, detail: str, where: str = "") -> None:
        self.channel, self.step, self.type = channel, step, type
        by = f"step {step!r} wrote" if step else "the input or an update gave"
        at = f" ({where})" if where else ""
        StateError.__init__(self, f"{by} a value to channel {channel!r} that is not a valid {type}{at}: {detail}; "
                                  "fix the value written; the state was left unchanged")


class StepResultError(StateError):
    def __init__(self, step: str, value: object, detail: str = "") -> None:
        self.step = step
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"step {step!r} returned {type(value).__name__}{extra}; a step must return "
            "a dict of writes, a list of (channel, value) pairs, or None"
        )


class SchemaError(StateError):
    """A StateSchema channel is misdeclared (bad key, non-callable reducer, duplicate)."""


for _cls in (StateError, MissingInput, UnknownChannelError, ReducerError, StateValidationError, StepResultError,
             SchemaError):
    _cls.__module__ = "atomr.errors"
