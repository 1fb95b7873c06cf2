"""A fresh PostgreSQL schema for one test, as a factory of stores on it.

The server is the one CI and this machine run on 127.0.0.1:5432 (``EVFLOW_TEST_POSTGRES``
overrides it). Where PostgreSQL cannot be used (trio: asyncpg runs on asyncio only; no
server) the test is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

import evflow
from evflow.stores import Store

DSN = os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def postgres_stores(anyio_backend: str) -> AsyncIterator[Callable[[], Store]]:
    """Yield a factory of ``PostgresStore``s on a new schema; drop the schema after."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncpg runs on asyncio only")
    asyncpg = pytest.importorskip("asyncpg")
    try:
        conn = await asyncpg.connect(DSN, timeout=5)
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {DSN}: {exc}")
    schema = f"evflow_test_{uuid.uuid4().hex[:12]}"
    try:
        yield lambda: evflow.stores.PostgresStore(DSN, schema=schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
