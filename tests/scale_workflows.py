"""Workflows for the scale-out tests (tests/test_scale_out.py, tests/test_chaos.py), imported
by the test and by ``evflow worker --import scale_workflows`` child processes.

Every execution of a ``durable`` step writes a row to the side table ``SCHEMA.side``
(workflow id, step index, the process's ``SCALE_WORKER`` name and pid, start and end
times), where the tests see which process ran what and when, however the process died.
The store's schema comes from ``$SCALE_SCHEMA``; the server from ``$SCALE_DSN``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

import evflow

DSN = os.environ.get(
    "SCALE_DSN", os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
)

#: Served by the workers of the chaos test (its global limit keeps every worker busy).
chaos = evflow.Queue("scale-chaos", concurrency=48)
#: Served by the worker tests.
jobs = evflow.Queue("scale-jobs", concurrency=8)
#: Declared, never served by the worker tests (``--queue`` leaves it alone).
other = evflow.Queue("scale-other")

_pool: Any = None
_pool_lock: anyio.Lock | None = None
_pool_loop: Any = None


async def side_pool() -> Any:
    """This event loop's connection pool to the side table's database (made on first use)."""
    global _pool, _pool_lock, _pool_loop
    import asyncio

    loop = asyncio.get_running_loop()
    if _pool is None or _pool_loop is not loop:
        import asyncpg

        if _pool_lock is None or _pool_loop is not loop:
            _pool_lock = anyio.Lock()
            _pool_loop = loop
            _pool = None
        async with _pool_lock:
            if _pool is None:
                _pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    return _pool


def side_table(schema: str | None = None) -> str:
    schema = schema or os.environ["SCALE_SCHEMA"]
    return f'"{schema}".side'


async def create_side_table(conn: Any, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {side_table(schema)} ("
        " id bigserial PRIMARY KEY, workflow_id text NOT NULL, step int NOT NULL, name text,"
        " worker text NOT NULL, pid int NOT NULL, started float8 NOT NULL, ended float8)"
    )


@evflow.step
async def durable(index: int, total: int, pause: float) -> int:
    """Step ``index`` of a chain: records its execution, waits ``pause``, adds ``index``."""
    pool = await side_pool()
    wid = evflow.get_current_workflow_id()
    row = await pool.fetchval(
        f"INSERT INTO {side_table()} (workflow_id, step, name, worker, pid, started) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        wid,
        index,
        evflow.get_current_step_name(),
        os.environ.get("SCALE_WORKER", "test"),
        os.getpid(),
        time.time(),
    )
    await anyio.sleep(pause)
    await pool.execute(f"UPDATE {side_table()} SET ended = $2 WHERE id = $1", row, time.time())
    return total + index


def chain(steps: int, pause: float) -> evflow.Node:
    """``steps`` durable steps, each taking the running total: the output is sum(1..steps)."""
    node = durable.step(1, 0, pause)
    for i in range(2, steps + 1):
        node = durable.step(i, node, pause)
    return node


@evflow.step
async def long_sleep(seconds: float) -> str:
    """An async step that sleeps (to be cancelled from another engine)."""
    pool = await side_pool()
    wid = evflow.get_current_workflow_id()
    await pool.execute(
        f"INSERT INTO {side_table()} (workflow_id, step, worker, pid, started) VALUES ($1, 0, $2, $3, $4)",
        wid,
        os.environ.get("SCALE_WORKER", "test"),
        os.getpid(),
        time.time(),
    )
    try:
        await anyio.sleep(seconds)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await pool.execute(
                f"UPDATE {side_table()} SET ended = $2 WHERE workflow_id = $1 AND step = 0", wid, -time.time()
            )
        raise
    return "slept"


async def close_side_pool() -> None:
    """Close this loop's pool (tests that ran steps in their own loop)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        await pool.close()


async def _run_one(url: str, workflow_id: str, steps: int, pause: float, interval: float) -> None:
    """Start one chain under this process's engine, print ``started`` and serve on."""
    engine_id = os.environ.get("SCALE_WORKER", "test")
    async with evflow.Engine(url, recover=True, recovery_interval=interval, engine_id=engine_id) as engine:
        await engine.run_async(chain(steps, pause), workflow_id)
        print("started", flush=True)
        await anyio.sleep_forever()


def main(argv: list[str]) -> None:
    """``python -c "import sys, scale_workflows; scale_workflows.main(sys.argv[1:])" URL WID
    STEPS PAUSE INTERVAL`` (imported, so the steps are recorded as ``scale_workflows:...``)."""
    import logging
    import sys

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    url, wid, steps, pause, interval = argv
    anyio.run(_run_one, url, wid, int(steps), float(pause), float(interval), backend="asyncio")
