"""``MODULE:WORKFLOW`` specs: the one loader the CLI and the shard processes share.

A spec names a module and an attribute in it (dotted for nested attributes):
either a :class:`~atomr.workflow.Workflow` or a zero-argument callable that
returns one, e.g. ``examples.order_pipeline:workflow`` or ``factory:make``.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from atomr.errors import WorkflowSpecError
from atomr.workflow import Workflow

__all__ = ["WorkflowSpecError", "find_spec", "load_workflow", "split_spec"]

_EXAMPLE = "examples.order_pipeline:workflow"


def split_spec(spec: object) -> tuple[str, str]:
    """``(module, attr)`` of ``spec``; raises WorkflowSpecError when it is not ``MODULE:ATTR``."""
    module, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module or not attr:
        raise WorkflowSpecError(f"expected MODULE:WORKFLOW (e.g. {_EXAMPLE}), got {spec!r}")
    return module, attr


def load_workflow(spec: str, *, hint: str = "add the directory that holds it to PYTHONPATH") -> Workflow:
    """Import the Workflow ``spec`` names (calling it when it is a factory).

    ``hint`` ends the message when the spec's module cannot be found (where the
    caller looks for modules). An error raised while the module itself runs
    (including an import of something else that fails) propagates unchanged.
    """
    mod_name, attr = split_spec(spec)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (mod_name == missing or mod_name.startswith(missing + ".")):
            raise WorkflowSpecError(
                f"cannot import module {mod_name!r} of {spec!r}: no module named {missing!r}; {hint}"
            ) from exc
        raise
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = sorted(k for k, v in vars(module).items() if isinstance(v, Workflow))
            listed = f"; workflows defined there: {', '.join(found)}" if found else ""
            raise WorkflowSpecError(f"module {mod_name!r} has no attribute {attr!r}{listed}") from None
    if isinstance(obj, Workflow):
        if obj.spec is None:
            obj.spec = spec
        return obj
    if not callable(obj):
        raise WorkflowSpecError(
            f"{spec} is a {type(obj).__name__}, not a Workflow (nor a function returning one)"
        )
    made = obj()
    if not isinstance(made, Workflow):
        raise WorkflowSpecError(f"{spec}() returned a {type(made).__name__}, not a Workflow")
    if made.spec is None:
        made.spec = spec  # loaded by it: its runs (a fork...) record it
    return made


def _importable_name(module: ModuleType) -> str | None:
    """The name the CLI imports ``module`` by: its own, or for ``__main__`` the
    module ``python -m`` ran or the script's file name (None: a REPL, a notebook)."""
    name = module.__name__
    if name != "__main__":
        return name
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    path = getattr(module, "__file__", None)
    if isinstance(path, str) and path.endswith(".py"):
        stem = os.path.splitext(os.path.basename(path))[0]
        return stem if stem.isidentifier() else None
    return None


def find_spec(wf: Workflow, *modules: str | None) -> str | None:
    """``"module:attr"`` of the module-level name bound to ``wf`` in the first of
    ``modules`` (names in ``sys.modules``) that has one; None when none has.
    Runs in the caller's thread (``register()``); reads module dicts only."""
    for mod_name in modules:
        module = sys.modules.get(mod_name) if mod_name else None
        if module is None:
            continue
        names: list[Any] = [k for k, v in list(vars(module).items()) if v is wf]
        if not names:
            continue
        importable = _importable_name(module)
        if importable is None:
            continue
        public = [k for k in names if not k.startswith("_")]
        return f"{importable}:{(public or names)[0]}"
    return None
