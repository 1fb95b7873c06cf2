"""Workflows run by child processes in tests/test_messages.py: a workflow that waits for a
message.

``hold``, which continues as ``after(evflow.wait_for_event("approval"))``; each step is
recorded as ``message_workflows:...`` so that a new process can resume it.

Commands (the store is a file-store directory)::

    run STORE WID      start the workflow; once ``hold`` runs (it never ends in this
                       process), send a message to it and print "sent"; then wait
    resume STORE WID   evflow.resume(WID) (``hold`` now returns), print its output as JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

import evflow

#: Set while ``hold`` may not return (the ``run`` command).
_holding: anyio.Event | None = None
_started: anyio.Event | None = None


@evflow.step(name="after")
def after(message: Any, held: str) -> list[Any]:
    return [held, message]


@evflow.step(name="hold")
async def hold() -> evflow.Node:
    if _started is not None:
        _started.set()
    if _holding is not None:
        await _holding.wait()
    return after.step(evflow.wait_for_event("approval", name="approval"), "held")


def workflow() -> evflow.Node:
    return hold.step()


async def run(store: str, workflow_id: str) -> None:
    global _holding, _started
    _holding, _started = anyio.Event(), anyio.Event()
    async with evflow.Engine(store) as engine:
        await engine.run_async(workflow(), workflow_id)
        await _started.wait()
        await evflow.send(workflow_id, "approval", {"ok": True}, idempotency_key="approve-1")
        print("sent", flush=True)
        await anyio.sleep_forever()


async def resume(store: str, workflow_id: str) -> None:
    async with evflow.Engine(store):
        output = await evflow.resume(workflow_id)
    print(json.dumps({"output": output}), flush=True)


def main(argv: list[str]) -> None:
    command, store, workflow_id = argv
    if command == "run":
        anyio.run(run, store, workflow_id)
    elif command == "resume":
        anyio.run(resume, store, workflow_id)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    import message_workflows

    message_workflows.main(sys.argv[1:])
