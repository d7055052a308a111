"""Store URLs: :func:`open_store` and the masking of passwords in DSNs.

========================================  ==========================================
URL                                       store
========================================  ==========================================
``PATH`` or ``lmdb:PATH``                 :class:`~atomr.LmdbStore` in directory PATH
``sqlite:///relative.db``                 :class:`~atomr.SqliteStore` (SQLAlchemy's
``sqlite:////absolute/path.db``           convention: three slashes, then the path)
``postgresql://user@host:5432/db``        :class:`~atomr.PostgresStore`;
``postgres://…``, ``?schema=NAME``        ``schema`` defaults to ``atomr``
``memory:``                               :class:`~atomr.MemoryStore` (this process only)
========================================  ==========================================

A SQLite URL may say ``?synchronous=normal`` (default ``full``). Every other
query parameter of a Postgres URL goes to libpq (``sslmode``,
``connect_timeout``…). A password in a DSN is never printed: :func:`redact`
masks it wherever a DSN is shown.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from atomr.errors import StoreUrlError

__all__ = ["open_store", "redact", "scrub", "split_schema", "SCHEMES", "describe"]

#: The URL schemes open_store knows.
SCHEMES = ("lmdb", "sqlite", "postgresql", "postgres", "memory")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_KV_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_HELP = "use a path, lmdb:PATH, sqlite:///FILE, postgresql://USER@HOST:PORT/DB or memory:"


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL or ``key=value`` form)."""
    if "://" not in dsn:
        return _KV_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return dsn  # nothing to mask: unchanged (urlunsplit would drop the empty host of sqlite:////abs.db)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(dsn: str) -> str:
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return ""
        pw = parts.password or ""
        for k, v in parse_qsl(parts.query):
            if k.lower() == "password":
                pw = v
        return unquote(pw)
    m = _KV_PASSWORD.search(dsn)
    return m.group(2).strip("'") if m else ""


def scrub(text: str, dsn: str, *secrets: str) -> str:
    """``text`` (a driver's message, say) with the DSN and its password masked."""
    text = text.replace(dsn, redact(dsn))
    for secret in (_password(dsn), *secrets):
        if secret and len(secret) >= 1:
            text = text.replace(secret, "***")
    return text


def split_schema(dsn: str) -> tuple[str, str | None]:
    """``(dsn without its schema= query parameter, that schema or None)``."""
    if "://" not in dsn or "?" not in dsn:
        return dsn, None
    try:
        parts = urlsplit(dsn)
    except ValueError:
        raise StoreUrlError(f"malformed Postgres URL {redact(dsn)!r}; {_HELP}") from None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in pairs if k == "schema"]
    if not schemas:
        return dsn, None
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schemas[-1]


def describe(url: str) -> str:
    """The URL as it may be shown (password masked)."""
    return redact(url) if isinstance(url, str) else repr(url)


def open_store(url: str | os.PathLike[str], **options: Any) -> Any:
    """Open the store a URL names (table in the module docstring); ``options``
    go to the store's constructor (e.g. ``readonly=True``).

    An unknown scheme or a malformed URL raises
    :class:`~atomr.errors.StoreUrlError`; an unreachable server
    :class:`~atomr.errors.StoreUnavailable`. Neither shows a password.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise StoreUrlError(f"a store URL is a str, got {type(url).__name__}; {_HELP}")
    text = url.strip()
    if not text:
        raise StoreUrlError(f"the store URL is empty; {_HELP}")
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else None
    if scheme is None or (len(scheme) == 1 and os.name == "nt"):
        from atomr.store.lmdb import LmdbStore

        return LmdbStore(text, **options)
    rest = text[m.end():] if m else ""
    if scheme == "memory":
        if rest.strip("/"):
            raise StoreUrlError(f"memory: takes nothing after the colon, got {describe(text)!r}; write memory:")
        from atomr.store.memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "lmdb":
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise StoreUrlError(f"lmdb: needs a directory, e.g. lmdb:runs/ (got {text!r})")
        from atomr.store.lmdb import LmdbStore

        return LmdbStore(path, **options)
    if scheme == "sqlite":
        return _open_sqlite(text, rest, options)
    if scheme in ("postgresql", "postgres"):
        from atomr.store.sql.postgres import PostgresStore

        if not rest.startswith("//"):
            raise StoreUrlError(f"malformed Postgres URL {describe(text)!r}; write postgresql://USER@HOST:PORT/DB")
        return PostgresStore(text, **options)
    raise StoreUrlError(f"unknown store URL scheme {scheme!r} in {describe(text)!r}; {_HELP}")


def _open_sqlite(text: str, rest: str, options: dict[str, Any]) -> Any:
    from atomr.store.sql.sqlite import SqliteStore

    if not rest.startswith("///"):
        raise StoreUrlError(f"malformed SQLite URL {text!r}: write sqlite:///relative.db or "
                            "sqlite:////absolute/path.db (three slashes, then the path)")
    path, _, query = rest[3:].partition("?")
    if not path or path == ":memory:":
        raise StoreUrlError(f"SQLite URL {text!r} names no file; write sqlite:///runs.db (for a store in this "
                            "process only, use memory:)")
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == "synchronous":
            options.setdefault("synchronous", v)
        else:
            raise StoreUrlError(f"unknown parameter {k!r} in SQLite URL {text!r}; the one known is synchronous=")
    return SqliteStore(unquote(path), **options)
