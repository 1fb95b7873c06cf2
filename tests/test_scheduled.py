"""Cron schedules (SPEC section 9): ``@evflow.scheduled``.

The clock the schedules read is held still (or moved) instead of waiting for real minutes:
fire times at an engine's open, missed ones after a restart, and several engines are all
tested on a fixed clock; one test lets a per-second schedule fire on the real clock. Every
assertion is on ids and counts, never on how long something took.

Each test declares its schedules in a registry of its own, so the engines of other tests
never start them. PostgreSQL runs on asyncio only (skipped with the reason when no server
can be reached).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

import evflow
from evflow.events import WorkflowStarted
from evflow.schedules import ScheduleService, _schedule, _service
from evflow.stores import MemoryStore, Store
from pg_schema import postgres_stores

pytestmark = pytest.mark.anyio


#: 2030-01-01T00:00:00Z, a fire time of every cron expression below.
T0 = 1893456000.0
MINUTE = 60.0

runs: dict[str, list[float]] = {}
gates: dict[str, anyio.Event] = {}


@evflow.step
async def report(key: str, at: float) -> str:
    runs.setdefault(key, []).append(at)
    gate = gates.get(key)
    if gate is not None:
        await gate.wait()
    return f"report {at}"


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry of schedules for this test only."""
    monkeypatch.setattr(_schedule, "_schedules", {})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``clock(t)``: the schedules see the time stand still at ``t``."""

    def set_clock(at: float) -> None:
        monkeypatch.setattr(_service, "clock", lambda: at)

    return set_clock


def every_minute(
    key: str, *, catch_up: bool = False, queue: evflow.Queue | None = None
) -> _schedule.Schedule:
    @evflow.scheduled("* * * * *", catch_up=catch_up, queue=queue, name=f"report-{key}")
    def build(at: float) -> evflow.Node:
        return report.step(key, at)

    return build


def wid(key: str, at: float) -> str:
    return f"report-{key}@{_iso(at)}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def settled(engine: evflow.Engine, count: int) -> dict[str, evflow.WorkflowStatus]:
    """Once the engine's schedules went through a round and ``count`` workflows exist,
    none of them running: their ids and statuses."""
    service = engine.service(ScheduleService)
    with anyio.fail_after(20):
        while True:
            found = dict(await engine.list_all())
            if (
                service.statistics()["rounds"] >= 1
                and len(found) >= count
                and all(s not in ("RUNNING", "PENDING") for s in found.values())
            ):
                return found
            await anyio.sleep(0.01)


async def first_starts(store: Store, workflow_id: str) -> int:
    """How many times the workflow's log says it was started afresh (not resumed)."""
    events = await store.read(workflow_id)
    return sum(1 for e in events if isinstance(e, WorkflowStarted) and not e.resume)


async def test_a_fire_time_at_the_open_starts_one_workflow_with_a_deterministic_id(
    clock: Callable[[float], None],
) -> None:
    key = uuid.uuid4().hex
    clock(T0)
    schedule = every_minute(key)
    assert schedule.name == f"report-{key}"
    assert schedule.workflow_id(T0) == f"report-{key}@2030-01-01T00:00:00Z"
    async with evflow.Engine("memory://") as engine:
        found = await settled(engine, 1)
        assert found == {f"report-{key}@2030-01-01T00:00:00Z": "SUCCESSFUL"}
        assert await engine.get_output(f"report-{key}@2030-01-01T00:00:00Z") == f"report {T0}"
        assert engine.service(ScheduleService).statistics()["started"] == 1
    assert runs[key] == [T0]


async def test_a_schedule_that_never_ran_starts_with_no_fire_time_before_the_open(
    clock: Callable[[float], None],
) -> None:
    key = uuid.uuid4().hex
    clock(T0 + 30)
    every_minute(key, catch_up=True)
    async with evflow.Engine("memory://") as engine:
        assert await settled(engine, 0) == {}
    assert key not in runs


async def test_the_name_defaults_to_module_and_qualname() -> None:
    @evflow.scheduled("*/15 * * * *")
    def quarterly(at: float) -> evflow.Node:
        return report.step("none", at)

    assert quarterly.name == f"{__name__}.test_the_name_defaults_to_module_and_qualname.locals.quarterly"
    assert quarterly.workflow_id(T0 + 15 * MINUTE).endswith("quarterly@2030-01-01T00:15:00Z")
    assert quarterly.fire_time(quarterly.workflow_id(T0)) == T0
    assert quarterly.fire_time("something-else@2030-01-01T00:15:00Z") is None
    assert [_schedule.declared_schedules()] == [[quarterly]]


async def test_fire_times_start_while_the_engine_is_open() -> None:
    """The real clock and a per-second schedule (croniter's sixth field): each second
    starts one workflow, on the engine's timer."""
    key = uuid.uuid4().hex

    @evflow.scheduled("* * * * * *", catch_up=True, name=f"tick-{key}")
    def tick(at: float) -> evflow.Node:
        return report.step(key, at)

    async with evflow.Engine("memory://") as engine:
        with anyio.fail_after(20):
            while len(runs.get(key, [])) < 3:
                await anyio.sleep(0.02)
        found = dict(await engine.list_all())
    times = sorted(runs[key])
    assert times == sorted(set(times))  # no fire time twice
    assert times == [times[0] + i for i in range(len(times))]  # every second, none skipped
    assert set(found) == {tick.workflow_id(at) for at in times}


async def test_a_restart_during_a_fire_time_starts_it_once(
    clock: Callable[[float], None], tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    clock(T0)
    every_minute(key)
    first = wid(key, T0)
    async with evflow.Engine(tmp_path / "store") as engine:
        with anyio.fail_after(20):
            while await engine.list_all() != [(first, "RUNNING")]:
                await anyio.sleep(0.01)
    # closed while it ran: RESUMABLE; the fire time is not over on the clock yet
    async with evflow.Engine(tmp_path / "store") as engine:
        assert await settled(engine, 1) == {first: "RESUMABLE"}
        assert engine.service(ScheduleService).statistics()["started"] == 0
        gates[key].set()
        assert await engine.resume(first) == f"report {T0}"
        assert await first_starts(engine.store, first) == 1
    assert runs[key] == [T0, T0]  # the step once per run: the first, and the resume


@pytest.mark.parametrize("catch_up", [pytest.param(True, id="catch_up"), pytest.param(False, id="latest")])
async def test_missed_fire_times_start_once_each_or_only_the_latest(
    clock: Callable[[float], None], tmp_path: Path, catch_up: bool
) -> None:
    key = uuid.uuid4().hex
    every_minute(key, catch_up=catch_up)
    clock(T0)
    async with evflow.Engine(tmp_path / "store") as engine:
        assert await settled(engine, 1) == {wid(key, T0): "SUCCESSFUL"}
    clock(T0 + 10 * MINUTE + 30)  # ten fire times passed while no engine ran
    missed = [T0 + i * MINUTE for i in range(1, 11)]
    expected = [T0, *missed] if catch_up else [T0, missed[-1]]
    async with evflow.Engine(tmp_path / "store") as engine:
        found = await settled(engine, len(expected))
        assert found == {wid(key, at): "SUCCESSFUL" for at in expected}
        for at in expected:
            assert await first_starts(engine.store, wid(key, at)) == 1
    async with evflow.Engine(tmp_path / "store") as engine:  # and again: nothing new
        assert len(await settled(engine, len(expected))) == len(expected)
        assert engine.service(ScheduleService).statistics()["started"] == 0
    assert sorted(runs[key]) == expected  # they run at once: in any order


async def test_catch_up_is_bounded(clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch) -> None:
    key = uuid.uuid4().hex
    monkeypatch.setattr(_schedule, "MAX_CATCH_UP", 3)
    every_minute(key, catch_up=True)
    store = MemoryStore()
    clock(T0)
    async with evflow.Engine(store) as engine:
        await settled(engine, 1)
    clock(T0 + 10 * MINUTE)
    async with evflow.Engine(store) as engine:
        await settled(engine, 4)
    assert sorted(runs[key]) == [T0, T0 + 8 * MINUTE, T0 + 9 * MINUTE, T0 + 10 * MINUTE]


async def test_with_a_queue_the_workflow_is_enqueued(clock: Callable[[float], None]) -> None:
    key = uuid.uuid4().hex
    queue = evflow.Queue(f"reports-{key}", concurrency=1)
    clock(T0)
    every_minute(key, queue=queue)
    async with evflow.Engine("memory://") as engine:
        assert await settled(engine, 1) == {wid(key, T0): "SUCCESSFUL"}
        meta = await engine.get_metadata(wid(key, T0))
        assert meta["queue"] == queue.name
        assert meta["stats"]["queued_time"] is not None


async def test_a_function_that_fails_is_logged_and_its_fire_time_skipped(
    clock: Callable[[float], None], caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    clock(T0)

    @evflow.scheduled("* * * * *", name=f"broken-{key}")
    def broken(at: float) -> evflow.Node:
        raise RuntimeError("no report today")

    every_minute(key)
    with caplog.at_level("ERROR", logger="evflow.schedules"):
        async with evflow.Engine("memory://") as engine:
            assert await settled(engine, 1) == {wid(key, T0): "SUCCESSFUL"}
            assert await engine.run(report.step(key, 1.0)) == "report 1.0"  # the engine goes on
    assert f"broken-{key}@2030-01-01T00:00:00Z" in caplog.text and "no report today" in caplog.text


@pytest.mark.parametrize("cron", ["61 * * * *", "every day", "* * *", "* * * * * * * *"])
def test_an_invalid_cron_expression_is_a_value_error_when_applied(cron: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression") as info:

        @evflow.scheduled(cron)
        def never(at: float) -> evflow.Node:
            return report.step("never", at)

    assert repr(cron) in str(info.value)
    assert _schedule.declared_schedules() == []


def test_other_bad_declarations_fail_when_applied() -> None:
    with pytest.raises(TypeError, match="cron expression"):
        evflow.scheduled(15)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"evflow\.Queue"):
        evflow.scheduled("* * * * *", queue="reports")(lambda at: report.step("x", at))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        evflow.scheduled("* * * * *", name="a@b")(lambda at: report.step("x", at))


class SharedMemoryStore(MemoryStore):
    """One in-memory store used by several engines at once, as a database would be."""

    shared = True


@pytest.fixture(params=["memory", "postgres"])
async def shared(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Callable[[], Store]]:
    if request.param == "memory":
        store = SharedMemoryStore()
        yield lambda: store
        return
    async for factory in postgres_stores(anyio_backend):
        yield factory


async def test_two_engines_on_a_shared_store_start_each_fire_time_once(
    clock: Callable[[float], None], shared: Callable[[], Store]
) -> None:
    key = uuid.uuid4().hex
    every_minute(key, catch_up=True)
    clock(T0)
    async with evflow.Engine(shared()) as a, evflow.Engine(shared()) as b:
        await settled(a, 1)
        await settled(b, 1)
        started = [e.service(ScheduleService).statistics()["started"] for e in (a, b)]
    assert runs[key] == [T0]
    assert sorted(started) == [0, 1]
    clock(T0 + 10 * MINUTE + 30)
    expected = [T0 + i * MINUTE for i in range(11)]
    async with evflow.Engine(shared()) as a, evflow.Engine(shared()) as b:
        found = await settled(a, len(expected))
        await settled(b, len(expected))
        assert found == {wid(key, at): "SUCCESSFUL" for at in expected}
        for at in expected:
            assert await first_starts(a.store, wid(key, at)) == 1
        started = [e.service(ScheduleService).statistics()["started"] for e in (a, b)]
    assert sorted(runs[key]) == expected
    assert sum(started) == 10
