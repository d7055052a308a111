"""Order pipeline: a parallel layer and a human approval.

    validate ──┬── price ───┐
               ├── reserve ─┼── approve ── fulfil
               └── screen ──┘

``price``, ``reserve`` and ``screen`` run at the same time (one super-step).
``approve`` asks a person (``ctx.interrupt``) when the order is large or risky:
the run pauses, durably, until someone resumes it with an answer. ``fulfil``
ships an approved order and releases the stock of a rejected one.

    atomr run examples.order_pipeline:workflow --input '{"order_id": "A-1", "items": [{"sku": "desk", "qty": 2, "cents": 45000}]}'
    atomr resume orders <run-id> --resume '"yes"'

or ``python examples/order_pipeline.py`` to do both in one go.
"""

from __future__ import annotations

# The pipeline ships inside the package (``atomr demo`` runs it from any
# install); this example is its annotated entry point.
from atomr.demo import (  # noqa: F401
    APPROVAL_LIMIT_CENTS,
    SAMPLE_ORDER,
    TAX_PERCENT,
    approve,
    dag,
    fulfil,
    price,
    reserve,
    schema,
    screen,
    validate,
    workflow,
)


def main() -> None:
    import tempfile

    from atomr import Command, LmdbStore, Runtime

    with tempfile.TemporaryDirectory() as path, Runtime(store=LmdbStore(path)) as rt:
        rt.register(workflow)
        out = rt.start("orders", SAMPLE_ORDER, run_id="A-1001").result(timeout=30)
        print(f"{out.status}: {[i.payload for i in getattr(out, 'interrupts', [])]}")
        out = rt.resume("orders", "A-1001", Command(resume="yes")).result(timeout=30)
        print(f"{out.status}: {out.state['log']}")  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
