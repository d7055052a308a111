"""Sharding: many runtimes, each owning a shard of run ids in its own store, on Ray actors.

Needs the ``ray`` extra. See ``docs/sharding.md`` for the design; in short::

    from atomr.sharding import ShardedRuntime

    with ShardedRuntime(shards=3, root="data/", workflows=["myapp.flows:orders"]) as srt:
        h = srt.start("orders", {"n": 1}, run_id="r1")
        out = h.result(timeout=30)            # Done | Paused | Failed, as with Runtime
        srt.resume("orders", "r1", Command(resume="ok")).result(timeout=30)

* Shard ``i`` is a Ray actor (its own process) hosting a :class:`~atomr.Runtime`
  on ``LmdbStore(root/shard-i)``. It imports the workflows from their
  ``"module:attr"`` specs (``attr``: a Workflow, or a function returning one).
* A run lives on shard ``shard_of(run_id)``: a stable hash (blake2b) of the
  run id modulo the shard count. Routing is a pure function, so this object is
  stateless and any number of them (in any process) route the same way.
* The shard count of a root is fixed: it is written to ``root/shards.json`` and
  opening the root with another count is refused (rebalancing is not done).
* A shard whose process dies is restarted by Ray (``max_restarts``); its store
  is reopened and the runs it was executing are carried on (``recover()``).
  A waiting ``result()`` keeps waiting across the restart.

Threads: the methods run in the caller's thread and are thread-safe; every wait
has a timeout.

Modules: ``placement`` (shard_of, the manifest), ``wire`` (exceptions and
outcomes across processes), ``host`` (the shard actor), ``router``
(:class:`ShardedRuntime`, :class:`ShardedRunHandle`).
"""

from __future__ import annotations

from atomr.sharding.host import load_workflow
from atomr.sharding.placement import ShardUnavailable, shard_of
from atomr.sharding.router import ShardedRunHandle, ShardedRuntime

__all__ = ["ShardedRuntime", "ShardedRunHandle", "ShardUnavailable", "shard_of", "load_workflow"]
