"""PostgreSQL and several engines on DBOS Transact: the child processes of bench/scale_out.py,
run with the dbos venv's python. The system database is PostgreSQL (``--db``, a fresh
database that scale_out.py creates and drops), DBOS's production configuration; every
other setting is DBOS's default (a pool of 20 connections per process, LISTEN/NOTIFY).

    python peer_dbos_scale.py seq --db URL --n 500          # (1) one workflow, N steps in a loop
    python peer_dbos_scale.py fanout --db URL --n 1000 --executor fan-2-0
    python peer_dbos_scale.py victim --db URL --k 200 --executor victim
    python peer_dbos_scale.py recoverer --db URL --executor rec
    python peer_dbos_scale.py restart --db URL --executor victim

``fanout``, ``recoverer`` and ``restart`` talk to scale_out.py on stdin/stdout: they print
``READY`` once launched (and warmed up), wait for a line on stdin to start (``fanout``: the
measured batch; ``recoverer``: ``recover EXECUTOR_ID``), print a ``RESULT`` line, and
destroy DBOS at the next line (``exit``). The victim's ``nap`` steps create
``$EVBENCH_KILL_FILE`` once all K are in flight, then hang until SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import time

from _common import emit
from dbos import DBOS, DBOSConfig

SYSTEM = "dbos"
WARMUP = 50

logging.getLogger("dbos").setLevel(logging.WARNING)


class Nap:
    entered = 0


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.step()
async def ainc(x: int) -> int:
    return x + 1


@DBOS.step()
async def nap(x: int) -> int:
    """As evflow_steps.nap: sleep ``$EVBENCH_NAP_SECONDS``; in the victim, hang for good and
    announce the K-th entry in ``$EVBENCH_KILL_FILE``."""
    hang_after = int(os.environ.get("EVBENCH_NAP_HANG_AFTER", "0"))
    if hang_after:
        Nap.entered += 1
        if Nap.entered == hang_after:
            kill_file = os.environ["EVBENCH_KILL_FILE"]
            with open(kill_file + ".tmp", "w") as f:  # noqa: ASYNC230
                f.write(str(os.getpid()))
            os.rename(kill_file + ".tmp", kill_file)
        await asyncio.sleep(10**6)
    await asyncio.sleep(float(os.environ.get("EVBENCH_NAP_SECONDS", "0.5")))
    return x


@DBOS.workflow()
def seq_sync(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@DBOS.workflow()
async def seq_async(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await ainc(x)
    return x


@DBOS.workflow()
async def three(i: int) -> int:
    return await ainc(await ainc(await ainc(i)))


@DBOS.workflow()
async def napper(i: int) -> int:
    return await ainc(await nap(await ainc(i)))


def launch(db: str, executor: str) -> None:
    config: DBOSConfig = {
        "name": "evflow-bench",
        "system_database_url": db,
        "application_version": "bench",
        "log_level": "WARNING",
        "executor_id": executor,
    }
    DBOS(config=config)
    DBOS.launch()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def bench_seq(n: int) -> None:
    seq_sync(20)  # warm-up
    asyncio.run(seq_async(20))
    for flavour in ("sync", "async"):
        c0, t0 = cpu_seconds(), time.perf_counter()
        value = seq_sync(n) if flavour == "sync" else asyncio.run(seq_async(n))
        seconds = time.perf_counter() - t0
        assert value == n, value
        cpu_us = (cpu_seconds() - c0) / n * 1e6
        emit(SYSTEM, f"s.seq.{flavour}", [n / seconds], "steps/s", higher_is_better=True, cpu_us=cpu_us)


async def fanout(n: int) -> dict[str, float]:
    async def batch(first: int, count: int) -> None:
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(three, i) for i in range(first, first + count))
        )
        results = await asyncio.gather(*(h.get_result() for h in handles))
        assert results == [i + 3 for i in range(first, first + count)]

    await batch(10**9, WARMUP)
    say("READY")
    await asyncio.to_thread(sys.stdin.readline)
    c0, t_go = cpu_seconds(), time.time()
    await batch(0, n)
    t_end = time.time()
    return {"t_go": t_go, "t_end": t_end, "cpu_s": cpu_seconds() - c0, "n": n}


async def bench_b(sizes: list[int]) -> None:
    """(b) on one executor: 3-step workflows started by one gather, and one after the
    other (each start awaited, then each result), as scale_out.py's evflow child does."""

    async def gathered(first: int, n: int) -> None:
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(three, i) for i in range(first, first + n))
        )
        assert await asyncio.gather(*(h.get_result() for h in handles)) == [
            i + 3 for i in range(first, first + n)
        ]

    async def serial(first: int, n: int) -> None:
        handles = [await DBOS.start_workflow_async(three, i) for i in range(first, first + n)]
        assert [await h.get_result() for h in handles] == [i + 3 for i in range(first, first + n)]

    first = 0
    for pattern, fn in (("gathered", gathered), ("serial", serial)):
        await fn(10**9 + first, WARMUP)
        for n in sizes:
            t0 = time.perf_counter()
            await fn(first, n)
            emit(
                SYSTEM,
                f"s.b.{n}.{pattern}",
                [n / (time.perf_counter() - t0)],
                "workflows/s",
                higher_is_better=True,
            )
            first += n


async def victim(k: int) -> None:
    await asyncio.gather(*(DBOS.start_workflow_async(napper, i) for i in range(k)))
    await asyncio.sleep(10**6)  # until SIGKILL


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["seq", "b", "fanout", "victim", "recoverer", "restart"])
    parser.add_argument("--db", required=True, help="the system database (PostgreSQL URL)")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--sizes", default="200,2000", help="(b) workflow counts")
    args = parser.parse_args()
    launch(args.db, args.executor)
    try:
        if args.mode == "seq":
            bench_seq(args.n)
        elif args.mode == "b":
            asyncio.run(bench_b([int(n) for n in args.sizes.split(",")]))
        elif args.mode == "fanout":
            out = asyncio.run(fanout(args.n))
            seconds = out["t_end"] - out["t_go"]
            emit(SYSTEM, "s.fanout.one", [args.n / seconds], "workflows/s", higher_is_better=True, **out)
            sys.stdin.readline()
        elif args.mode == "victim":
            asyncio.run(victim(args.k))
        elif args.mode == "recoverer":
            # Already launched (its own executor id) before the victim dies, as a live
            # executor of the application is; told to recover the dead one's workflows.
            say("READY")
            words = sys.stdin.readline().split()
            assert words[0] == "recover", words
            t0 = time.time()
            handles = DBOS._recover_pending_workflows(words[1:])
            t1 = time.time()
            say(f"CALLED {t0!r} {t1!r} {len(handles)}")
            sys.stdin.readline()
        else:  # restart: launch() itself recovers this executor id's PENDING workflows
            say(f"READY {time.time()!r}")
            sys.stdin.readline()
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
