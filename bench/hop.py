"""What one thread round trip costs here: the floor under every sync step (issue 16 (a)).

    .venv/bin/python bench/hop.py            # 5 rounds of 5,000 hops each way

A no-op function is called from the asyncio event loop in a worker thread and awaited,
5,000 times in a row, through evflow's step worker pool (``evflow._threads``, what a sync
step uses) and through ``anyio.to_thread.run_sync``, taking turns. Printed per hop: wall
time, and the process's CPU time (user and kernel, ``getrusage``) that the hop costs, the
median [min-max] of the rounds. A sync step pays this once on top of an async step's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _common import fig  # noqa: E402


def noop() -> int:
    return 1


async def measure(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float, float]:
    """(wall, user, kernel) microseconds per hop over ``n`` hops."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(n):
        await call()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall / n * 1e6, (r1.ru_utime - r0.ru_utime) / n * 1e6, (r1.ru_stime - r0.ru_stime) / n * 1e6


async def main(rounds: int, n: int) -> None:
    import anyio.to_thread

    from evflow._threads import run_in_daemon_thread

    ways: dict[str, Callable[[], Awaitable[Any]]] = {
        "evflow step worker": lambda: run_in_daemon_thread(noop, (), {}, "noop"),
        "anyio.to_thread.run_sync": lambda: anyio.to_thread.run_sync(noop),
    }
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    for call in ways.values():
        await measure(call, 200)  # warm-up: the threads exist
    for _ in range(rounds):
        for name, call in ways.items():
            figures[name].append(await measure(call, n))
    print(f"one loop -> thread -> loop round trip, {n:,} hops x {rounds} rounds, us per hop:")
    for name, runs in figures.items():
        wall, user, kernel = ([r[i] for r in runs] for i in range(3))
        cpu = [u + k for u, k in zip(user, kernel, strict=True)]
        split = f"(user {fig(user)}, kernel {fig(kernel)})"
        print(f"  {name:<26} wall {fig(wall):<20} CPU {fig(cpu):<20} {split}")
    ours, theirs = (statistics.median(r[0] for r in runs) for runs in figures.values())
    print(f"  anyio / evflow, wall: {theirs / ours:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.n))
