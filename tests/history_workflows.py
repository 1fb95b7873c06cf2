"""Step functions for the history tests (fork, diff, check, prune) and docs/history.md.

They live in an importable module (``history_workflows``: the tests put this directory on
``sys.path`` / ``PYTHONPATH``) so that a CLI subprocess can resume and fork them. Whether
``charge`` and ``countdown`` succeed depends on a flag file that a test creates: that is
"fixing the code" without changing it, and no timing is involved.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

import evflow

#: Step names in the order they ran in this process (tests read and clear it).
calls: list[str] = []
#: Gates for ``gated`` by key (in-process tests only).
gates: dict[str, anyio.Event] = {}


@evflow.step(name="fetch")
def fetch(order_id: str) -> dict[str, Any]:
    calls.append("fetch")
    return {"order": order_id, "amount": 1250}


@evflow.step(name="charge", max_retries=0)
def charge(order: Any, fixed_flag: str) -> int:
    calls.append("charge")
    evflow.attach_metadata({"card": "visa"})
    if not os.path.exists(fixed_flag):
        raise ValueError("card declined")
    return int(order["amount"])


@evflow.step(name="receipt")
def receipt(amount: Any) -> str:
    calls.append("receipt")
    return f"paid {amount}"


def checkout(order_id: str, fixed_flag: str) -> evflow.Node:
    """receipt(charge(fetch(order_id))): fails at charge until the flag file exists."""
    return receipt.step(charge.step(fetch.step(order_id), fixed_flag))


@evflow.step(name="countdown", max_retries=0)
def countdown(n: int, fixed_flag: str) -> Any:
    """countdown, countdown_1, ... through continuations; the last one needs the flag."""
    calls.append(f"countdown({n})")
    if n > 0:
        return countdown.step(n - 1, fixed_flag)
    if not os.path.exists(fixed_flag):
        raise ValueError("liftoff failed")
    return "liftoff"


@evflow.step(name="gated")
async def gated(key: str, value: Any) -> Any:
    calls.append(f"gated({key})")
    await gates[key].wait()
    return value


@evflow.virtual_actor
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, by: int) -> int:
        self.n += by
        return self.n
