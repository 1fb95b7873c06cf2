"""(i) waits on DBOS Transact: one measurement per process, run by bench/waits.py with the
dbos venv's python.

    python peer_dbos_waits.py --db sqlite --pattern seq --n 200
    python peer_dbos_waits.py --db postgres --pattern gather --n 500 [--dsn postgresql://...]

The workflow of waits.py: ``first``, ``DBOS.sleep_async(0)``, ``second``,
``DBOS.recv_async("go")``, ``third``; the client starts it (``start_workflow_async``),
sends it ``1`` on ``"go"`` (``send_async``) and awaits ``get_result``. The system database
is a fresh SQLite file, or a fresh database on the server of ``--dsn`` (dropped after).
Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from _common import emit, tmp_root
from dbos import DBOS, DBOSConfig

WARMUP = 20

logging.getLogger("dbos").setLevel(logging.WARNING)


@DBOS.step()
async def first(i: int) -> int:
    return i + 1


@DBOS.step()
async def second(x: int) -> int:
    return x + 1


@DBOS.step()
async def third(message: int, x: int) -> int:
    return x + message


@DBOS.workflow()
async def flow(i: int) -> int:
    x = await first(i)
    await DBOS.sleep_async(0)
    x = await second(x)
    message = await DBOS.recv_async("go", timeout_seconds=60)
    return await third(message, x)


async def measure(pattern: str, n: int) -> float:
    async def client(i: int) -> None:
        handle = await DBOS.start_workflow_async(flow, i)
        await DBOS.send_async(handle.get_workflow_id(), 1, "go")
        assert await handle.get_result() == i + 3

    async def batch(start: int, count: int) -> float:
        t0 = time.perf_counter()
        if pattern == "seq":
            for i in range(start, start + count):
                await client(i)
        else:
            await asyncio.gather(*(client(i) for i in range(start, start + count)))
        return time.perf_counter() - t0

    await batch(10**9, WARMUP)
    return await batch(0, n)


def admin(dsn: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--pattern", choices=["seq", "gather"], required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    directory = database = None
    if args.db == "sqlite":
        os.makedirs(tmp_root(), exist_ok=True)
        directory = tempfile.mkdtemp(prefix="dbos-w-", dir=tmp_root())
        url = f"sqlite:///{os.path.join(directory, 'dbos.sqlite')}"
    else:
        database = f"dbos_bench_{uuid.uuid4().hex[:12]}"
        admin(args.dsn, f'CREATE DATABASE "{database}"')
        parts = urlsplit(args.dsn)
        url = urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))
    try:
        config: DBOSConfig = {
            "name": "evflow-bench",
            "system_database_url": url,
            "run_admin_server": False,
            "application_version": "bench",
            "log_level": "WARNING",
            "executor_id": "local",
        }
        DBOS(config=config)
        DBOS.launch()
        try:
            seconds = asyncio.run(measure(args.pattern, args.n))
        finally:
            DBOS.destroy()
    finally:
        if database is not None:
            admin(args.dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    key = f"i.waits.{args.pattern}.{args.db}"
    emit("dbos", key, [args.n / seconds], "workflows/s", higher_is_better=True, n=args.n, seconds=seconds)


if __name__ == "__main__":
    main()
