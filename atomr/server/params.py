"""Every value a request carries outside its JSON body, parsed here and only here.

Headers, query parameters and path parameters are text from anyone. Each
reader below accepts one strict form and answers anything else with
:class:`~atomr.server.http.ApiError` 400 naming the value, so no request value
reaches ``int()`` / ``float()`` unchecked (``str.isdigit()`` accepts ``"²"``
and ``"٣"``, which ``int()`` refuses; ``int()`` accepts ``"1_0"``, ``" 5"``
and Arabic-Indic digits; ``float()`` accepts ``"nan"``, ``"1e999"``). Numbers
are ASCII digits only (``[0-9]``), bounded in length before they are
converted; choices are matched exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.requests import Request

from atomr.errors import StoreError
from atomr.store.base import parse_cursor

__all__ = ["ApiError", "HTTP_NAMES", "content_length", "cursor", "ids", "last_event_id", "modes", "page_cursor",
           "path_id", "query_choice", "query_int", "query_seconds", "query_text"]

HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
              405: "MethodNotAllowed", 413: "PayloadTooLarge", 500: "InternalError", 501: "NotImplemented",
              503: "ServiceUnavailable"}

#: an unsigned decimal integer: ASCII digits only, at most 19 of them (below 2**63)
_UINT = re.compile(r"[0-9]{1,19}")
#: seconds: ASCII digits with an optional fraction (no sign, exponent, nan, inf or "_")
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")
#: the longest query or path value read (characters); ids are checked again by the runtime
MAX_TEXT = 4096
#: spaces and tabs a header value may carry around it (RFC 9110 "OWS")
_OWS = " \t"


class ApiError(Exception):
    """A refusal of the HTTP layer itself (bad body, bad header, query or path value...)."""

    def __init__(self, status: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.name = name or HTTP_NAMES.get(status, "Error")


def _shown(text: str) -> str:
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _uint(text: str, what: str) -> int:
    if not _UINT.fullmatch(text):
        raise ApiError(400, f"{what}={_shown(text)} is not a whole number (ASCII digits 0-9, at most 19)")
    return int(text)


def query_text(request: Request, name: str) -> str | None:
    """The query parameter ``name`` as text; None when absent or empty."""
    text = request.query_params.get(name)
    if not text:
        return None
    if len(text) > MAX_TEXT or "\x00" in text:
        raise ApiError(400, f"query parameter {name}={_shown(text)} is too long or holds a NUL")
    return text


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """The query parameter ``name`` as an integer in ``lo..hi`` (``default`` when absent)."""
    text = query_text(request, name)
    if text is None:
        return default
    value = _uint(text, f"query parameter {name}")
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter {name}={value} is out of range {lo}..{hi}")
    return value


def query_seconds(request: Request, name: str, default: float, hi: float) -> float:
    """The query parameter ``name`` as seconds in ``0..hi`` (``default`` when absent)."""
    text = query_text(request, name)
    if text is None:
        return default
    if not _SECONDS.fullmatch(text):
        raise ApiError(400, f"{name}={_shown(text)} is not a number of seconds (e.g. 30 or 2.5)")
    value = float(text)
    if not 0 <= value <= hi:
        raise ApiError(400, f"{name}={text} is out of range 0..{hi:g} seconds")
    return value


def query_choice(request: Request, name: str, choices: Sequence[str], what: str) -> str | None:
    """The query parameter ``name``, one of ``choices`` exactly; None when absent or empty."""
    text = query_text(request, name)
    if text is not None and text not in choices:
        raise ApiError(400, f"{name}={_shown(text)} is not {what}; use one of {', '.join(choices)}")
    return text


def modes(request: Request, choices: Sequence[str], default: Sequence[str]) -> list[str]:
    """``?modes=a,b``: a comma-separated list of ``choices`` (``default`` when absent)."""
    text = query_text(request, "modes")
    if text is None:
        return list(default)
    picked = [m.strip() for m in text.split(",") if m.strip()]
    if not picked or any(m not in choices for m in picked):
        raise ApiError(400, f"modes={_shown(text)}: use a comma-separated list of {', '.join(choices)}")
    return picked


def cursor(text: str | None, what: str) -> int | None:
    """A stream cursor (an ``id:`` line this server sent): None when absent or empty."""
    if not text:
        return None
    if not _UINT.fullmatch(text):
        raise ApiError(400, f"{what} {_shown(text)} is not a cursor this server sent (an id: line)")
    return int(text)


def last_event_id(request: Request) -> int | None:
    """Where an event stream resumes: the ``Last-Event-ID`` header, else ``?after=``."""
    header = (request.headers.get("last-event-id") or "").strip(_OWS)
    if header:
        return cursor(header, "Last-Event-ID")
    return cursor(query_text(request, "after"), "after")


def content_length(request: Request) -> int | None:
    """The ``Content-Length`` header as a number of bytes; None when absent."""
    text = request.headers.get("content-length")
    if text is None:
        return None
    text = text.strip(_OWS)
    if not _UINT.fullmatch(text):
        raise ApiError(400, f"Content-Length {_shown(text)} is not a number of bytes")
    return int(text)


def page_cursor(request: Request) -> str | None:
    """``?cursor=`` of /api/runs: the cursor of the last run of the page before (checked)."""
    text = query_text(request, "cursor")
    if text is None:
        return None
    try:
        parse_cursor(text)
    except StoreError:
        raise ApiError(400, f"cursor {_shown(text)} is not a cursor this server gave (next_cursor)") from None
    return text


def path_id(request: Request, name: str) -> str:
    """A path parameter (a workflow or run id): text without NUL, at most :data:`MAX_TEXT` long
    (the runtime checks it again: an id the store cannot hold is refused there)."""
    text = request.path_params.get(name)
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"the path has no {name}")
    if len(text) > MAX_TEXT or "\x00" in text:
        raise ApiError(400, f"the {name} in the path, {_shown(text)}, is too long or holds a NUL")
    return text


def ids(request: Request) -> tuple[str, str]:
    """``{wf}`` and ``{run}`` of a run's path."""
    return path_id(request, "wf"), path_id(request, "run")
