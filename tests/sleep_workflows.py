"""Workflows run by child processes in tests/test_sleep.py: a workflow that sleeps.

``before`` -> ``evflow.sleep(SECONDS)`` -> ``after``; each step is recorded as
``sleep_workflows:...`` so that a new process can resume it.

Commands (the store is a file-store directory)::

    run STORE WID SECONDS    start the workflow, print its output as JSON at the end
    resume STORE WID         evflow.resume(WID), print its output as JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

import evflow


@evflow.step(name="before")
def before() -> str:
    return "before"


@evflow.step(name="after")
def after(slept: None, first: str) -> list[Any]:
    return [first, slept, "after"]


def workflow(seconds: float) -> evflow.Node:
    first = before.step()
    return after.step(evflow.sleep(seconds, name="nap"), first)


async def run(store: str, workflow_id: str, seconds: float) -> None:
    async with evflow.Engine(store):
        output = await workflow(seconds).run(workflow_id)
    print(json.dumps({"output": output}), flush=True)


async def resume(store: str, workflow_id: str) -> None:
    async with evflow.Engine(store):
        output = await evflow.resume(workflow_id)
    print(json.dumps({"output": output}), flush=True)


def main(argv: list[str]) -> None:
    command, store, workflow_id, *rest = argv
    if command == "run":
        anyio.run(run, store, workflow_id, float(rest[0]))
    elif command == "resume":
        anyio.run(resume, store, workflow_id)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    import sleep_workflows

    sleep_workflows.main(sys.argv[1:])
