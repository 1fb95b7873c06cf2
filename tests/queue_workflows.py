"""Queued workflows for tests/test_queues_crash.py, importable by a child process and by
the test: ``python -c "import queue_workflows; queue_workflows.main([STORE, SIDE_EFFECTS])"``
enqueues ``hold`` (0, which never ends) and ``tick`` 1..5 on a concurrency-1 queue,
prints ``ready`` and waits to be killed.
"""

from __future__ import annotations

import sys
import time

import anyio

import evflow

one_at_a_time = evflow.Queue("crash-one-at-a-time", concurrency=1)


@evflow.step
def tick(side_effects: str, index: int, hold: bool) -> int:
    with open(side_effects, "a") as f:
        f.write(f"{index}\n")
    while hold:  # killed here
        time.sleep(1)
    return index


async def _main(store: str, side_effects: str) -> None:
    async with evflow.Engine(store):
        await one_at_a_time.enqueue(tick.step(side_effects, 0, True), workflow_id="q-0")
        for i in range(1, 6):
            await one_at_a_time.enqueue(tick.step(side_effects, i, False), workflow_id=f"q-{i}")
        print("ready", flush=True)
        await anyio.sleep_forever()


def main(argv: list[str]) -> None:
    anyio.run(_main, *argv)


if __name__ == "__main__":
    main(sys.argv[1:])
