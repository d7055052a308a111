"""Shared by the server tests: workflows, and a real uvicorn on 127.0.0.1 in a thread.

(No tests here; the other ``test_server_*`` modules import it.)
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from atomr import AppendList, Dag, LastWriteWins, MemoryStore, Runtime, StateSchema, Workflow

pytest.importorskip("starlette", reason="the server tests need the server extra (starlette)")
uvicorn = pytest.importorskip("uvicorn", reason="the server tests need the server extra (uvicorn)")

from atomr.server import create_app  # noqa: E402

T = 20.0  # every wait of these tests is bounded by this (seconds)
TOKEN = "test-token-0123456789"

# -- workflows ------------------------------------------------------------------------------


def _draft(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": [f"draft {state['topic']}"], "blob": b"\x00\x01atomr", "ratio": math.nan,
            "tags": {"b", "a"}}


def _check(state: Any, ctx: Any) -> dict[str, Any]:
    return {"log": ["checked"]}


def _review(state: Any, ctx: Any) -> dict[str, Any]:
    answer = ctx.interrupt({"question": f"publish {state['topic']}?"})
    return {"log": [f"review: {answer}"], "published": answer == "yes"}


approval = Workflow(
    "approval",
    Dag.builder("draft").step("draft", _draft).step("check", _check).step("review", _review)
    .edge("draft", "review").edge("check", "review").build(),
    StateSchema({"topic": LastWriteWins(), "log": AppendList(), "published": (LastWriteWins(), False),
                 "blob": LastWriteWins(), "ratio": LastWriteWins(), "tags": LastWriteWins()}),
)

#: released by a test; a run of "gated" waits for it (bounded) in its first step
GATE = threading.Event()


def _wait_gate(state: Any, ctx: Any) -> dict[str, Any]:
    GATE.wait(T)
    return {"n": state["n"] + 1}


def _boom(state: Any, ctx: Any) -> dict[str, Any]:
    raise ValueError("boom")


gated = Workflow("gated", Dag.builder("wait").step("wait", _wait_gate).build(),
                 StateSchema({"n": (LastWriteWins(), 0)}))
failing = Workflow("failing", Dag.builder("boom").step("boom", _boom).build(),
                   StateSchema({"n": (LastWriteWins(), 0)}))
WORKFLOWS = (approval, gated, failing)


def runtime(store: Any = None) -> Runtime:
    rt = Runtime(store=store if store is not None else MemoryStore())
    for wf in WORKFLOWS:
        rt.register(wf)
    return rt


# -- a real server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=2, limit_concurrency=1000,
                                backlog=2048, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + T
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(T)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def serve(rt: Runtime | None = None, **kwargs: Any) -> Iterator[tuple[Server, Runtime]]:
    """A server over ``rt`` (default: a new runtime on a MemoryStore); the
    server's shutdown closes the runtime."""
    rt = rt if rt is not None else runtime()
    kwargs.setdefault("heartbeat_s", 0.5)
    try:
        with Server(create_app(rt, **kwargs)) as server:
            yield server, rt
    finally:
        rt.close()
