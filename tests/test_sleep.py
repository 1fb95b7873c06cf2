"""Durable sleep (SPEC section 8): ``evflow.sleep`` / ``evflow.sleep_until`` nodes.

Durations are short (0.05-0.3 s); the assertions are on recorded times and the order of
events, never on elapsed wall time.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._events import AnyEvent, StepFinished, StepStarted, TimerStarted, WorkflowStarted
from evflow.stores import FileStore, Store
from evflow.waiting import TimerService

pytestmark = pytest.mark.anyio

TESTS_DIR = Path(__file__).parent
DSN = os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@evflow.step(name="stamp")
def stamp(slept: Any, label: str) -> str:
    return f"{label} after {slept!r}"


@evflow.step(name="nap_then")
async def nap_then(seconds: float) -> Any:
    return stamp.step(evflow.sleep(seconds), "continued")


@evflow.step(name="both")
def both(a: Any, b: Any) -> list[Any]:
    return [a, b]


StoreFactory = Callable[[], "str | Store"]


#: (anyio backend, store) pairs; asyncpg runs on asyncio only.
SETUPS = [
    pytest.param(("asyncio", "memory"), id="asyncio-memory"),
    pytest.param(("trio", "memory"), id="trio-memory"),
    pytest.param(("asyncio", "file"), id="asyncio-file"),
    pytest.param(("trio", "file"), id="trio-file"),
    pytest.param(("asyncio", "postgres"), id="asyncio-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SETUPS)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)


@pytest.fixture
async def store(setup: tuple[str, str], tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of storage for engines opened one after the other on the same store
    (only where the test overrides ``anyio_backend`` with the setup's)."""
    kind = setup[1]
    if kind == "memory":
        shared = evflow.stores.MemoryStore()
        yield lambda: shared
    elif kind == "file":
        yield lambda: str(tmp_path / "store")
    else:
        asyncpg = pytest.importorskip("asyncpg")
        try:
            conn = await asyncpg.connect(DSN, timeout=5)
        except Exception as exc:
            pytest.skip(f"PostgreSQL not reachable at {DSN}: {exc}")
        schema = f"evflow_test_{os.urandom(6).hex()}"
        try:
            yield lambda: evflow.stores.PostgresStore(DSN, schema=schema)
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()


async def events_of(engine: evflow.Engine, wid: str) -> list[AnyEvent]:
    return await engine.store.read(wid)


async def until(condition: Callable[[], Any]) -> None:
    with anyio.fail_after(20):
        while not await condition():
            await anyio.sleep(0.01)


# -- running ---------------------------------------------------------------------------------------


async def test_a_sleep_is_a_whole_workflow_and_its_value_is_none(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        assert await evflow.sleep(0.05).run("alone") is None
        assert (await engine.get_metadata("alone"))["status"] == "SUCCESSFUL"


async def test_sleep_until_a_past_time_ends_at_once(anyio_backend: str) -> None:
    past = time.time() - 3600
    async with evflow.Engine("memory://") as engine:
        assert await stamp.step(evflow.sleep_until(past), "late").run("wf") == "late after None"
        stats = (await engine.get_metadata("wf", "sleep"))["stats"]
        assert stats["wake_time"] == past
        assert stats["end_time"] >= stats["start_time"]


async def test_sleep_until_a_future_time_ends_at_it(anyio_backend: str) -> None:
    wake = time.time() + 0.1
    async with evflow.Engine("memory://") as engine:
        await evflow.sleep_until(wake, name="alarm").run("wf")
        stats = (await engine.get_metadata("wf", "alarm"))["stats"]
    assert stats["wake_time"] == wake
    assert stats["end_time"] >= wake


async def test_name_and_metadata_like_options(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        node = stamp.step(evflow.sleep(0.01, name="nap", metadata={"why": "rate limit"}), "x")
        await node.run("wf")
        meta = await engine.get_metadata("wf", "nap")
    assert meta["user_metadata"] == {"why": "rate limit"}
    assert meta["step_options"]["name"] == "nap"
    assert meta["step_options"]["step_type"] == "SLEEP"


async def test_sleeps_in_a_continuation_are_numbered_by_the_counter(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        node = both.step(nap_then.step(0.02), evflow.sleep(0.01))
        assert await node.run("wf") == ["continued after None", None]
        state = evflow.replay(await events_of(engine, "wf"))
    assert {"sleep", "sleep_1"} <= set(state.steps)
    # the DAG's sleep was recorded first (breadth-first), the continuation's later
    assert state.steps["sleep_1"].parent == "nap_then"


async def test_concurrent_sleeps_wake_in_the_order_of_their_wake_times(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        await both.step(evflow.sleep(0.2, name="long"), evflow.sleep(0.05, name="short")).run("wf")
        events = await events_of(engine, "wf")
    finished = [e.name for e in events if isinstance(e, StepFinished)]
    assert finished.index("short") < finished.index("long")


async def test_while_asleep_the_step_and_the_workflow_are_running(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        handle = await evflow.sleep(30, name="long").run_async("wf")

        async def has_timer() -> bool:
            return "wake_time" in (await engine.get_metadata("wf", "long"))["stats"]

        await until(has_timer)
        meta = await engine.get_metadata("wf", "long")
        assert meta["status"] == "RUNNING"
        assert "end_time" not in meta["stats"]
        assert await engine.get_status("wf") == "RUNNING"
        assert engine.service(TimerService).statistics()["timers"] == 1
        await handle.cancel()
        assert await engine.get_status("wf") == "CANCELED"
        assert (await engine.get_metadata("wf", "long"))["status"] == "CANCELED"
        assert engine.service(TimerService).statistics()["timers"] == 0


async def test_many_sleepers_share_one_timer_task(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        handles = [await evflow.sleep(0.2).run_async(f"wf-{i}") for i in range(50)]
        timers = engine.service(TimerService)

        async def all_asleep() -> bool:
            return timers.statistics()["timers"] == 50

        await until(all_asleep)
        assert _task_names().count("evflow timers") == 1
        for handle in handles:
            assert await handle is None


async def test_an_engine_entered_again_starts_its_timer_again(anyio_backend: str) -> None:
    engine = evflow.Engine("memory://")
    async with engine:
        assert await evflow.sleep(0.02).run("first") is None
    async with engine:
        assert await evflow.sleep(0.02).run("second") is None
        assert _task_names().count("evflow timers") == 1


def _task_names() -> list[str]:
    import sniffio

    if sniffio.current_async_library() == "asyncio":
        import asyncio

        return [task.get_name() for task in asyncio.all_tasks()]
    import trio

    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


class TestOnEveryStore:
    """Where the store takes part (the recorded wake time): memory, file and PostgreSQL."""

    @pytest.fixture
    def anyio_backend(self, setup: tuple[str, str]) -> str:
        return setup[0]

    async def test_a_sleep_ends_after_its_recorded_wake_time(self, store: StoreFactory) -> None:
        async with evflow.Engine(store()) as engine:
            assert await stamp.step(evflow.sleep(0.1), "woke").run("wf") == "woke after None"
            meta = await engine.get_metadata("wf", "sleep")
            events = await events_of(engine, "wf")
        assert meta["status"] == "SUCCESSFUL"
        assert meta["step_options"]["step_type"] == "SLEEP"
        stats = meta["stats"]
        assert stats["wake_time"] == stats["start_time"] + 0.1
        assert stats["end_time"] >= stats["wake_time"]
        timers = [e for e in events if isinstance(e, TimerStarted)]
        assert [(t.name, t.wake_time) for t in timers] == [("sleep", stats["wake_time"])]

    async def test_closed_mid_sleep_it_is_resumable_and_resume_waits_for_the_recorded_wake_time(
        self, store: StoreFactory
    ) -> None:
        async with evflow.Engine(store()) as engine:
            await stamp.step(evflow.sleep(0.3), "resumed").run_async("wf")

            async def has_timer() -> bool:
                return "wake_time" in (await engine.get_metadata("wf", "sleep"))["stats"]

            await until(has_timer)
            wake_time = (await engine.get_metadata("wf", "sleep"))["stats"]["wake_time"]
        async with evflow.Engine(store()) as engine:
            assert await engine.get_status("wf") == "RESUMABLE"
            assert (await engine.get_metadata("wf", "sleep"))["status"] == "RESUMABLE"
            assert await engine.resume("wf") == "resumed after None"
            meta = await engine.get_metadata("wf", "sleep")
            events = await events_of(engine, "wf")
        assert meta["stats"]["wake_time"] == wake_time  # recorded once, kept across the resume
        assert [e.wake_time for e in events if isinstance(e, TimerStarted)] == [wake_time]
        resumed_at = next(e.seq for e in events if isinstance(e, WorkflowStarted) and e.resume)
        finished = next(e for e in events if isinstance(e, StepFinished) and e.name == "sleep")
        assert finished.seq > resumed_at
        assert finished.time >= wake_time
        # the resumed step started again (new stats) and still woke at the first wake time
        assert meta["stats"]["start_time"] > wake_time - 0.3


# -- resume ----------------------------------------------------------------------------------------


async def test_a_wake_time_passed_while_no_engine_ran_ends_at_once_on_resume(tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path) as engine:
        await stamp.step(evflow.sleep(0.05), "late").run_async("wf")

        async def has_timer() -> bool:
            return "wake_time" in (await engine.get_metadata("wf", "sleep"))["stats"]

        await until(has_timer)
        wake_time = (await engine.get_metadata("wf", "sleep"))["stats"]["wake_time"]
    while time.time() < wake_time:  # let it pass while no engine runs
        await anyio.sleep(0.02)
    async with evflow.Engine(tmp_path) as engine:
        assert await engine.resume("wf") == "late after None"
        events = await events_of(engine, "wf")
    assert [e.wake_time for e in events if isinstance(e, TimerStarted)] == [wake_time]


async def test_replay_as_of_shows_the_wake_time_only_from_its_event(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        await evflow.sleep(0.02).run("wf")
        events = await events_of(engine, "wf")
    timer = next(e for e in events if isinstance(e, TimerStarted))
    before = evflow.replay(events, as_of=timer.seq - 1).metadata("sleep")
    at = evflow.replay(events, as_of=timer.seq).metadata("sleep")
    assert "wake_time" not in before["stats"] and before["status"] == "RUNNING"
    assert at["stats"]["wake_time"] == timer.wake_time and at["status"] == "RUNNING"
    assert evflow.replay(events).metadata("sleep")["status"] == "SUCCESSFUL"


def untyped(value: object) -> Any:
    """A deliberately wrong argument, past the type checker."""
    return value


@pytest.mark.parametrize(
    ("build", "error"),
    [
        pytest.param(lambda: evflow.sleep(-1), ValueError, id="negative"),
        pytest.param(lambda: evflow.sleep(math.nan), ValueError, id="nan"),
        pytest.param(lambda: evflow.sleep(math.inf), ValueError, id="inf"),
        pytest.param(lambda: evflow.sleep(untyped("5")), TypeError, id="str"),
        pytest.param(lambda: evflow.sleep(True), TypeError, id="bool"),
        pytest.param(lambda: evflow.sleep(untyped(stamp.step(None, "x"))), TypeError, id="node"),
        pytest.param(lambda: evflow.sleep_until(math.inf), ValueError, id="until-inf"),
        pytest.param(lambda: evflow.sleep_until(untyped(None)), TypeError, id="until-none"),
        pytest.param(lambda: evflow.sleep(1, name=""), ValueError, id="empty-name"),
        pytest.param(lambda: evflow.sleep(1, name=untyped(3)), ValueError, id="int-name"),
        pytest.param(lambda: evflow.sleep(1, metadata=untyped({1: 2})), ValueError, id="bad-metadata"),
        pytest.param(lambda: evflow.sleep(1, metadata={"x": object()}), ValueError, id="unjson-metadata"),
        pytest.param(lambda: evflow.sleep(1).function.options(name="x"), TypeError, id="options"),
    ],
)
def test_bad_arguments_fail_when_the_node_is_built(build: Callable[[], Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


# -- a real crash ----------------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, sleep_workflows; sleep_workflows.main(sys.argv[1:])", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read(store: Path, wid: str) -> list[AnyEvent]:
    async def read() -> list[AnyEvent]:
        async with FileStore(store, read_only=True) as reader:
            return await reader.read(wid)

    return anyio.run(read)


@pytest.mark.slow
def test_a_process_killed_mid_sleep_is_resumed_and_waits_only_for_the_rest(tmp_path: Path) -> None:
    store, wid, seconds = tmp_path / "store", "sleeper", 2.0
    proc = _child("run", str(store), wid, str(seconds))
    deadline = time.monotonic() + 60
    events: list[AnyEvent] = []
    while not any(isinstance(e, TimerStarted) for e in events):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never started its sleep"
        time.sleep(0.02)
        if (store / "workflows").exists():
            events = _read(store, wid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    timer = next(e for e in events if isinstance(e, TimerStarted))
    first_start = next(e for e in events if isinstance(e, StepStarted) and e.name == "nap")
    assert timer.wake_time == first_start.time + seconds

    resumed = _child("resume", str(store), wid)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"output": ["before", None, "after"]}

    log = _read(store, wid)
    assert [e.wake_time for e in log if isinstance(e, TimerStarted)] == [timer.wake_time]
    resume = next(e for e in log if isinstance(e, WorkflowStarted) and e.resume)
    starts = [e for e in log if isinstance(e, StepStarted) and e.name == "nap"]
    assert len(starts) == 2 and starts[1].seq > resume.seq  # it ran again after the resume ...
    finished = [e for e in log if isinstance(e, StepFinished) and e.name == "nap"]
    assert len(finished) == 1 and finished[0].time >= timer.wake_time  # ... until the first wake time
    assert [e.name for e in log if isinstance(e, StepFinished)].count("before") == 1
    state = evflow.replay(log, live=False)
    assert state.metadata("nap")["stats"]["wake_time"] == timer.wake_time
    assert state.status == "SUCCESSFUL"


# -- the CLI ---------------------------------------------------------------------------------------


def _cli(store: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "evflow", "--storage", str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_show_and_events_print_the_wake_time(tmp_path: Path) -> None:
    async def write() -> None:
        async with evflow.Engine(tmp_path) as engine:
            await stamp.step(evflow.sleep(0.02, name="nap"), "x").run("wf")
            assert (await engine.get_metadata("wf", "nap"))["stats"]["wake_time"] > 0

    anyio.run(write)
    shown = _cli(tmp_path, "show", "wf", "--step", "nap")
    assert "SLEEP" in shown and "wakes" in shown
    assert json.loads(_cli(tmp_path, "--json", "show", "wf", "--step", "nap"))["stats"]["wake_time"] > 0
    events = _cli(tmp_path, "events", "wf")
    assert "TimerStarted" in events and "nap wakes at" in events
    lines = [json.loads(line) for line in _cli(tmp_path, "--json", "events", "wf").splitlines()]
    assert [line["wake_time"] for line in lines if line["type"] == "TimerStarted"] == [
        json.loads(_cli(tmp_path, "--json", "show", "wf", "--step", "nap"))["stats"]["wake_time"]
    ]
