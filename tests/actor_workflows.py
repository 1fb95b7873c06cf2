"""An actor run by child processes in tests/test_actors.py (the SIGKILL test).

The class lives in this importable module, so a new process can resume the actor that
another process created: it is recorded as ``actor_workflows:Ledger``.

``Ledger.add_all(entries)`` appends one entry per step, chaining itself for the rest
(``link``, ``link_1``, ...). The step appending ``BLOCKING_ENTRY`` creates the file
``MARK`` and then waits while the file ``GATE`` exists, so the test can kill the child
in the middle of the chain, after earlier links recorded their state.

Command::

    run STORE GATE MARK     create the actor, call ``add("first")``, submit
                            ``add_all(["a", "b", "c", "d"])`` and ``add("queued")``,
                            print "ready" once the chain waits at "c", wait to be killed
"""

# Type checkers do not see what @evflow.virtual_actor adds to a class.
# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import evflow

ACTOR_ID = "ledger"
BLOCKING_ENTRY = "c"

#: Set by main() in the child, by the test in its own process.
GATE = ""
MARK = ""


@evflow.virtual_actor
class Ledger:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.entries: list[str] = []

    def add(self, entry: str) -> list[str]:
        self.entries.append(entry)
        return list(self.entries)

    def add_all(self, entries: list[str]) -> Any:
        entry = entries[0]
        if entry == BLOCKING_ENTRY and GATE:
            Path(MARK).touch()
            while os.path.exists(GATE):
                time.sleep(0.01)
        self.entries.append(entry)
        if len(entries) > 1:
            return self.add_all.options(name="link").step(entries[1:])
        return list(self.entries)

    @evflow.virtual_actor.readonly
    def read(self) -> list[str]:
        return list(self.entries)


async def run(store: str) -> None:
    async with evflow.Engine(store):
        ledger = await Ledger.get_or_create(ACTOR_ID, "ann")
        await ledger.add.options(name="add").run("first")
        await ledger.add_all.options(name="link").run_async(["a", "b", "c", "d"])
        await ledger.add.options(name="add").run_async("queued")
        while not await anyio.Path(MARK).exists():
            await anyio.sleep(0.01)
        print("ready", flush=True)
        await anyio.sleep_forever()


def main(argv: list[str]) -> None:
    global GATE, MARK
    command, store, GATE, MARK = argv
    if command != "run":
        sys.exit(f"unknown command {command!r}")
    anyio.run(run, store)
