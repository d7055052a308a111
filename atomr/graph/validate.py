"""The channel validators of a typed state (``StateSchema.from_type(..., validate=True)``).

Pure: no threads, no I/O (pydantic is imported when a schema is built). A
validator checks one merged channel value against the field's type and
constraints and returns the validated value; a value that does not fit raises
:class:`~atomr.errors.StateValidationError` (a ReducerError) naming the channel,
the step and the type. For a pydantic model, the model's ``field_validator`` s
of the field run too, in the model's order and modes (before, after, plain,
wrap), and under the model's config (``strict``, ``str_strip_whitespace``...),
as when the model itself is validated; a validator that reads ``info.data``
sees no other field (each channel is validated on its own).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from atomr.errors import SchemaError, StateValidationError

__all__ = ["type_name", "validator"]

#: model_config keys that would change which key a one-field model reads, or refuse the value
_CONFIG_SKIP = frozenset({"alias_generator", "populate_by_name", "validate_by_name", "validate_by_alias",
                          "extra", "frozen", "title", "json_schema_extra", "validate_assignment"})


def type_name(tp: Any) -> str:
    """``list[Msg]`` for ``list[app.models.Msg]``."""
    return tp.__qualname__ if isinstance(tp, type) else re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", repr(tp))


def _field_validators(model: Any, key: str) -> list[Any]:
    """The model's ``field_validator`` decorators that apply to field ``key``."""
    decorators = getattr(model, "__pydantic_decorators__", None)
    found = getattr(decorators, "field_validators", None) or {}
    return [d for d in found.values() if key in d.info.fields or "*" in d.info.fields]


def _config(model: Any) -> dict[str, Any]:
    """The model's config that bears on validating one field's value (strictness, str rules...)."""
    return {k: v for k, v in dict(getattr(model, "model_config", {}) or {}).items() if k not in _CONFIG_SKIP}


def _one_field_model(pydantic: Any, model: Any, key: str, tp: Any, decorators: list[Any]) -> Any:
    """A model with field ``key`` only, the field validators of ``model`` that
    apply to it and the model's config."""
    validators: dict[str, Any] = {}
    for d in decorators:
        fn = d.func
        raw = getattr(fn, "__func__", fn)
        wrapped: Any = classmethod(raw) if getattr(fn, "__self__", None) is not None else staticmethod(raw)
        validators[d.cls_var_name] = pydantic.field_validator(key, mode=d.info.mode, check_fields=False)(wrapped)
    return pydantic.create_model(f"{model.__name__}_{key}", __config__=pydantic.ConfigDict(**_config(model)),
                                 __validators__=validators, **{key: (tp, ...)})


def validator(owner: Any, key: str, tp: Any, shown: Any, info: Any, is_reducer: Callable[[object], bool],
              model: bool) -> Callable[[Any, str | None], Any]:
    """check(value, step) -> the validated value, for channel ``key`` of ``owner``.

    ``tp``: the channel's type; ``shown``: the type its errors name; ``info``:
    the pydantic FieldInfo (a model's field; None otherwise)."""
    try:
        import pydantic
    except ImportError:
        raise SchemaError("validating a typed state needs pydantic: pip install pydantic "
                          "(or pass validate=False)") from None
    if model and info is not None:
        constraints = [m for m in info.metadata if not is_reducer(m)]
        tp = Annotated[(info.annotation, *constraints)] if constraints else info.annotation  # type: ignore
    decorators = _field_validators(owner, key) if model else []
    own_model = bool(decorators) or (model and bool(_config(owner)))  # else a TypeAdapter is enough (faster)
    validate: Callable[[Any], Any]
    try:
        if own_model:
            one = _one_field_model(pydantic, owner, key, tp, decorators)
            validate = lambda value: getattr(one.model_validate({key: value}), key)  # noqa: E731
        else:
            validate = pydantic.TypeAdapter(tp).validate_python
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a type (or a validator) pydantic cannot build
        raise SchemaError(f"channel {key!r} of {owner.__qualname__}: pydantic cannot validate "
                          f"{type_name(tp)} ({exc}); use a type it knows or pass validate=False") from None
    expected = type_name(shown)
    error_type = pydantic.ValidationError
    where_ = f"{owner.__qualname__}.{key}"

    def check(value: Any, step: str | None) -> Any:
        try:
            return validate(value)
        except error_type as exc:
            errors = exc.errors()
            first: Any = errors[0] if errors else {}
            loc = [str(x) for x in first.get("loc", ())]
            if own_model and loc[:1] == [key]:
                loc = loc[1:]  # the one-field model's own level
            at = ".".join(loc)
            detail = f"{first.get('msg', exc)}" + (f" at {at}" if at else "")
        except Exception as exc:  # noqa: BLE001 - a field validator raised something pydantic passes on
            detail = f"a field validator raised {type(exc).__name__}: {exc}"
        raise StateValidationError(key, step, expected, f"{detail} (got {type(value).__name__})", where_) from None

    return check
