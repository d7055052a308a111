"""The HTTP edge: errors as JSON with the right status, request bodies, bearer-token auth.

Every error answer is ``{"error": NAME, "message": TEXT}``. ``NAME`` is the
:mod:`atomr.errors` class of the refusal (``RunNotFound``, ``RunNotPaused``,
``UnknownChannelError``...); errors of HTTP itself have their own names:
``BadRequest`` (malformed JSON, a missing or wrongly typed field),
``Unauthorized`` (401), ``PayloadTooLarge`` (413), ``NotFound`` (404, no such
route), ``MethodNotAllowed`` (405), ``NotImplemented`` (501).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from atomr import errors as E
from atomr.server.encode import dumps

__all__ = ["ApiError", "AuthMiddleware", "JSON", "error_response", "field", "query_int", "read_json",
           "status_of"]

log = logging.getLogger("atomr.server")

#: atomr errors that name a state conflict (409); matched by class name along
#: the class's MRO, so that a refusal class added later is classified too
CONFLICT = frozenset({"RunExists", "RunNotPaused", "RunOver", "WorkflowExists"})
NOT_FOUND = frozenset({"RunNotFound", "WorkflowNotFound", "CheckpointNotFound"})
#: the server's side, not the request's
UNAVAILABLE = {"RuntimeClosed": 503, "StoreClosed": 503, "StoreFull": 507, "ResultTimeout": 504,
               "StoreLocked": 503, "CorruptRecord": 500, "CorruptStore": 500, "FormatVersionError": 500,
               "StepCrashed": 500}
HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
              405: "MethodNotAllowed", 413: "PayloadTooLarge", 501: "NotImplemented"}


class JSON(JSONResponse):
    """A JSONResponse whose body is compact, UTF-8, and refuses NaN (see encode.py)."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


class ApiError(Exception):
    """A refusal of the HTTP layer itself (bad body, bad query parameter...)."""

    def __init__(self, status: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.name = name or HTTP_NAMES.get(status, "Error")


def status_of(exc: BaseException) -> int:
    """The HTTP status of an atomr error: 404 unknown, 409 conflict, 400 bad input."""
    names = [c.__name__ for c in type(exc).__mro__]
    for name in names:
        if name in NOT_FOUND:
            return 404
        if name in CONFLICT:
            return 409
        if name in UNAVAILABLE:
            return UNAVAILABLE[name]
    if isinstance(exc, E.StoreError):
        return 500
    return 400  # every other AtomrError refuses what the request asked


def error_response(exc: BaseException) -> JSON:
    if isinstance(exc, ApiError):
        status, name = exc.status, exc.name
    elif isinstance(exc, HTTPException):
        status, name = exc.status_code, HTTP_NAMES.get(exc.status_code, "Error")
        return JSON({"error": name, "message": exc.detail or name}, status_code=status,
                    headers=getattr(exc, "headers", None))
    elif isinstance(exc, E.AtomrError):
        status, name = status_of(exc), type(exc).__name__
    else:
        log.error("unexpected error", exc_info=exc)
        status, name = 500, type(exc).__name__
    message = " ".join(str(exc).split()) or name
    return JSON({"error": name, "message": message}, status_code=status)


async def read_json(request: Request, max_body: int, fields: Iterable[str] = ()) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty), at most ``max_body`` bytes.

    Raises ApiError 413 past the limit (read no further), 400 when it is not a
    JSON object or names a field not in ``fields``."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, f"Content-Length {length!r} is not a number of bytes")
        if int(length) > max_body:
            raise ApiError(413, f"the request body has {length} bytes, over the limit of {max_body} "
                                "(atomr serve --max-body)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ApiError(413, f"the request body is over the limit of {max_body} bytes "
                                "(atomr serve --max-body)")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deep") from None
    if not isinstance(doc, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                            f"this route takes {', '.join(map(repr, fields)) or 'no fields'}")
    return doc


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a number must be finite)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of the range of a float")
    return value


def field(doc: Mapping[str, Any], name: str, kind: str) -> Any:
    """``doc[name]`` (None when absent or null) when it is of ``kind`` ("object",
    "string", "integer"); ApiError 400 otherwise."""
    value = doc.get(name)
    if value is None:
        return None
    ok = {"object": isinstance(value, dict), "string": isinstance(value, str),
          "integer": isinstance(value, int) and not isinstance(value, bool)}[kind]
    if not ok:
        shown = json.dumps(value) if isinstance(value, (bool, int, float, str)) else type(value).__name__
        raise ApiError(400, f"field {name!r} must be a JSON {kind}, got {shown[:80]}")
    return value


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"query parameter {name}={text!r:.40} is not an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter {name}={value} is out of range {lo}..{hi}")
    return value


def _protected(path: str) -> bool:
    return path == "/api" or path.startswith("/api/") or path == "/metrics"


class AuthMiddleware:
    """``Authorization: Bearer <token>`` on /api and /metrics (constant-time compare).

    Pages and their static assets hold no data and are served to anyone; the
    UI asks for the token when the API answers 401."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or not _protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token)
        if ok:
            await self.app(scope, receive, send)
            return
        message = ("this server needs a token: send Authorization: Bearer <token>" if not given
                   else "the token is wrong: send the one atomr serve was started with")
        response: Response = JSON({"error": "Unauthorized", "message": message}, status_code=401,
                                  headers={"WWW-Authenticate": 'Bearer realm="atomr"'})
        await response(scope, receive, send)
