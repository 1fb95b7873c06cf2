"""SPEC section 10: several engines on one PostgreSQL store. ``recover=True``, takeover of a
dead (SIGKILL) or paused (SIGSTOP) worker's workflows, fencing, ``evflow worker``, one
execution for a new id run from two engines, a cancel from another engine, ``engine_id``.

Where the behaviour is about processes the engines are real ``evflow worker`` processes
(tests/scale_harness.py); the rest are engines in this process sharing the store.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow.events import WorkflowStarted
from evflow.stores import Store

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
import scale_workflows  # noqa: E402
from pg_schema import postgres_stores  # noqa: E402
from scale_harness import (  # noqa: E402
    Cluster,
    durable_finish_reruns,
    new_cluster,
    output_once_taken_over,
    side_rows,
    sql,
)

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


class _Gates(evflow.stores.PostgresStore):
    """Holds back the first ``reads`` reads of one workflow and the first ``asks`` questions
    about one engine's liveness, each until the test opens its gate: two looks at the same
    workflow then interleave exactly as the test says."""

    def __init__(
        self, *args: Any, workflow_id: str, owner: str, reads: int, asks: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.workflow_id, self.owner = workflow_id, owner
        self.read_gates = [(anyio.Event(), anyio.Event()) for _ in range(reads)]
        self.alive_gates = [(anyio.Event(), anyio.Event()) for _ in range(asks)]
        self._reads = self._asks = 0

    async def read(self, workflow_id: str, after: int = 0) -> list[Any]:
        if workflow_id == self.workflow_id and self._reads < len(self.read_gates):
            waiting, go = self.read_gates[self._reads]
            self._reads += 1
            waiting.set()
            await go.wait()
        return await super().read(workflow_id, after)

    async def owner_alive(self, owner: str | None) -> bool:
        if owner == self.owner and self._asks < len(self.alive_gates):
            waiting, go = self.alive_gates[self._asks]
            self._asks += 1
            waiting.set()
            await go.wait()
        return await super().owner_alive(owner)


async def test_two_looks_at_once_never_show_another_engines_run_as_resumable(pg: Callable[[], Store]) -> None:
    """The queue service reads a workflow another engine just started while ``run`` of the
    same id reads it too: a look's state is shown only once it knows the run's owner is
    live, or ``run`` would find the other look's state RESUMABLE and run the workflow twice."""
    store = pg()
    assert isinstance(store, evflow.stores.PostgresStore)
    gated = _Gates(store.url, schema=store.schema, workflow_id="busy", owner="runner", reads=1, asks=2)
    async with evflow.Engine(pg(), engine_id="runner") as a, evflow.Engine(gated, engine_id="asker") as b:
        handles: list[evflow.WorkflowHandle] = []

        async def run_here() -> None:
            handles.append(await b.run_async(scale_workflows.long_sleep.step(600), "busy"))

        with anyio.fail_after(30):
            # b's queue service hears of the new workflow and reads it: held back
            await a.run_async(scale_workflows.long_sleep.step(600), "busy")
            ((service_reading, service_read),) = gated.read_gates
            await service_reading.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_here)  # run reads it too, then asks whether "runner" lives
                (run_asking, run_asked), (service_asking, service_asked) = gated.alive_gates
                await run_asking.wait()
                service_read.set()  # the service's read ends; it asks in turn
                await service_asking.wait()
                run_asked.set()  # run hears "live" first, while the service still waits
                while not handles:
                    await anyio.sleep(0.01)
                service_asked.set()
        assert event_types(await b.store.read("busy")).count("WorkflowStarted") == 1  # attached
        assert await b.get_status("busy") is evflow.WorkflowStatus.RUNNING
        await b.cancel("busy")
        with pytest.raises(evflow.WorkflowCancellationError):
            await handles[0].result()


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


_GATES: dict[str, anyio.Event] = {}


@evflow.step
async def gated_step(key: str) -> str:
    await _GATES[key].wait()
    return "done"


async def test_an_engine_whose_append_its_own_lapsed_lease_refused_says_it_was_taken_over(
    pg: Callable[[], Store], caplog: pytest.LogCaptureFixture
) -> None:
    """The lease of engine a runs out while its step runs (as after SIGSTOP), engine b takes
    the workflow over, then the step ends: a's ``StepFinished`` is refused for the lapse
    itself (``LeaseExpiredError``) before any renewal has found it, so the run is gone by
    the time the renewal does; a still says, once, that the workflow was taken over."""
    key = f"lapse-{time.monotonic_ns()}"
    _GATES[key] = anyio.Event()
    caplog.set_level("WARNING", logger="evflow.recovery")
    # A long lease: its renewals (every lease / 6 = 3 s) come long after the refusal.
    async with evflow.Engine(pg(), engine_id="a", recovery_interval=30) as a:
        handle = await a.run_async(gated_step.step(key), "wf")
        await wait_for(lambda: _has(a, "wf", "StepStarted"), "the step started")
        async with evflow.Engine(pg(), engine_id="b", queues=[]) as b:
            events = await b.store.read("wf")
            # b's claim, as recovery appends it: the next WorkflowStarted, a resume owned by b.
            claim = WorkflowStarted(
                seq=events[-1].seq + 1, time=time.time(), workflow_id="wf", resume=True, owner="b"
            )
            await b.store.append("wf", [claim])
        a.store._lease_until = 0.0  # type: ignore[attr-defined]  # paused past its lease
        _GATES[key].set()
        with anyio.fail_after(30), pytest.raises(evflow.WorkflowExecutionError) as lost:
            await handle
        assert isinstance(lost.value.__cause__, evflow.StoreError)
        assert "lease ran out" in str(lost.value.__cause__)
        assert not [r for r in caplog.records if "taken over" in r.getMessage()]  # not yet renewed

        async def told() -> bool:
            return any("taken over" in r.getMessage() for r in caplog.records)

        await wait_for(told, "a says the workflow was taken over")
        said = [r.getMessage() for r in caplog.records if r.name == "evflow.recovery"]
        assert said == ["workflow 'wf' was taken over by another engine while this one was away"]


@evflow.step
async def plain_step(x: int) -> int:
    return x + 1


async def test_after_a_lapse_nothing_is_appended_until_the_engine_has_checked_its_workflows(
    pg: Callable[[], Store],
) -> None:
    """A renewal that finds the lease had lapsed (as after SIGSTOP) renews it, but the store
    keeps refusing appends until the engine has asked the owner index which workflows were
    taken over meanwhile and stopped those runs: a step of one could otherwise start in
    the moment between (the chaos test saw a woken worker run a step another had finished)."""
    async with evflow.Engine(pg(), engine_id="a", recovery_interval=1, queues=[]) as a:
        store = a.store
        asked = anyio.Event()
        answer = anyio.Event()
        real_not_owned = store.not_owned

        async def held_not_owned(workflow_ids: list[str]) -> list[str]:
            asked.set()
            await answer.wait()
            return await real_not_owned(workflow_ids)

        store.not_owned = held_not_owned  # type: ignore[method-assign]
        assert await plain_step.step(1).run("before") == 2
        store._lease_until = 0.0  # type: ignore[attr-defined]  # paused past its lease
        with anyio.fail_after(30):
            await asked.wait()  # a renewal found the lapse; the engine asks the index
        assert not store.lease_ok()
        with pytest.raises(evflow.WorkflowExecutionError) as refused:
            await plain_step.step(2).run("meanwhile")
        assert "lease ran out" in str(refused.value.__cause__)
        answer.set()  # nothing was taken over: appends are accepted again

        async def accepted() -> bool:
            return store.lease_ok()

        await wait_for(accepted, "the store accepts appends again")
        assert await plain_step.step(3).run("after") == 4


async def _has(engine: evflow.Engine, workflow_id: str, event_type: str) -> bool:
    return event_type in event_types(await engine.store.read(workflow_id))


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
    engines: dict[str, evflow.Engine] = {}
    done = anyio.Event()

    async def serve(name: str) -> None:
        async with evflow.Engine(pg(), recover=True, engine_id=name) as engine:
            engines[name] = engine
            await done.wait()

    owners: dict[str | None, int] = {}
    async with anyio.create_task_group() as tg:
        for name in ("r1", "r2", "r3"):  # opening at the same time, each recovering on open
            tg.start_soon(serve, name)
        with anyio.fail_after(120):
            while len(engines) < 3:
                await anyio.sleep(0.01)
            r1 = engines["r1"]
            for i in range(n):
                assert await r1.get_output(f"left-{i}") == 6
        for i in range(n):
            owners_of_runs = [owner for owner, _ in runs(await r1.store.read(f"left-{i}"))]
            assert owners_of_runs[0] == "gone"
            assert len(owners_of_runs) == 2, f"left-{i} was claimed {len(owners_of_runs) - 1} times"
            owners[owners_of_runs[1]] = owners.get(owners_of_runs[1], 0) + 1
        done.set()
    assert sum(owners.values()) == n and set(owners) <= {"r1", "r2", "r3"}
    print(f"takeovers by engine: {owners}")


# -- real worker processes -------------------------------------------------------------------------


def runs(events: list[Any]) -> list[tuple[str | None, float]]:
    """``(owner, time)`` of each run's start (not a pending record) in a log."""
    return [(e.owner, e.time) for e in events if type(e).__name__ == "WorkflowStarted" and not e.pending]


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
            output = await output_once_taken_over(engine, "job")
            return output, await engine.store.read("job"), (await engine.get_status("not-served")).value

    output, events, other_status = anyio.run(result)
    assert output == 36
    assert other_status == "PENDING"  # neither worker serves that queue
    claims = runs(events)
    assert [owner for owner, _ in claims] == ["victim", "rescuer"]
    assert victim.killed is not None
    took = claims[-1][1] - victim.killed
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


def test_a_paused_worker_is_fenced_off_and_starts_nothing_after_it_wakes(cluster: Cluster) -> None:
    """SIGSTOP a worker mid-workflow: its lease runs out, another worker takes the workflow
    over; after SIGCONT the paused one appends nothing to it and starts no step of it."""
    victim = cluster.run_one("victim", "paused", steps=10, pause=0.3, interval=2)
    rescuer = cluster.start("rescuer", "--recovery-interval", "2")
    cluster.wait_serving(rescuer)
    wait_rows(cluster, lambda rows: any(r[1] >= 3 for r in rows), victim)
    victim.proc.send_signal(signal.SIGSTOP)
    stopped = time.time()
    wait_rows(cluster, lambda rows: any(r[2] == "rescuer" for r in rows), rescuer)
    victim.proc.send_signal(signal.SIGCONT)
    woke = time.time()

    async def result() -> tuple[Any, list[Any]]:
        async with evflow.Engine(cluster.store(), queues=[]) as engine:
            output = await output_once_taken_over(engine, "paused")
            return output, await engine.store.read("paused")

    output, events = anyio.run(result)
    # The woken worker says so once its renewal finds the lapse, or once the store refuses
    # the end of the step it was in (whichever comes first).
    deadline = time.time() + 30
    while "taken over" not in victim.stderr() and time.time() < deadline:
        time.sleep(0.05)
    assert "workflow 'paused' was taken over by another engine" in victim.stderr()
    cluster.kill(victim)
    assert output == 55
    claims = runs(events)
    assert [owner for owner, _ in claims] == ["victim", "rescuer"]
    finished = [e.name for e in events if type(e).__name__ == "StepFinished"]
    assert len(finished) == len(set(finished)) == 10  # nothing the victim did after the claim landed
    rows = side_rows(cluster)
    assert durable_finish_reruns(events, rows) == []
    victim_rows = [r for r in rows if r[2] == "victim"]
    assert all(r[4] < stopped for r in victim_rows), "the paused worker started a step after it woke"
    in_flight = [r for r in victim_rows if r[5] is None or r[5] > stopped]
    assert len(in_flight) <= 1  # the one step it was in when paused, whose result the store refused
    took = claims[-1][1] - stopped
    print(
        f"SIGSTOP: taken over {took:.2f} s after the pause (lease 1.2 s); woke {woke - stopped:.1f} s later"
    )


def wait_rows(cluster: Cluster, predicate: Callable[[list[Any]], bool], worker: Any) -> None:
    deadline = time.monotonic() + 60
    while not predicate(side_rows(cluster)):
        assert time.monotonic() < deadline, worker.stderr()
        time.sleep(0.02)
