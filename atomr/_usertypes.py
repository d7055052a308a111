"""User types in stored values: the registry behind :func:`atomr.codec.register`.

A registered class is stored as one codec extension holding ``[name, data]``:
``name`` is the stable type name it was registered under (its module and
qualified name unless ``name=`` was given) and ``data`` is what its encoder
returns, stored like any value (so it may hold other registered values):

* a pydantic v2 model: ``model_dump(by_alias=True, round_trip=True)`` (nested
  models become dicts; tuples, datetimes... stay as they are), rebuilt with
  ``model_validate(data, strict=False)`` (its validators run again). A field
  value the codec cannot store (a plain ``Enum`` member: ``str`` / ``int``
  enums are stored as their value) needs its own class registered;
* a dataclass: its fields by name, rebuilt with the class's ``__init__`` (a
  field the stored data lacks takes its default, so adding a field with a
  default keeps old records readable; ``init=False`` fields are set after);
* an enum: its value, rebuilt with ``Cls(value)``;
* anything else: the ``encode`` / ``decode`` pair given to ``register``.

Decoding looks the name up in this process's registry and never imports
anything: a name that is not registered raises :class:`~atomr.errors.UnregisteredType`
saying how to register it; stored data the registered class no longer accepts
(a required field added since) raises :class:`~atomr.errors.StoredTypeMismatch`
saying how to read or migrate it. Neither is damage: the record is sound.
Nothing is pickled.

Threads: registering takes a lock; encoding and decoding read two dicts that
are only ever replaced whole (thread-safe without the lock).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, overload

from atomr.errors import CodecError, StoredTypeMismatch, UnregisteredType

__all__ = ["Entry", "register", "unregister", "registered", "entry_of", "payload", "load", "dump",
           "snapshot", "adopt"]

T = TypeVar("T")

#: Types the codec stores by itself: registering one of them (or a subclass
#: of a native container or scalar) would change how existing records read.
_NATIVE = (type(None), bool, int, float, complex, str, bytes, bytearray, memoryview, list, dict,
           tuple, set, frozenset, _dt.datetime, _dt.date, _dt.time, _dt.timedelta,
           decimal.Decimal, uuid.UUID)


class Entry(NamedTuple):
    """One registered class."""

    cls: type
    name: str
    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    #: the ``encode`` / ``decode`` given to register (None: derived from the class)
    encode: Callable[[Any], Any] | None
    decode: Callable[[Any], Any] | None


#: class -> entry, name -> entry; replaced whole under _lock, read without it.
BY_TYPE: dict[type, Entry] = {}
BY_NAME: dict[str, Entry] = {}
_lock = threading.Lock()
_snapshot: tuple[tuple[Any, ...], ...] | None = None
#: how many registered values may nest in each other (each is one extension level)
NEST = 32
_nest = threading.local()


def _pydantic_model(cls: type) -> bool:
    pyd = sys.modules.get("pydantic")
    return pyd is not None and issubclass(cls, pyd.BaseModel)


def _derived(cls: type) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The (dump, load) pair of a pydantic model, a dataclass or an enum."""
    if issubclass(cls, enum.Enum):
        return (lambda obj: obj.value), cls
    if dataclasses.is_dataclass(cls):
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        init = frozenset(f.name for f in fields if f.init)

        def dump_dc(obj: Any) -> Any:
            return {n: getattr(obj, n) for n in names}

        def load_dc(data: Any) -> Any:
            obj = cls(**{k: v for k, v in data.items() if k in init})
            for k, v in data.items():
                if k not in init and k in names:
                    object.__setattr__(obj, k, v)
            return obj

        return dump_dc, load_dc
    if _pydantic_model(cls):
        if not hasattr(cls, "model_validate"):  # pragma: no cover - pydantic v1
            raise CodecError(f"cannot register {cls.__qualname__}: only pydantic v2 models are "
                             "supported; pass encode= and decode= functions")
        model: Any = cls

        def dump_model(obj: Any) -> Any:
            return obj.model_dump(by_alias=True, round_trip=True)

        def load_model(data: Any) -> Any:
            return model.model_validate(data, strict=False)

        return dump_model, load_model
    raise CodecError(
        f"cannot register {cls.__module__}.{cls.__qualname__}: it is not a pydantic v2 model, a "
        "dataclass or an enum; pass encode=(obj -> storable value) and decode=(value -> obj) "
        "to register it"
    )


def _same_definition(a: type, b: type) -> bool:
    """The same class defined again (a module reloaded, a notebook cell run twice)."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


@overload
def register(cls: type[T], *, name: str | None = None, encode: Callable[[T], Any] | None = None,
             decode: Callable[[Any], T] | None = None) -> type[T]: ...
@overload
def register(cls: None = None, *, name: str | None = None, encode: Callable[[Any], Any] | None = None,
             decode: Callable[[Any], Any] | None = None) -> Callable[[type[T]], type[T]]: ...
def register(cls: Any = None, *, name: str | None = None, encode: Callable[[Any], Any] | None = None,
             decode: Callable[[Any], Any] | None = None) -> Any:
    """Let values of ``cls`` be stored in channels, inputs, interrupts and the journal.

    ``atomr.codec.register(Message)`` (also a class decorator: ``@register``
    or ``@register(name="app.Message")``): a pydantic v2 model, a dataclass or
    an enum needs nothing else; any other class needs ``encode`` (object ->
    storable value) and ``decode`` (that value -> object). Values are stored
    under ``name`` (default: ``module.QualName``): keep it stable, it is how
    stored records find the class again (pass ``name=`` for a class of a
    ``__main__`` script that other programs, such as the CLI, read). Register
    in every process that reads or writes such values, at import time (next to
    the workflow: the CLI, ``recover()`` and a ``ShardedRuntime`` import it);
    a ``RayExecutor`` sends the registry with each step to its workers.
    Registering a class twice under one name is a no-op; a new definition of
    the same ``module.QualName`` (a reloaded module) replaces the old one.
    Subclasses are not covered: register each class that is stored.
    """
    global BY_TYPE, BY_NAME, _snapshot
    if cls is None:  # @register(name=...)
        return lambda c: register(c, name=name, encode=encode, decode=decode)
    if not isinstance(cls, type):
        raise CodecError(f"register() takes a class, got {type(cls).__name__} {cls!r}")
    if issubclass(cls, _NATIVE) and not issubclass(cls, enum.Enum):
        raise CodecError(f"cannot register {cls.__qualname__}: values of it are stored already "
                         "(a native or extension type, or a subclass of one)")
    if (encode is None) != (decode is None):
        raise CodecError(f"register({cls.__qualname__}): pass both encode= and decode=, or neither")
    if encode is not None and decode is not None:
        if not callable(encode) or not callable(decode):
            raise CodecError(f"register({cls.__qualname__}): encode and decode must be callables")
        dump, load_ = encode, decode
    else:
        dump, load_ = _derived(cls)
    if name is None:
        if "<locals>" in cls.__qualname__:
            raise CodecError(
                f"cannot register {cls.__qualname__} by its own name: it is defined inside a "
                "function, so that name is not stable; define it at module level or pass "
                "name='some.stable.Name'")
        name = f"{cls.__module__}.{cls.__qualname__}"
    elif not isinstance(name, str) or not name:
        raise CodecError(f"register({cls.__qualname__}): name must be a non-empty str, got {name!r}")
    entry = Entry(cls, name, dump, load_, encode, decode)
    with _lock:
        by_type, by_name = dict(BY_TYPE), dict(BY_NAME)
        old = by_type.get(cls)
        if old is not None and old.name != name:
            raise CodecError(f"{cls.__qualname__} is registered already, as {old.name!r}; a class "
                             "has one stored name (unregister it first to rename it)")
        other = by_name.get(name)
        if other is not None and other.cls is not cls:
            if not _same_definition(other.cls, cls):
                raise CodecError(
                    f"the type name {name!r} is taken by {other.cls.__module__}."
                    f"{other.cls.__qualname__}; register {cls.__qualname__} with another name=")
            by_type.pop(other.cls, None)  # a new definition of the same class replaces the old
        by_type[cls] = entry
        by_name[name] = entry
        BY_TYPE, BY_NAME, _snapshot = by_type, by_name, None
    return cls


def unregister(cls: type) -> None:
    """Forget ``cls`` (values of it can no longer be stored or read)."""
    global BY_TYPE, BY_NAME, _snapshot
    with _lock:
        entry = BY_TYPE.get(cls)
        if entry is None:
            return
        by_type, by_name = dict(BY_TYPE), dict(BY_NAME)
        del by_type[cls]
        by_name.pop(entry.name, None)
        BY_TYPE, BY_NAME, _snapshot = by_type, by_name, None


def registered() -> dict[str, type]:
    """Stored type name -> class, for every registered class."""
    return {name: e.cls for name, e in BY_NAME.items()}


def entry_of(value: Any) -> Entry | None:
    """The entry of ``value``'s exact class, or None."""
    return BY_TYPE.get(type(value))


def dump(entry: Entry, obj: Any) -> Any:
    """``obj`` as stored data; the encoder's own exception becomes a TypeError naming the type."""
    try:
        return entry.dump(obj)
    except Exception as exc:  # noqa: BLE001 - whatever user code raises
        raise TypeError(f"the encoder of registered type {entry.name!r} raised "
                        f"{type(exc).__name__}: {exc}") from None


def payload(entry: Entry, obj: Any, pack: Callable[[Any], bytes], too_deep: Callable[[Any, int], bool],
            deep_error: ValueError) -> bytes:
    """The extension payload of ``obj``: ``pack([name, data])``. Raises ValueError
    when its data nests too deep (``deep_error``) or registered values nest in
    each other more than :data:`NEST` times."""
    n = getattr(_nest, "n", 0)
    if n >= NEST:
        raise ValueError(f"registered values nested in each other more than {NEST} deep")
    data = dump(entry, obj)
    if too_deep(data, getattr(deep_error, "limit", 100)):
        raise deep_error
    _nest.n = n + 1
    try:
        return pack([entry.name, data])
    finally:
        _nest.n = n


def load(payload: Any) -> Any:
    """The object a stored ``[name, data]`` payload describes."""
    if not isinstance(payload, list) or len(payload) != 2 or not isinstance(payload[0], str):
        raise CodecError("malformed registered-type value (not a [name, data] pair); the record is corrupt")
    name, data = payload
    entry = BY_NAME.get(name)
    if entry is None:
        short = name.rsplit(".", 1)[-1]
        raise UnregisteredType(
            f"stored value has type {name!r}, which is not registered in this process: call "
            f"atomr.codec.register({short}) (or register(YourClass, name={name!r}) if it was "
            "registered under that name) before reading it, e.g. where the workflow is defined; "
            "atomr never imports a type named in stored data")
    try:
        return entry.load(data)
    except Exception as exc:  # noqa: BLE001 - whatever validation or user code raises
        raise StoredTypeMismatch(name, entry.cls, f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}") \
            from None


def snapshot() -> tuple[tuple[Any, ...], ...]:
    """The registry as a picklable tuple of ``(cls, name, encode, decode)``
    (sent with each step to other processes, e.g. Ray workers)."""
    global _snapshot
    snap = _snapshot
    if snap is None:
        snap = tuple((e.cls, e.name, e.encode, e.decode) for e in BY_NAME.values())
        _snapshot = snap
    return snap


def adopt(snap: tuple[tuple[Any, ...], ...]) -> None:
    """Register in this process what :func:`snapshot` gave in another one (those
    registered here already are kept). Never raises: a class that cannot be
    registered here is left out (storing a value of it then says so)."""
    for cls, name, enc, dec in snap:
        cur = BY_NAME.get(name)
        if (cur is None or cur.cls is not cls) and not (cur is None and cls in BY_TYPE):
            try:
                register(cls, name=name, encode=enc, decode=dec)
            except Exception:  # noqa: BLE001 - e.g. the name is taken here by another class
                pass
