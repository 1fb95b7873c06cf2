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


# -- a child process for the crash test of prune ------------------------------------------------


async def _populate(store: str, count: int) -> None:
    async with evflow.Engine(store):
        for i in range(count):
            await fetch.step(f"order-{i}").run(f"w{i}")


async def _prune_and_die(store: str, kill_at: int, mode: str) -> None:
    """Prune every workflow, SIGKILLing this process during the ``kill_at``-th deletion's
    write: before its log is unlinked (its deletion is in the journal) or right after."""
    import signal

    from evflow.stores.file._writer import Writer

    deleting = Writer._delete_log
    seen = 0

    def delete_log(self: Writer, workflow_id: str) -> None:
        nonlocal seen
        seen += 1
        if seen == kill_at and mode == "before-unlink":
            os.kill(os.getpid(), signal.SIGKILL)
        deleting(self, workflow_id)
        if seen == kill_at and mode == "after-unlink":
            os.kill(os.getpid(), signal.SIGKILL)

    async with evflow.Engine(store) as engine:
        Writer._delete_log = delete_log  # type: ignore[method-assign]
        await engine.prune(0)
    raise SystemExit("prune finished: the kill point was never reached")


def main(argv: list[str]) -> None:
    if argv[0] == "populate":
        anyio.run(_populate, argv[1], int(argv[2]))
    elif argv[0] == "prune":
        anyio.run(_prune_and_die, argv[1], int(argv[2]), argv[3])


@evflow.step(name="announce")
def announce(order_id: str) -> str:
    evflow.set_event("progress", {"order": order_id, "stage": "announced"})
    return order_id
