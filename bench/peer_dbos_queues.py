"""(i) queues on DBOS Transact: one measurement per process, run by bench/queues.py with the
dbos venv's python.

    python peer_dbos_queues.py --kind queue --n 10000 [--poll 1.0] [--dsn postgresql://...]
    python peer_dbos_queues.py --kind plain --n 10000

A 1-step async workflow. ``queue``: ``DBOS.register_queue("q", global_concurrency=50)``
(DBOS 3.x declares queues in the system database; ``concurrency=`` is its deprecated
name for the same limit), ``enqueue_async`` of all N at once (``asyncio.gather``), then
``asyncio.gather`` of the results. ``plain``: the same with ``DBOS.start_workflow_async``.
``--poll`` is the queue's ``polling_interval_sec`` (DBOS's default 1.0 s): DBOS's queue
worker thread looks for work that often, and starts at most the free concurrency each time.

The system database is PostgreSQL: a fresh database on the same server as evflow's store
(``--dsn`` names the server; the database in it is only used to create and drop ours),
created before and dropped after the measurement. Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from _common import emit
from dbos import DBOS, DBOSConfig

SYSTEM = "dbos"
CONCURRENCY = 50
WARMUP = 50

logging.getLogger("dbos").setLevel(logging.WARNING)


@DBOS.step()
async def ainc(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def one(i: int) -> int:
    return await ainc(i)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def admin(dsn: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


async def measure(kind: str, n: int, poll: float) -> tuple[float, float]:
    """(seconds for all n, seconds until the last enqueue/start returned)."""
    queue = None
    if kind == "queue":
        queue = await DBOS.register_queue_async(
            "q", global_concurrency=CONCURRENCY, polling_interval_sec=poll
        )

    async def start(i: int):  # type: ignore[no-untyped-def]
        if queue is not None:
            return await queue.enqueue_async(one, i)
        return await DBOS.start_workflow_async(one, i)

    async def batch(first: int, count: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*(start(i) for i in range(first, first + count)))
        t_started = time.perf_counter()
        results = await asyncio.gather(*(h.get_result() for h in handles))
        elapsed = time.perf_counter() - t0
        assert results == [i + 1 for i in range(first, first + count)]
        return elapsed, t_started - t0

    await batch(10**9, WARMUP)  # warm-up (also lets the queue's worker thread start)
    return await batch(0, n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["queue", "plain"], required=True)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    database = f"dbos_bench_{uuid.uuid4().hex[:12]}"
    admin(args.dsn, f'CREATE DATABASE "{database}"')
    try:
        config: DBOSConfig = {
            "name": "evflow-bench",
            "system_database_url": with_database(args.dsn, database),
            "run_admin_server": False,
            "application_version": "bench",
            "log_level": "WARNING",
            "executor_id": "local",
        }
        DBOS(config=config)
        DBOS.launch()
        try:
            seconds, started = asyncio.run(measure(args.kind, args.n, args.poll))
        finally:
            DBOS.destroy()
    finally:
        admin(args.dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    key = f"i.{args.kind}.postgres" + (f".poll{args.poll:g}" if args.kind == "queue" else "")
    emit(
        SYSTEM,
        key,
        [args.n / seconds],
        "workflows/s",
        higher_is_better=True,
        seconds=seconds,
        started_s=started,
        n=args.n,
        poll=args.poll if args.kind == "queue" else None,
    )


if __name__ == "__main__":
    main()
