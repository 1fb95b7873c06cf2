"""What one strict step costs the PostgreSQL store, without the engine (issue 16 (h)).

    .venv/bin/python bench/pg_store.py [--n 3000] [--rounds 3]
    PYTHONPATH=<a worktree of REF>/src .venv/bin/python bench/pg_store.py    # an older commit

Three loops on the server at ``EVFLOW_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each ``--n`` times a round (figures per operation), in a fresh
schema dropped after:

1. ``select1``: ``SELECT 1`` on one asyncpg connection: the client's cost of a round trip.
2. ``statement``: the store's own append statement (``Sql.append``: the seq claim, two
   event rows, the NOTIFY) on one connection, autocommit, as the group commit sends it for
   a step's ``StepStarted`` + ``StepFinished``; nobody listens.
3. ``store``: the same two events through ``PostgresStore`` (``append_nowait`` of the
   start, ``append`` of the end, with ``run`` committing), as the engine does for a short
   step. Nothing here waits for mail, cancels or other engines' commits, so the store's
   listener never connects: an engine's cost of hearing NOTIFYs is not in this figure.

Each line gives wall time and the process's user and system CPU (``getrusage``) per
operation. The store's figure minus the statement's is what the store adds: its Python
and the event loop's wake-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
import uuid
from collections.abc import Awaitable, Callable

DSN = os.environ.get("EVFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def measure(label: str, n: int, once: Callable[[int], Awaitable[object]]) -> None:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i in range(n):
        await once(i)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user = (r1.ru_utime - r0.ru_utime) / n * 1e6
    system = (r1.ru_stime - r0.ru_stime) / n * 1e6
    print(f"  {label:<10} {wall / n * 1e6:6.0f} us wall   {user:5.0f} user + {system:4.0f} sys us CPU")


async def main(n: int, rounds: int) -> None:
    import anyio
    import asyncpg

    from evflow._codec import encode_event
    from evflow._events import StepFinished, StepStarted, WorkflowStarted
    from evflow.stores.postgres import PostgresStore
    from evflow.stores.postgres._sql import Sql

    schema = "bench_pg_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(DSN)
    store = PostgresStore(DSN, schema=schema)
    await store.open()  # creates the schema
    sql = Sql(f'"{schema}"')
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            first = WorkflowStarted(workflow_id="w", output="o", steps=[], seq=1, time=time.time())
            await store.append("w", [first])
            await conn.fetchval(
                sql.append,
                ["raw"], [1], [1], [""], ["raw"], [1], [0.0], ["WorkflowStarted"], [b"x"], "unheard", [],
            )  # fmt: skip
            seqs = {"w": 2, "raw": 2}

            def events(i: int, seq: int) -> tuple[StepStarted, StepFinished]:
                t = time.time()
                return (
                    StepStarted(name=f"s{i}", attempt=1, seq=seq, time=t),
                    StepFinished(name=f"s{i}", output=b"x" * 40, seq=seq + 1, time=t),
                )

            async def select1(i: int) -> object:
                return await conn.fetchval("SELECT 1")

            async def statement(i: int) -> object:
                seq = seqs["raw"]
                seqs["raw"] = seq + 2
                rows = events(i, seq)
                return await conn.fetchval(
                    sql.append,
                    ["raw"], [seq], [seq + 1], [None],
                    ["raw", "raw"], [seq, seq + 1], [e.time for e in rows],
                    [type(e).__name__ for e in rows], [encode_event(e) for e in rows],
                    "unheard", ['["raw"]'],
                )  # fmt: skip

            async def through_store(i: int) -> object:
                seq = seqs["w"]
                seqs["w"] = seq + 2
                start, end = events(i, seq)
                store.append_nowait("w", [start])
                await store.append("w", [end])
                return None

            for r in range(rounds):
                print(f"round {r + 1}:")
                await measure("select1", n, select1)
                await measure("statement", n, statement)
                await measure("store", n, through_store)
            tg.cancel_scope.cancel()
    finally:
        await store.close()
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="operations per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
