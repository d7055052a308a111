"""The LangGraph twins of :mod:`benchmarks._graphs` (imported only when LangGraph is).

The state classes live at module level so LangGraph can resolve their annotations.
"""

import asyncio
import operator
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from benchmarks._graphs import agent_step_ids, chain_step_ids, fanout_step_ids, message

RECURSION_LIMIT = 100_000


class ChainState(TypedDict):
    n: int


class MsgState(TypedDict):
    n: int
    msgs: Annotated[list, operator.add]


class FanState(TypedDict):
    log: Annotated[list, operator.add]


def config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}


def chain(steps: int, hook: Callable[[], None] | None = None) -> StateGraph:
    ids = chain_step_ids(steps)
    if hook is None:

        def inc(state: ChainState) -> dict[str, Any]:
            return {"n": state["n"] + 1}

    else:

        def inc(state: ChainState) -> dict[str, Any]:
            hook()
            return {"n": state["n"] + 1}

    g = StateGraph(ChainState)
    for i, sid in enumerate(ids):
        g.add_node(sid, inc)
        g.add_edge(START if i == 0 else ids[i - 1], sid)
    g.add_edge(ids[-1], END)
    return g


def msg_chain(steps: int, size: int = 200) -> StateGraph:
    ids = chain_step_ids(steps)
    g = StateGraph(MsgState)
    for i, sid in enumerate(ids):
        msg = message(i, size)

        def step(state: MsgState, _m: str = msg) -> dict[str, Any]:
            return {"n": state["n"] + 1, "msgs": [_m]}

        g.add_node(sid, step)
        g.add_edge(START if i == 0 else ids[i - 1], sid)
    g.add_edge(ids[-1], END)
    return g


def fanout(width: int, depth: int) -> StateGraph:
    layers = fanout_step_ids(width, depth)
    g = StateGraph(FanState)
    for k, layer in enumerate(layers):
        for sid in layer:

            def step(state: FanState, _s: str = sid) -> dict[str, Any]:
                return {"log": [_s]}

            g.add_node(sid, step)
            if k == 0:
                g.add_edge(START, sid)
            else:
                for prev in layers[k - 1]:
                    g.add_edge(prev, sid)
    for sid in layers[-1]:
        g.add_edge(sid, END)
    return g


def agent_chain(steps: int, io_seconds: float) -> StateGraph:
    """The twin of :func:`benchmarks._graphs.atomr_agent_chain`: ``async`` nodes
    that await ``asyncio.sleep(io_seconds)`` (I/O), then ``n += 1``."""
    ids = agent_step_ids(steps)

    async def call(state: ChainState) -> dict[str, Any]:
        await asyncio.sleep(io_seconds)
        return {"n": state["n"] + 1}

    g = StateGraph(ChainState)
    for i, sid in enumerate(ids):
        g.add_node(sid, call)
        g.add_edge(START if i == 0 else ids[i - 1], sid)
    g.add_edge(ids[-1], END)
    return g


def memory_saver() -> InMemorySaver:
    return InMemorySaver()


def sqlite_path(directory: str) -> str:
    return os.path.join(directory, "lg.sqlite")


SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def sqlite_saver(directory: str, synchronous: str | None = None) -> SqliteSaver:
    """A SqliteSaver on a file in ``directory`` (shareable across threads; it locks).

    ``synchronous``: set SQLite's level explicitly (e.g. "FULL"); default: SQLite's own."""
    conn = sqlite3.connect(sqlite_path(directory), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    if synchronous is not None:
        conn.execute(f"PRAGMA synchronous={synchronous}")
    return saver


def sqlite_synchronous(saver: SqliteSaver) -> str:
    """The synchronous level of the saver's connection ("FULL", ...)."""
    level = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
    return SYNCHRONOUS.get(level, str(level))


@asynccontextmanager
async def async_sqlite_saver(directory: str) -> AsyncIterator[Any]:
    """An AsyncSqliteSaver (aiosqlite) on a file in ``directory``, set up, WAL mode
    and synchronous=FULL as SqliteSaver gets; yields ``(saver, synchronous level)``."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(sqlite_path(directory)) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA synchronous=FULL")
        async with saver.conn.execute("PRAGMA synchronous") as cur:
            row = await cur.fetchone()
        yield saver, SYNCHRONOUS.get(row[0], str(row[0]))


def sqlite_sizes(directory: str) -> dict[str, int]:
    p = sqlite_path(directory)
    return {k: (os.path.getsize(f) if os.path.exists(f) else 0)
            for k, f in (("db", p), ("wal", p + "-wal"), ("shm", p + "-shm"))}
