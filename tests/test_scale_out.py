"""SPEC section 10: several engines on one PostgreSQL store. ``recover=True``, takeover of a
dead (SIGKILL) or paused (SIGSTOP) worker's workflows, fencing, ``evflow worker``, one
execution for a new id run from two engines, a cancel from another engine, ``engine_id``.

Where the behaviour is about processes the engines are real ``evflow worker`` processes
(tests/scale_harness.py); the rest are engines in this process sharing the store.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow.stores import Store

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
import scale_workflows  # noqa: E402
from pg_schema import postgres_stores  # noqa: E402
from scale_harness import Cluster, durable_finish_reruns, new_cluster, side_rows, sql  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg, and the side table's pool, run on asyncio only


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with new_cluster(tmp_path) as made:
        yield made


@pytest.fixture
async def pg(anyio_backend: str) -> AsyncIterator[Callable[[], Store]]:
    async for factory in postgres_stores(anyio_backend):
        store = factory()
        assert isinstance(store, evflow.stores.PostgresStore)
        import asyncpg

        conn = await asyncpg.connect(scale_workflows.DSN)
        try:
            await scale_workflows.create_side_table(conn, store.schema)
        finally:
            await conn.close()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SCALE_SCHEMA", store.schema)
            try:
                yield factory
            finally:
                await scale_workflows.close_side_pool()


async def wait_for(predicate: Callable[[], Any], what: str) -> None:
    with anyio.fail_after(60):
        while not await predicate():
            await anyio.sleep(0.02)


def event_types(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- options and metadata -----------------------------------------------------------------------


def test_engine_options_are_checked() -> None:
    with pytest.raises(ValueError, match="engine_id"):
        evflow.Engine("memory://", engine_id="")
    with pytest.raises(TypeError, match="engine_id"):
        evflow.Engine("memory://", engine_id=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recovery_interval"):
        evflow.Engine("memory://", recovery_interval=0)
    with pytest.raises(TypeError, match="recover"):
        evflow.Engine("memory://", recover="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="queues"):
        evflow.Engine("memory://", queues=["scale-jobs"])  # type: ignore[list-item]
    assert evflow.Engine("memory://", engine_id="alpha").engine_id == "alpha"
    generated = evflow.Engine("memory://").engine_id
    assert generated != evflow.Engine("memory://").engine_id


@evflow.step
async def gate(event_key: str) -> str:
    await gates[event_key].wait()
    return "open"


gates: dict[str, anyio.Event] = {}


async def test_metadata_names_the_engine_that_runs_it_on_memory() -> None:
    gates["m"] = anyio.Event()
    async with evflow.Engine("memory://", engine_id="alpha") as engine:
        handle = await engine.run_async(gate.step("m"), "wf")
        assert (await engine.get_metadata("wf"))["engine_id"] == "alpha"
        gates["m"].set()
        assert await handle == "open"
        assert "engine_id" not in await engine.get_metadata("wf")


async def test_metadata_names_the_engine_that_runs_it_from_another_engine(pg: Callable[[], Store]) -> None:
    gates["p"] = anyio.Event()
    async with evflow.Engine(pg(), engine_id="alpha") as a, evflow.Engine(pg(), engine_id="beta") as b:
        handle = await a.run_async(gate.step("p"), "wf")
        assert (await b.get_metadata("wf"))["engine_id"] == "alpha"
        gates["p"].set()
        assert await handle == "open"
        assert "engine_id" not in await b.get_metadata("wf")
    async with evflow.Engine(pg(), engine_id="gamma") as c:
        assert "engine_id" not in await c.get_metadata("wf")


# -- recover=True on a single-writer store ---------------------------------------------------------


@evflow.step
def blocked_until(flag: str) -> str:
    while not Path(flag).exists():
        time.sleep(0.01)
    return "done"


@evflow.step
def boom() -> None:
    raise RuntimeError("boom")


async def test_recover_resumes_resumable_workflows_on_open_never_canceled_or_failed(tmp_path: Path) -> None:
    store, flag = tmp_path / "store", tmp_path / "flag"
    async with evflow.Engine(store) as engine:
        for wid in ("left-1", "left-2", "canceled"):
            await engine.run_async(blocked_until.step(str(flag)), wid)
        with pytest.raises(evflow.WorkflowExecutionError):
            await engine.run(boom.step(), "failed")
        await engine.cancel("canceled")
        await wait_status(engine, "left-1", "RUNNING")
        flag_later = flag  # the steps run in threads: let them end once the engine is closed
    flag_later.touch()
    async with evflow.Engine(store) as engine:  # recover=False: section 3 exactly
        assert await engine.get_status("left-1") == "RESUMABLE"
    async with evflow.Engine(store, recover=True) as engine:
        with anyio.fail_after(60):
            assert await engine.get_output("left-1") == "done"
            assert await engine.get_output("left-2") == "done"
        assert await engine.get_status("canceled") == "CANCELED"
        assert await engine.get_status("failed") == "FAILED"


async def wait_status(engine: evflow.Engine, wid: str, status: str) -> None:
    async def check() -> bool:
        return await engine.get_status(wid) == status

    await wait_for(check, f"{wid} {status}")


# -- two engines in this process on one PostgreSQL store ----------------------------------------------


async def test_run_of_one_new_id_from_two_engines_at_once_runs_it_once(pg: Callable[[], Store]) -> None:
    async with evflow.Engine(pg()) as a, evflow.Engine(pg()) as b:
        for i in range(8):
            wid = f"same-{i}"
            results: dict[str, Any] = {}

            async def run(
                engine: evflow.Engine, who: str, wid: str = wid, results: dict[str, Any] = results
            ) -> None:
                results[who] = await engine.run(scale_workflows.chain(2, 0.01), wid)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, a, "a")
                    tg.start_soon(run, b, "b")
            assert results == {"a": 3, "b": 3}
            rows = [r for r in await anyio.to_thread.run_sync(side_rows_of, pg) if r[0] == wid]
            assert sorted(r[1] for r in rows) == [1, 2]  # each step ran once, on one engine
            assert event_types(await a.store.read(wid)).count("WorkflowStarted") == 1


def side_rows_of(pg: Callable[[], Store]) -> list[Any]:
    store = pg()
    assert isinstance(store, evflow.stores.PostgresStore)
    table = scale_workflows.side_table(store.schema)
    return sql(f"SELECT workflow_id, step, worker, pid, started, ended, name FROM {table}")


async def test_cancel_from_another_engine_stops_the_running_step_at_once(pg: Callable[[], Store]) -> None:
    """The step sleeps for ten minutes and appends nothing meanwhile: only the owner's own
    cancel scope can stop it, once the canceling engine has asked it to."""
    async with evflow.Engine(pg(), engine_id="runner") as a, evflow.Engine(pg(), engine_id="canceler") as b:
        handle = await a.run_async(scale_workflows.long_sleep.step(600), "sleeper")

        async def started() -> bool:
            return bool(await anyio.to_thread.run_sync(side_rows_of, pg))

        await wait_for(started, "the step started")
        asked = time.monotonic()
        with anyio.fail_after(30):
            await b.cancel("sleeper")
        took = time.monotonic() - asked
        with anyio.fail_after(30), pytest.raises(evflow.WorkflowCancellationError):
            await handle
        rows = await anyio.to_thread.run_sync(side_rows_of, pg)
        assert len(rows) == 1 and rows[0][5] is not None and rows[0][5] < 0  # the sleep was cancelled
        assert await a.get_status("sleeper") == "CANCELED"
        assert await b.get_status("sleeper") == "CANCELED"
        events = await b.store.read("sleeper")
        assert event_types(events)[-1] == "WorkflowCanceled"
        print(
            f"cancel from another engine: the step stopped and CANCELED was recorded in {took * 1000:.0f} ms"
        )


async def test_recovery_claims_each_workflow_once_when_engines_start_together(
    pg: Callable[[], Store],
) -> None:
    """Every engine restarting at once: each RESUMABLE workflow is taken over by exactly one."""
    n = 40
    async with evflow.Engine(pg(), engine_id="gone") as gone:
        for i in range(n):
            await gone.run_async(scale_workflows.chain(3, 0.3), f"left-{i}")

        async def all_started() -> bool:
            return len({r[0] for r in await anyio.to_thread.run_sync(side_rows_of, pg)}) == n

        await wait_for(all_started, "every workflow started")
    async with (
        evflow.Engine(pg(), recover=True, engine_id="r1") as r1,
        evflow.Engine(pg(), recover=True, engine_id="r2") as r2,
        evflow.Engine(pg(), recover=True, engine_id="r3") as r3,
    ):
        with anyio.fail_after(120):
            for i in range(n):
                assert await r1.get_output(f"left-{i}") == 6
        owners: dict[str, int] = {}
        for i in range(n):
            starts = [e for e in await r1.store.read(f"left-{i}") if type(e).__name__ == "WorkflowStarted"]
            assert starts[0].owner == "gone"
            assert len(starts) == 2, f"left-{i} was claimed {len(starts) - 1} times"
            owners[starts[1].owner] = owners.get(starts[1].owner, 0) + 1
        assert sum(owners.values()) == n and set(owners) <= {"r1", "r2", "r3"}
        del r2, r3
        print(f"takeovers by engine: {owners}")


# -- real worker processes -------------------------------------------------------------------------


def takeover_claims(events: list[Any]) -> list[tuple[str | None, str | None, float]]:
    """``(previous owner, new owner, time)`` of each resume claim in a log."""
    out = []
    owner = None
    for e in events:
        if type(e).__name__ == "WorkflowStarted":
            if e.resume:
                out.append((owner, e.owner, e.time))
            owner = e.owner
    return out


def test_worker_takes_over_the_workflows_of_a_killed_worker(cluster: Cluster) -> None:
    victim = cluster.start("victim")
    cluster.wait_serving(victim)

    async def enqueue() -> None:
        async with evflow.Engine(cluster.store(), queues=[]) as engine:
            await scale_workflows.jobs.enqueue(scale_workflows.chain(8, 0.25), workflow_id="job")
            await scale_workflows.other.enqueue(scale_workflows.chain(1, 0), workflow_id="not-served")
            del engine

    anyio.run(enqueue)
    deadline = time.monotonic() + 60
    while not any(r[1] >= 3 for r in side_rows(cluster)):
        assert time.monotonic() < deadline, victim.stderr()
        time.sleep(0.02)
    rescuer = cluster.start("rescuer")
    cluster.wait_serving(rescuer)
    cluster.kill(victim)

    async def result() -> tuple[Any, list[Any], str]:
        async with evflow.Engine(cluster.store(), queues=[]) as engine:
            with anyio.fail_after(60):
                output = await engine.get_output("job")
            return output, await engine.store.read("job"), (await engine.get_status("not-served")).value

    output, events, other_status = anyio.run(result)
    assert output == 36
    assert other_status == "PENDING"  # neither worker serves that queue
    claims = takeover_claims(events)
    assert [(c[0], c[1]) for c in claims] == [(None, "victim"), ("victim", "rescuer")]
    assert victim.killed is not None
    took = claims[-1][2] - victim.killed
    rows = side_rows(cluster)
    assert durable_finish_reruns(events, rows) == []
    by_step: dict[int, list[str]] = {}
    for _wid, step, worker, *_ in rows:
        by_step.setdefault(step, []).append(worker)
    assert sorted(by_step) == list(range(1, 9))
    rerun = [step for step, workers in by_step.items() if len(workers) > 1]
    assert len(rerun) <= 1 and all(by_step[s] == ["victim", "rescuer"] for s in rerun)  # the one in flight
    assert "took over workflow 'job' from engine 'victim'" in rescuer.stderr()
    print(f"takeover after SIGKILL: {took:.2f} s; executions by step: {by_step}")
