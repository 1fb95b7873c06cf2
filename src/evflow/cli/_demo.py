"""``evflow demo``: a small real workflow, run on the store, and its metadata.

The DAG: ``load_orders`` feeds ``subtotal`` and ``tax`` (the same node used twice runs
once), ``countdown`` continues itself (a continuation: ``countdown``, ``countdown_1``,
``countdown_2``), and ``report`` joins them. Steps carry user metadata from their options
and from ``attach_metadata``; the workflow carries its own. The steps live in this
importable module, so ``evflow resume`` can resume a demo run interrupted in another process.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from .. import _api
from .._projection import replay
from .._step import Node, step
from ..engine import Engine
from ._commands import print_step_table, print_workflow, value_text
from ._format import fmt_json, out, quote_id
from ._options import Options

__all__ = ["cmd_demo", "demo_dag"]


@step(name="load_orders", metadata={"stage": "extract"})
def load_orders(count: int) -> list[dict[str, Any]]:
    orders = [{"id": i, "amount": 10.0 * i} for i in range(1, count + 1)]
    _api.attach_metadata({"orders": len(orders)})
    return orders


@step(name="subtotal", metadata={"stage": "transform"})
def subtotal(orders: Any) -> float:
    return float(sum(order["amount"] for order in orders))


@step(name="tax", metadata={"stage": "transform", "rate": 0.2})
async def tax(orders: Any, rate: float) -> float:
    return round(float(sum(order["amount"] for order in orders)) * rate, 2)


@step(name="countdown", metadata={"stage": "continuation"})
async def countdown(n: int) -> int | Node:
    _api.attach_metadata({"remaining": n})
    if n == 0:
        return 0
    return countdown.step(n - 1)


@step(name="report", metadata={"stage": "load"})
def report(subtotal: Any, tax: Any, countdown: Any) -> dict[str, Any]:
    return {"subtotal": subtotal, "tax": tax, "total": subtotal + tax, "countdown": countdown}


def demo_dag() -> Node:
    """The demo's DAG (a fresh node each call).

    The steps that take nodes annotate those parameters ``Any``: ``StepFunction.step`` is
    typed with the function's own parameters, which a node does not match.
    """
    orders = load_orders.step(4)
    return report.step(subtotal.step(orders), tax.step(orders, 0.2), countdown.step(2))


async def cmd_demo(opts: Options, args: argparse.Namespace) -> int:
    workflow_id = f"demo-{uuid.uuid4().hex[:8]}"
    async with Engine(opts.storage) as engine:
        output = await engine.run(demo_dag(), workflow_id, metadata={"purpose": "evflow demo"})
        metadata = await engine.get_metadata(workflow_id)
        # The same projection, folded from the log: the step names and the table below.
        state = replay(await engine.store.read(workflow_id))
        steps = {name: await engine.get_metadata(workflow_id, name) for name in state.steps}
        url = engine.store.url
    if opts.json:
        out(fmt_json({"workflow": metadata, "steps": steps, "output": output}))
        return 0
    wid = quote_id(workflow_id)
    out(f"ran workflow {wid} on {url}")
    out(f"output: {value_text(output, as_json=True)}")
    out()
    print_workflow(state, metadata)
    print_step_table(state)
    out()
    out(f"evflow.get_metadata({workflow_id!r}):")
    out(fmt_json(metadata, indent=2))
    out(f"evflow.get_metadata({workflow_id!r}, {state.output!r}):")
    out(fmt_json(steps[state.output or ""], indent=2))
    out()
    out(f"next: evflow show {wid}; evflow events {wid}; evflow show {wid} --step countdown_1")
    return 0
