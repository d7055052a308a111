"""The ``atomr`` command line: run, watch, inspect and repair workflows.

    atomr demo                                   an example run, start to finish
    atomr run MODULE:WORKFLOW [--input JSON]     run a workflow, streaming its steps
    atomr runs [--status S] [--workflow W]       the runs in the store
    atomr show W RUN / atomr history W RUN       a run's state / its checkpoints
    atomr resume W RUN [--resume JSON] ...       carry on a paused run
    atomr fork / prune / purge / graph / recover / cancel / schedule / serve / bench
    atomr worker MODULE:WORKFLOW...              execute runs of a shared store (SQLite, Postgres)
    atomr verify / backup DEST / copy SRC DST   look after a store (per backend)

Every command works on the store ``--store`` names — a directory (LMDB),
``sqlite:///FILE``, ``postgresql://USER@HOST:PORT/DB?schema=NAME`` — or, without
it, ``$ATOMR_STORE``, else the LMDB store in ``./.atomr``. A password in a DSN
is never printed. A run remembers the ``MODULE:WORKFLOW`` it was
started from, so later commands need only the workflow id and the run id.

Exit codes: 0 done (or success), 3 paused, 1 failed run or unexpected error,
2 bad usage or an atomr error (one line on stderr; ``--debug`` shows the traceback).

Modules: ``base`` (exit codes, CliError, specs, JSON input), ``render``
(output), ``stores`` (store URLs, store and runtime per command), ``commands``,
``control`` (cancel), ``care`` (verify, backup, copy), ``schedule``, ``serve``,
``worker``, ``pool`` (serve's worker processes), ``bench``, ``parser``, ``app`` (``main``).

On a shared store (SQLite, Postgres) only ``run``, ``recover``, ``worker``,
``serve`` and ``demo`` execute runs; every other command is a client
(``Runtime(execute=False)``), so a short command never takes a run over.
"""

from __future__ import annotations

from atomr.cli.app import main
from atomr.cli.base import DEFAULT_STORE, CliError, load_workflow

__all__ = ["main", "CliError", "load_workflow", "DEFAULT_STORE"]
