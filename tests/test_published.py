"""Published events (SPEC section 8): ``evflow.set_event`` inside a step, ``get_event``
from anywhere, latest value wins, recorded as ``EventPublished`` and folded."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._errors import UnencodableError
from evflow._events import EventPublished
from evflow.stores import MemoryStore, Store
from pg_schema import postgres_stores

pytestmark = pytest.mark.anyio


gates: dict[str, anyio.Event] = {}


@evflow.step(name="progress")
def progress(n: int) -> int:
    for done in range(1, n + 1):
        evflow.set_event("progress", {"done": done, "of": n})
    return n


@evflow.step(name="announce")
async def announce(n: int, gate: str) -> str:
    evflow.set_event("phase", "started")
    await gates[gate].wait()
    evflow.set_event("phase", ("finished", n))
    return "announced"


@evflow.step(name="late_publish")
async def late_publish(gate: str) -> str:
    await gates[gate].wait()
    evflow.set_event("late", "here")
    return "done"


@evflow.step(name="publish_bad")
def publish_bad(key: Any, value: str) -> None:
    evflow.set_event(key, {1, 2} if value == "a set" else value)


class SharedMemoryStore(MemoryStore):
    shared = True


async def until(condition: Callable[[], Any]) -> None:
    with anyio.fail_after(20):
        while not await condition():
            await anyio.sleep(0.01)


async def test_the_latest_value_wins_from_sync_and_async_steps(anyio_backend: str) -> None:
    gate = uuid.uuid4().hex
    gates[gate] = anyio.Event()
    gates[gate].set()
    async with evflow.Engine("memory://") as engine:
        assert await announce.step(progress.step(3), gate).run("wf") == "announced"
        assert await evflow.get_event("wf", "progress") == {"done": 3, "of": 3}
        assert await engine.get_event("wf", "phase") == ("finished", 3)  # a tuple stays a tuple
        meta = await engine.get_metadata("wf")
        events = await engine.store.read("wf")
    published = [e for e in events if isinstance(e, EventPublished)]
    assert [(e.key, e.step) for e in published] == [("progress", "progress")] * 3 + [
        ("phase", "announce")
    ] * 2
    assert meta["published"] == {
        "progress": {"seq": published[2].seq, "time": published[2].time, "step": "progress"},
        "phase": {"seq": published[4].seq, "time": published[4].time, "step": "announce"},
    }


async def test_get_event_waits_for_the_value_and_gives_none_at_the_timeout(anyio_backend: str) -> None:
    gate = uuid.uuid4().hex
    gates[gate] = anyio.Event()
    async with evflow.Engine("memory://") as engine:
        handle = await announce.step(1, gate).run_async("wf")
        assert await engine.get_event("wf", "nothing", timeout=0.05) is None
        assert await engine.get_event("wf", "phase") == "started"
        got: list[Any] = []
        late_gate = uuid.uuid4().hex
        gates[late_gate] = anyio.Event()
        late = await late_publish.step(late_gate).run_async("wf-late")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _get_into(got, "wf-late", "late"))
            await anyio.sleep(0.05)  # the waiter is waiting (if not yet, it reads the value at once)
            gates[late_gate].set()
        assert got == ["here"]
        assert await late == "done"
        gates[gate].set()
        assert await handle == "announced"
        assert await engine.get_event("wf", "phase") == ("finished", 1)
        # a finished workflow that never set a key will never set it: None at once
        assert await engine.get_event("wf", "never") is None


async def _get_into(got: list[Any], wid: str, key: str) -> None:
    got.append(await evflow.get_event(wid, key, timeout=30))


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        pytest.param(3, "v", TypeError, id="int-key"),
        pytest.param("", "v", ValueError, id="empty-key"),
        pytest.param("k" * 257, "v", ValueError, id="long-key"),
        pytest.param("k", "a set", UnencodableError, id="set-without-pickle"),
    ],
)
async def test_a_bad_key_or_value_fails_the_step_and_records_nothing(
    anyio_backend: str, key: Any, value: Any, error: type[Exception]
) -> None:
    async with evflow.Engine("memory://", allow_pickle=False) as engine:
        with pytest.raises(evflow.WorkflowExecutionError) as raised:
            await publish_bad.options(max_retries=0).step(key, value).run("wf")
        assert isinstance(raised.value.__cause__, error)
        events = await engine.store.read("wf")
        assert not [e for e in events if isinstance(e, EventPublished)]
        assert "published" not in await engine.get_metadata("wf")


async def test_outside_a_step_set_event_raises_and_get_event_checks_its_arguments(anyio_backend: str) -> None:
    with pytest.raises(RuntimeError, match="set_event"):
        evflow.set_event("k", 1)
    async with evflow.Engine("memory://") as engine:
        with pytest.raises(evflow.WorkflowNotFoundError):
            await engine.get_event("nope", "k", timeout=1)
        await progress.step(1).run("wf")
        with pytest.raises(TypeError):
            await engine.get_event("wf", 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            await engine.get_event("wf", "k", timeout=-1)


async def test_replay_as_of_and_a_reopened_file_store(anyio_backend: str, tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path) as engine:
        await progress.step(2).run("wf")
        events = await engine.store.read("wf")
    first = next(e for e in events if isinstance(e, EventPublished))
    assert "published" not in evflow.replay(events, as_of=first.seq - 1).metadata()
    assert evflow.replay(events, as_of=first.seq).metadata()["published"]["progress"]["seq"] == first.seq
    async with evflow.Engine(tmp_path) as engine:
        assert await engine.get_event("wf", "progress") == {"done": 2, "of": 2}


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "shared-memory"), id="asyncio-shared-memory"),
        pytest.param(("trio", "shared-memory"), id="trio-shared-memory"),
        pytest.param(("asyncio", "postgres"), id="asyncio-postgres", marks=pytest.mark.postgres),
    ]
)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)


@pytest.fixture
async def shared(setup: tuple[str, str]) -> AsyncIterator[Callable[[], Store]]:
    """Storage for several engines at once (asyncpg runs on asyncio only)."""
    if setup[1] == "shared-memory":
        store = SharedMemoryStore()
        yield lambda: store
        return
    async for factory in postgres_stores("asyncio"):  # paired with asyncio in the params
        yield factory


class TestAcrossEngines:
    @pytest.fixture
    def anyio_backend(self, setup: tuple[str, str]) -> str:
        return setup[0]

    async def test_another_engine_waits_for_and_reads_the_value(self, shared: Callable[[], Store]) -> None:
        gate = uuid.uuid4().hex
        gates[gate] = anyio.Event()
        async with evflow.Engine(shared()) as a, evflow.Engine(shared()) as b:
            handle = await a.run_async(announce.step(5, gate), "wf")
            assert await b.get_event("wf", "phase", timeout=20) == "started"
            gates[gate].set()
            assert await handle == "announced"
            with anyio.fail_after(20):
                while await b.get_event("wf", "phase") == "started":
                    await anyio.sleep(0.02)
            assert await b.get_event("wf", "phase") == ("finished", 5)
            assert (await b.get_metadata("wf"))["published"] == (await a.get_metadata("wf"))["published"]


def test_show_and_events_print_published_keys(tmp_path: Path) -> None:
    async def write() -> None:
        async with evflow.Engine(tmp_path):
            await progress.step(2).run("wf")

    anyio.run(write)

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "evflow", "--storage", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    assert "published" in cli("show", "wf") and "progress" in cli("show", "wf")
    assert "EventPublished" in cli("events", "wf") and "progress = {'done': 2, 'of': 2}" in cli(
        "events", "wf"
    )
    assert json.loads(cli("--json", "show", "wf"))["published"]["progress"]["step"] == "progress"
