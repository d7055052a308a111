"""The actors of a runtime and what they run on.

* :mod:`atomr.actors.dispatcher` — the pykka actor type on shared threads;
* :mod:`atomr.actors.supervisor` — the registry of live run actors, routing, restarts;
* :mod:`atomr.actors.checkpointer` — the single LMDB writer, with group commit;
* :mod:`atomr.actors.step` — step execution: context, step pool, asyncio loop;
* :mod:`atomr.actors.scheduler` — one timer thread.

The run actor itself lives in :mod:`atomr._run`.
"""
