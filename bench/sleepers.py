"""Many sleeping workflows in one engine: what each costs (SPEC section 8).

Starts N workflows that each sleep for an hour (``evflow.sleep(3600)``), waits until
every one has recorded its wake time and is waiting on the engine's timer, then reports:
memory per sleeping workflow (tracemalloc: Python allocations; and the RSS delta), how
many tasks and threads exist, how many entries the one timer holds, and the time to get
them all asleep. Then it closes the engine (the sleepers become RESUMABLE) and, on the
file store, reopens it and resumes them all to measure that too. Not a test.

    .venv/bin/python bench/sleepers.py                      # 10,000, memory:// and file, asyncio
    .venv/bin/python bench/sleepers.py -n 2000 --store file --backend trio
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any

import anyio
import sniffio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import discard, mem_mb, tmp_root

import evflow
from evflow.waiting import TimerService

SLEEP_SECONDS = 3600.0


def task_count() -> int:
    """Tasks alive on this event loop (asyncio), or in the trio task tree."""
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        return len(asyncio.all_tasks())
    import trio

    count = 0
    todo: list[Any] = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


async def all_asleep(timers: TimerService, n: int) -> None:
    # The harness polls the timer's statistics: nothing in the engine signals "n asleep".
    while timers.statistics()["timers"] < n:  # noqa: ASYNC110
        await anyio.sleep(0.05)


async def measure(storage: str, n: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with evflow.Engine(storage, durability="relaxed" if storage != "memory://" else "strict") as engine:
        timers = engine.service(TimerService)
        gc.collect()
        tasks_before = task_count()
        rss_before = mem_mb()["rss"]
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        for i in range(n):
            await evflow.sleep(SLEEP_SECONDS).run_async(f"sleeper-{i}")
        await all_asleep(timers, n)
        figures["seconds_to_all_asleep"] = time.perf_counter() - started
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()
        figures["traced_bytes_per_workflow"] = traced / n
        figures["rss_kib_per_workflow"] = (mem_mb()["rss"] - rss_before) * 1024 / n
        figures["tasks"] = task_count()
        figures["tasks_added"] = figures["tasks"] - tasks_before
        figures["threads"] = threading.active_count()
        figures["timer_entries"] = timers.statistics()["timers"]
        statuses = {status for _, status in await engine.list_all()}
        assert statuses == {evflow.WorkflowStatus.RUNNING}, statuses
        started = time.perf_counter()
    figures["seconds_to_close"] = time.perf_counter() - started
    if storage != "memory://":
        started = time.perf_counter()
        async with evflow.Engine(storage, durability="relaxed") as engine:
            resumed = await engine.resume_all()
            await all_asleep(engine.service(TimerService), n)
            figures["seconds_to_reopen_and_resume_all"] = time.perf_counter() - started
            figures["resumed"] = len(resumed)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--workflows", type=int, default=10_000)
    parser.add_argument("--store", choices=["memory", "file", "both"], default="both")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    stores = ["memory", "file"] if args.store == "both" else [args.store]
    for kind in stores:
        if kind == "memory":
            storage = "memory://"
        else:
            os.makedirs(tmp_root(), exist_ok=True)
            storage = tempfile.mkdtemp(prefix="sleepers-", dir=tmp_root())
            discard(storage)
        figures = anyio.run(measure, storage, args.workflows, backend=args.backend)
        print(f"{args.workflows} sleeping workflows, {kind} store, {args.backend}:")
        for key, value in figures.items():
            print(f"  {key:<36} {value:>12,.1f}")


if __name__ == "__main__":
    main()
