"""``atomr bench``: run the benchmark harness of a source checkout.

The harness (the ``benchmarks`` package beside ``atomr/`` in the repository) is
not part of the installed distribution: it writes its results into its own
directory and needs the ``bench`` extra. It is looked for in the current
directory, then in the checkout this atomr package was imported from (an
editable install).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import atomr
from atomr.cli.base import CliError

__all__ = ["NOT_AVAILABLE", "checkout_roots", "cmd_bench", "find_checkout", "is_checkout"]

HARNESS = "benchmarks"
NOT_AVAILABLE = (
    "the benchmark harness is not available: it is the benchmarks/ directory of a source checkout, "
    "not part of the installed package; clone the atomr repository, pip install -e '.[bench]' "
    "there and run python -m benchmarks (or atomr bench) from its top directory"
)


def checkout_roots() -> list[str]:
    """Where to look for a checkout: the current directory, then the directory
    that holds this ``atomr`` package."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(atomr.__file__)))
    return [os.getcwd(), package_parent]


def is_checkout(root: str) -> bool:
    """``root`` is the top directory of an atomr source checkout with its harness."""
    def has(*parts: str) -> bool:
        return os.path.isfile(os.path.join(root, *parts))

    return (has(HARNESS, "__init__.py") and has(HARNESS, "__main__.py") and has("atomr", "__init__.py")
            and (has("setup.cfg") or has("pyproject.toml")))


def find_checkout() -> str | None:
    return next((r for r in checkout_roots() if is_checkout(r)), None)


def cmd_bench(argv: Sequence[str]) -> int:
    """Run the checkout's ``benchmarks.main(argv)``; CliError when there is none."""
    root = find_checkout()
    if root is None:
        raise CliError(NOT_AVAILABLE)
    if root not in sys.path:
        sys.path.insert(0, root)
    harness = importlib.import_module(HARNESS)
    where = os.path.dirname(os.path.realpath(getattr(harness, "__file__", None) or "."))
    if os.path.normcase(where) != os.path.normcase(os.path.realpath(os.path.join(root, HARNESS))):
        raise CliError(f"{NOT_AVAILABLE} (another {HARNESS!r} package is imported: {where})")
    fn = getattr(harness, "main", None)
    if not callable(fn):
        raise CliError(NOT_AVAILABLE)
    return int(fn(list(argv)) or 0)
