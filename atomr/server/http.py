"""The HTTP edge: errors as JSON with the right status, request bodies, bearer-token auth.

Every error answer is ``{"error": NAME, "message": TEXT}``. ``NAME`` is the
:mod:`atomr.errors` class of the refusal (``RunNotFound``, ``RunNotPaused``,
``UnknownChannelError``...); errors of HTTP itself have their own names:
``BadRequest`` (malformed JSON, a missing or wrongly typed field),
``Unauthorized`` (401), ``PayloadTooLarge`` (413), ``NotFound`` (404, no such
route), ``MethodNotAllowed`` (405), ``NotImplemented`` (501), ``InternalError``
(500: a bug). A 500 (and a 507) never carries an exception's text: the answer
names the atomr error class (or ``InternalError``) and a reference that the
server's log line carries with the details. Headers, query and path values are
read by :mod:`atomr.server.params` only.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from atomr import errors as E
from atomr._hooks import logger
from atomr.server.encode import dumps
from atomr.server.params import HTTP_NAMES, ApiError, content_length

__all__ = ["ApiError", "AuthMiddleware", "ErrorsMiddleware", "JSON", "error_response", "field", "read_json",
           "status_of"]

log = logger("atomr.server")

#: atomr errors that name a state conflict (409); matched by class name along
#: the class's MRO, so that a refusal class added later is classified too
CONFLICT = frozenset({"RunExists", "RunNotPaused", "RunNotContinuable", "RunOver", "WorkflowExists",
                      "ScheduleExists"})
NOT_FOUND = frozenset({"RunNotFound", "WorkflowNotFound", "CheckpointNotFound", "ScheduleNotFound"})
#: a stored value this server's code cannot read as the class registered for it: the record is
#: sound, the request cannot be served until the code reads it (409, the message says how)
STORED_TYPES = frozenset({"StoredTypeMismatch", "UnregisteredType"})
#: the server's side, not the request's
UNAVAILABLE = {"RuntimeClosed": 503, "StoreClosed": 503, "StoreFull": 507, "ResultTimeout": 504,
               "StoreLocked": 503, "CorruptRecord": 500, "CorruptStore": 500, "FormatVersionError": 500,
               "StepCrashed": 500}
#: what a 500 / 507 answer says instead of the exception's text (which goes to the log)
_SERVER_SIDE = {"CorruptRecord": "a stored record of this run cannot be read (damaged)",
                "CorruptStore": "the server's store is damaged", "StoreFull": "the server's store is full",
                "FormatVersionError": "the server's store has a format this atomr cannot read"}


class JSON(JSONResponse):
    """A JSONResponse whose body is compact, UTF-8, and refuses NaN (see encode.py)."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def status_of(exc: BaseException) -> int:
    """The HTTP status of an atomr error: 404 unknown, 409 conflict, 400 bad input."""
    names = [c.__name__ for c in type(exc).__mro__]
    for name in names:
        if name in STORED_TYPES:
            return 409
        if name in NOT_FOUND:
            return 404
        if name in CONFLICT:
            return 409
        if name in UNAVAILABLE:
            return UNAVAILABLE[name]
    if isinstance(exc, E.StoreError):
        return 500
    return 400  # every other AtomrError refuses what the request asked


def error_response(exc: BaseException, scope: Scope | None = None) -> JSON:
    """The JSON answer for ``exc``. A 500 or a 507 names the error class and a
    reference, never the exception's text: that goes to the log, with the reference."""
    if isinstance(exc, ApiError):
        status, name = exc.status, exc.name
    elif isinstance(exc, HTTPException):
        status, name = exc.status_code, HTTP_NAMES.get(exc.status_code, "Error")
        return JSON({"error": name, "message": exc.detail or name}, status_code=status,
                    headers=getattr(exc, "headers", None))
    elif isinstance(exc, E.AtomrError):
        status, name = status_of(exc), type(exc).__name__
    else:
        status, name = 500, "InternalError"
    if status in (500, 507) and not isinstance(exc, ApiError):
        ref = secrets.token_hex(4)
        where = f"{scope.get('method', '')} {scope.get('path', '')}" if scope else "a request"
        if isinstance(exc, E.AtomrError):
            log.error("%s answered %d %s (ref %s): %s", where, status, name, ref, " ".join(str(exc).split()))
        else:
            log.error("%s failed (ref %s)", where, ref, exc_info=exc)
        what = _SERVER_SIDE.get(name, "the server could not answer this request")
        return JSON({"error": name, "message": f"{what}; the server's log has the details (ref {ref})"},
                    status_code=status)
    message = " ".join(str(exc).split()) or name
    return JSON({"error": name, "message": message}, status_code=status)


class ErrorsMiddleware:
    """Turns an exception no handler answered into a 500 JSON answer (see
    :func:`error_response`), logged once; the connection stays usable.

    Starlette's own last resort logs it, answers, then raises it again to the
    ASGI server (which logs it a second time and drops the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:
            return  # the client went away before its request was read: nobody to answer
        except Exception as exc:  # noqa: BLE001 - every error becomes an answer
            if started:  # a stream that had begun: it ends here
                log.error("%s %s failed while answering", scope.get("method", ""), scope.get("path", ""),
                          exc_info=exc)
                return
            await error_response(exc, scope)(scope, receive, send)


async def read_json(request: Request, max_body: int, fields: Iterable[str] = ()) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty), at most ``max_body`` bytes.

    Raises ApiError 413 past the limit (read no further), 400 when it is not a
    JSON object or names a field not in ``fields``."""
    length = content_length(request)
    if length is not None:
        if length > max_body:
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
