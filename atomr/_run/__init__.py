"""The run actor: one :class:`WorkflowActor` per executing run, a thin shell
over the pure core in :mod:`atomr.graph`.

* :mod:`atomr._run.actor` — the message table, requests, one super-step top-down;
* :mod:`atomr._run.kinds` — carrying out the decisions of Map, Loop, Subgraph, any-join;
* :mod:`atomr._run.journal` — events encoded once, folded, and sent per durability mode;
* :mod:`atomr._run.attempts` — step attempts in flight (retry, timeout, cancel);
* :mod:`atomr._run.subscribers` — who hears about the run (reply_to, listeners).
"""
