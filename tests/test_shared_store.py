"""Several engines on one shared store: what one runs, the others see, wait for, resume
or cancel, and never run twice.

Runs against an in-memory store flagged ``shared`` (both backends) and against
PostgreSQL (asyncio; skipped with the reason when no server can be reached).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

import evflow
from evflow.stores import MemoryStore, Store

pytestmark = pytest.mark.anyio

DSN = os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

gates: dict[str, anyio.Event] = {}
executions: list[str] = []


@evflow.step
async def gated(key: str) -> str:
    executions.append(key)
    await gates[key].wait()
    return f"passed {key}"


@evflow.step
def plus(a: int, b: int) -> int:
    return a + b


class SharedMemoryStore(MemoryStore):
    """One in-memory store used by several engines at once, as a database would be."""

    shared = True


StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "postgres"])
async def stores(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[StoreFactory]:
    if request.param == "memory":
        shared = SharedMemoryStore()
        yield lambda: shared
        return
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


async def wait_status(engine: evflow.Engine, wid: str, status: str) -> None:
    with anyio.fail_after(20):
        while await engine.get_status(wid) != status:
            await anyio.sleep(0.02)


async def test_another_engine_sees_waits_for_and_lists_a_running_workflow(stores: StoreFactory) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    async with evflow.Engine(stores()) as a, evflow.Engine(stores()) as b:
        handle = await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")
        assert ("wf", "RUNNING") in await b.list_all()
        assert (await b.get_metadata("wf"))["status"] == "RUNNING"
        gates[key].set()
        with anyio.fail_after(20):
            assert await b.get_output("wf") == f"passed {key}"
        assert await handle == f"passed {key}"
        assert await b.get_metadata("wf") == await a.get_metadata("wf")
        # idempotent across engines: the id exists, so b never starts it again
        assert await b.run(plus.step(1, 1), "wf") == f"passed {key}"
    assert executions.count(key) == 1


async def test_a_workflow_left_by_a_closed_engine_is_resumed_by_another(stores: StoreFactory) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    async with evflow.Engine(stores()) as b:
        async with evflow.Engine(stores()) as a:
            await a.run_async(gated.step(key), "wf")
            await wait_status(b, "wf", "RUNNING")
            first_start = (await b.get_metadata("wf"))["stats"]["start_time"]
        assert await b.get_status("wf") == "RESUMABLE"
        with pytest.raises(evflow.WorkflowNotRunningError):
            await b.get_output("wf")
        gates[key].set()
        assert await b.resume("wf") == f"passed {key}"
        meta = await b.get_metadata("wf")
        assert meta["status"] == "SUCCESSFUL"
        assert meta["stats"]["start_time"] > first_start


async def test_two_engines_resuming_at_once_run_it_once(stores: StoreFactory) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    async with evflow.Engine(stores()) as a:
        await a.run_async(gated.step(key), "wf")
        await wait_status(a, "wf", "RUNNING")
    executions.clear()
    async with evflow.Engine(stores()) as b, evflow.Engine(stores()) as c:
        handles: list[Any] = []

        async def resume(engine: evflow.Engine) -> None:
            handles.append(await engine.resume_async("wf"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(resume, b)
            tg.start_soon(resume, c)
        gates[key].set()
        with anyio.fail_after(20):
            results = [await h for h in handles]
        assert results == [f"passed {key}"] * 2
    assert executions == [key]


async def test_cancel_from_another_engine(stores: StoreFactory) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    async with evflow.Engine(stores()) as a, evflow.Engine(stores()) as b:
        handle = await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")
        await b.cancel("wf")
        assert await b.get_status("wf") == "CANCELED"
        # the running engine lets go at its next append, which the store refuses
        gates[key].set()
        with anyio.fail_after(20), pytest.raises(evflow.WorkflowCancellationError):
            await handle
        assert await a.get_status("wf") == "CANCELED"


async def test_delete_refuses_a_workflow_another_engine_runs(stores: StoreFactory) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    async with evflow.Engine(stores()) as a, evflow.Engine(stores()) as b:
        await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")
        with pytest.raises(evflow.WorkflowRunningError, match="wf"):
            await b.delete("wf")
        gates[key].set()
        await wait_status(b, "wf", "SUCCESSFUL")
        await b.delete("wf")
        with pytest.raises(evflow.WorkflowNotFoundError):
            await a.get_status("wf")
