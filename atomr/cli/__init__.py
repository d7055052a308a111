"""The ``atomr`` command line: run, watch, inspect and repair workflows.

    atomr demo                                   an example run, start to finish
    atomr run MODULE:WORKFLOW [--input JSON]     run a workflow, streaming its steps
    atomr runs [--status S] [--workflow W]       the runs in the store
    atomr show W RUN / atomr history W RUN       a run's state / its checkpoints
    atomr resume W RUN [--resume JSON] ...       carry on a paused run
    atomr fork / prune / purge / graph / recover / bench

Every command works on the embedded LMDB store in ``./.atomr`` unless
``--store PATH`` says otherwise. A run remembers the ``MODULE:WORKFLOW`` it was
started from, so later commands need only the workflow id and the run id.

Exit codes: 0 done (or success), 3 paused, 1 failed run or unexpected error,
2 bad usage or an atomr error (one line on stderr; ``--debug`` shows the traceback).

Modules: ``base`` (exit codes, CliError, specs, JSON input), ``render``
(output), ``stores`` (store and runtime per command), ``commands``,
``bench``, ``parser``, ``app`` (``main``).
"""

from __future__ import annotations

from atomr.cli.app import main
from atomr.cli.base import DEFAULT_STORE, CliError, load_workflow

__all__ = ["main", "CliError", "load_workflow", "DEFAULT_STORE"]
