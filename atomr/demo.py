"""The workflow behind ``atomr demo``: an order pipeline with a parallel layer
and a human approval.

    validate ──┬── price ───┐
               ├── reserve ─┼── approve ── fulfil
               └── screen ──┘

``price``, ``reserve`` and ``screen`` form one super-step and run at the same
time. ``approve`` calls ``ctx.interrupt(...)`` for a large order: the run pauses
(durably) and a later ``resume`` carries the person's answer. The same pipeline,
with more comments, is ``examples/order_pipeline.py``; this copy ships inside the
package so that ``python -m atomr demo`` works from any install.

It is importable as ``atomr.demo:workflow``, so once the demo has run::

    atomr show orders <run-id>
    atomr history orders <run-id>
    atomr graph atomr.demo:workflow
"""

from __future__ import annotations

from typing import Any

from atomr.graph.dag import Dag
from atomr.graph.reducers import AppendList, LastWriteWins
from atomr.graph.schema import StateSchema
from atomr.workflow import Workflow

__all__ = ["workflow", "SAMPLE_ORDER", "SPEC", "APPROVAL", "APPROVAL_LIMIT_CENTS", "TAX_PERCENT"]

SPEC = "atomr.demo:workflow"
APPROVAL_LIMIT_CENTS = 50_000  # orders above this need a person to say yes
TAX_PERCENT = 8
APPROVAL = "yes"  # what the demo answers on the person's behalf

SAMPLE_ORDER = {
    "order_id": "A-1001",
    "items": [{"sku": "desk", "qty": 1, "cents": 42_000}, {"sku": "lamp", "qty": 2, "cents": 6_500}],
}


def validate(state: Any, ctx: Any) -> dict[str, Any]:
    items = state["items"]
    if not items:
        raise ValueError(f"order {state['order_id']!r} has no items")
    for item in items:
        if item.get("qty", 0) < 1:
            raise ValueError(f"order {state['order_id']!r}: bad quantity for {item.get('sku')!r}")
    subtotal = sum(item["qty"] * item["cents"] for item in items)
    return {"subtotal": subtotal, "log": [f"validated {len(items)} line(s)"]}


def price(state: Any, ctx: Any) -> dict[str, Any]:
    tax = state["subtotal"] * TAX_PERCENT // 100
    return {"tax": tax, "total": state["subtotal"] + tax, "log": ["priced"]}


def reserve(state: Any, ctx: Any) -> dict[str, Any]:
    # A real system would call the warehouse with ctx.idempotency_key so that a
    # retried attempt does not reserve twice.
    skus = sorted(item["sku"] for item in state["items"])
    return {"reserved": skus, "log": [f"reserved {', '.join(skus)}"]}


def screen(state: Any, ctx: Any) -> dict[str, Any]:
    units = sum(item["qty"] for item in state["items"])
    risk = "high" if units > 10 else "low"
    return {"risk": risk, "log": [f"fraud risk {risk}"]}


def approve(state: Any, ctx: Any) -> dict[str, Any]:
    if state["total"] <= APPROVAL_LIMIT_CENTS and state["risk"] == "low":
        return {"approved": True, "log": ["auto-approved"]}
    answer = ctx.interrupt({
        "question": "approve this order?",
        "order_id": state["order_id"],
        "total_cents": state["total"],
        "risk": state["risk"],
    })
    ok = answer is True or str(answer).strip().lower() in {"yes", "y", "ok", "approve", "approved"}
    return {"approved": ok, "log": [f"{'approved' if ok else 'rejected'} by a person"]}


def fulfil(state: Any, ctx: Any) -> dict[str, Any]:
    if state["approved"]:
        return {"tracking": f"TRK-{state['order_id']}", "log": ["shipped"]}
    return {"reserved": [], "log": ["cancelled, stock released"]}


schema = StateSchema({
    "order_id": (LastWriteWins(), "order"),
    "items": (LastWriteWins(), []),
    "subtotal": (LastWriteWins(), 0),
    "tax": (LastWriteWins(), 0),
    "total": (LastWriteWins(), 0),
    "reserved": (LastWriteWins(), []),
    "risk": LastWriteWins(),
    "approved": LastWriteWins(),
    "tracking": LastWriteWins(),
    "log": (AppendList(), []),
})

dag = (
    Dag.builder("validate")
    .step("validate", validate)
    .step("price", price)
    .step("reserve", reserve)
    .step("screen", screen)
    .step("approve", approve)
    .step("fulfil", fulfil)
    .edge("validate", "price")
    .edge("validate", "reserve")
    .edge("validate", "screen")
    .edge("price", "approve")
    .edge("reserve", "approve")
    .edge("screen", "approve")
    .edge("approve", "fulfil")
    .build()
)

workflow = Workflow("orders", dag, schema)
