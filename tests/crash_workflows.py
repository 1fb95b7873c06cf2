"""Workflows run by child processes in tests/test_crash.py (``python -m crash_workflows``).

The steps live in this importable module, so a new process can resume a workflow that
another process started: they are recorded as ``crash_workflows:link`` and
``crash_workflows:hop``.

The chain has ``LINKS`` static steps (``link00`` ... each fed the previous one's value)
followed by a continuation chain (``hop``, ``hop_1``, ...: each ``hop`` returns the next),
``STEPS`` steps in all. Every execution of a step first appends ``"<index> <time>"`` to a
side-effect file, then sleeps a little, so the test can tell which step ran when.

Commands (the store is a file-store directory)::

    run STORE SIDE_EFFECTS WID [DURABILITY]
                                    start the chain (or resume it if WID exists) to the end
    resume STORE SIDE_EFFECTS WID [DURABILITY]
                                    evflow.resume(WID) to the end
    hold STORE                      open an engine, print "ready", wait until killed
    try-open STORE                  try to open an engine; print the outcome as JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Literal, TypeAlias

import anyio

import evflow

Durability: TypeAlias = Literal["strict", "relaxed"]

LINKS = 12
STEPS = 30
STEP_SLEEP = 0.03

#: Set by main() for the steps of this process (steps run in the same process).
SIDE_EFFECTS = ""


def record_run(index: int) -> None:
    with open(SIDE_EFFECTS, "a") as f:
        f.write(f"{index} {time.time()!r}\n")


@evflow.step
def link(previous: list[int], index: int) -> list[int]:
    record_run(index)
    time.sleep(STEP_SLEEP)
    return [*previous, index]


@evflow.step
async def hop(previous: list[int], index: int) -> Any:
    record_run(index)
    await anyio.sleep(STEP_SLEEP)
    done = [*previous, index]
    if index + 1 == STEPS:
        return done
    return hop.step(done, index + 1)


def chain() -> evflow.Node:
    node: Any = []
    for index in range(LINKS):
        node = link.options(name=f"link{index:02d}").step(node, index)
    return hop.step(node, LINKS)


def expected_step_names() -> set[str]:
    hops = [hop.name] + [f"{hop.name}_{k}" for k in range(1, STEPS - LINKS)]
    return {f"link{index:02d}" for index in range(LINKS)} | set(hops)


async def run(store: str, workflow_id: str, durability: Durability) -> None:
    async with evflow.Engine(store, durability=durability):
        output = await chain().run(workflow_id)
    print(json.dumps({"output": output}), flush=True)


async def resume(store: str, workflow_id: str, durability: Durability) -> None:
    async with evflow.Engine(store, durability=durability):
        output = await evflow.resume(workflow_id)
    print(json.dumps({"output": output}), flush=True)


async def hold(store: str) -> None:
    async with evflow.Engine(store):
        print("ready", flush=True)
        await anyio.sleep_forever()


async def try_open(store: str) -> None:
    try:
        async with evflow.Engine(store):
            outcome: dict[str, Any] = {"opened": True, "pid": os.getpid()}
    except evflow.StoreLockedError as exc:
        outcome = {"opened": False, "error": type(exc).__name__, "holder": exc.pid, "message": str(exc)}
    print(json.dumps(outcome), flush=True)


def main(argv: list[str]) -> None:
    global SIDE_EFFECTS
    command, store, *rest = argv
    if command in ("run", "resume"):
        SIDE_EFFECTS, workflow_id = rest[:2]
        durability: Durability = "relaxed" if rest[2:] == ["relaxed"] else "strict"
        anyio.run(run if command == "run" else resume, store, workflow_id, durability)
    elif command == "hold":
        anyio.run(hold, store)
    elif command == "try-open":
        anyio.run(try_open, store)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    # Run the steps from the module proper, so that they are recorded as
    # ``crash_workflows:...`` and not as ``__main__:...``.
    import crash_workflows

    crash_workflows.main(sys.argv[1:])
