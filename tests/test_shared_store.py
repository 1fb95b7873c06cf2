"""Several engines on one shared store: what one runs, the others see, wait for, resume
or cancel, and never run twice.

Runs against an in-memory store flagged ``shared`` (both backends) and against
PostgreSQL (asyncio; skipped with the reason when no server can be reached).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

import evflow
from evflow.events import AnyEvent, Event, StepStarted, WorkflowCanceled, WorkflowStarted
from evflow.stores import MemoryStore, Store
from pg_schema import postgres_stores

pytestmark = pytest.mark.anyio


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
    async for factory in postgres_stores(anyio_backend):
        yield factory


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


class Interleaving(Store):
    """One engine's view of a shared store whose first append of a chosen event type is
    held back (neither queued nor written) until ``release``, to force an interleaving.

    Errors the inner store raises for released events are raised by the next append or
    flush of that workflow, as a store that writes in the background would.
    """

    shared = True

    def __init__(self, inner: Store, hold: type[Event] | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.hold = hold
        self.held: list[tuple[str, list[Event]]] = []
        #: Set once an append is held back.
        self.holding = anyio.Event()
        self.errors: dict[str, evflow.StoreError] = {}
        #: Awaited by a flush that is about to release held events.
        self.before_release: Callable[[], Awaitable[None]] | None = None

    @property
    def owner_id(self) -> str | None:
        return self.inner.owner_id

    @owner_id.setter
    def owner_id(self, value: str | None) -> None:
        self.inner.owner_id = value

    async def open(self) -> None:
        await self.inner.open()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)

    async def close(self) -> None:
        await self.inner.close()

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        error = self.errors.pop(workflow_id, None)
        if error is not None:
            raise error
        if self.held or any(type(e) is self.hold for e in events):
            self.hold = None  # once
            self.held.append((workflow_id, list(events)))
            self.holding.set()
            return
        self.inner.append_nowait(workflow_id, events)

    def release(self) -> None:
        held, self.held = self.held, []
        for workflow_id, events in held:
            try:
                self.inner.append_nowait(workflow_id, events)
            except evflow.StoreError as exc:
                self.errors[workflow_id] = exc

    async def land(self, workflow_id: str) -> None:
        """Release the held events and wait until the store has judged them."""
        self.release()
        try:
            await self.inner.flush(workflow_id)
        except evflow.StoreError as exc:
            self.errors[workflow_id] = exc

    async def flush(self, workflow_id: str | None = None) -> None:
        if self.held:
            if self.before_release is not None:
                await self.before_release()
            self.release()
        error = self.errors.pop(workflow_id, None) if workflow_id is not None else None
        if error is not None:
            raise error
        await self.inner.flush(workflow_id)

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        return await self.inner.read(workflow_id, after)

    async def list_workflows(self) -> list[str]:
        return await self.inner.list_workflows()

    async def delete(self, workflow_id: str) -> bool:
        return await self.inner.delete(workflow_id)

    async def wait_for_events(self, workflow_id: str, after: int, poll_interval: float = 0.05) -> None:
        await self.inner.wait_for_events(workflow_id, after, poll_interval)

    async def owner_alive(self, owner: str | None) -> bool:
        return await self.inner.owner_alive(owner)


async def test_cancel_while_the_running_engine_appends_at_the_same_seq(
    stores: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Engine b reads the log (seq 1), then a's StepStarted takes seq 2 just before b's
    WorkflowCanceled asks for it: b reads the log again and cancels at seq 3 (and a, whose
    next append is refused, says that it lets go of the workflow)."""
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    a_store = Interleaving(stores(), hold=StepStarted)
    b_store = Interleaving(stores(), hold=WorkflowCanceled)
    b_store.before_release = lambda: a_store.land("wf")
    async with evflow.Engine(a_store) as a, evflow.Engine(b_store) as b:
        handle = await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")
        with anyio.fail_after(20):
            await a_store.holding.wait()  # a's StepStarted, not in the log yet
        await b.cancel("wf")
        assert [type(e).__name__ for e in await b_store.read("wf")] == [
            "WorkflowStarted",
            "StepStarted",
            "WorkflowCanceled",
        ]
        assert await b.get_status("wf") == "CANCELED"
        gates[key].set()  # a's next append is refused: it lets go and reads the log
        with anyio.fail_after(20), pytest.raises(evflow.WorkflowCancellationError):
            await handle
        assert await a.get_status("wf") == "CANCELED"
        assert [type(e).__name__ for e in await a_store.read("wf")][-1] == "WorkflowCanceled"
    said = [r.getMessage() for r in caplog.records if r.name == "evflow.recovery"]
    assert any(m.startswith("workflow 'wf' was taken over by another engine, or written") for m in said)


async def test_cancel_lands_before_the_running_engine_appends(stores: StoreFactory) -> None:
    """The other order: b's WorkflowCanceled takes seq 2 and a's StepStarted comes too late.

    (b's view cannot ask a to cancel, as a store without remote cancels: b appends.)"""
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    a_store = Interleaving(stores(), hold=StepStarted)
    async with evflow.Engine(a_store) as a, evflow.Engine(Interleaving(stores())) as b:
        handle = await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")
        with anyio.fail_after(20):
            await a_store.holding.wait()
        await b.cancel("wf")
        await a_store.land("wf")
        gates[key].set()
        with anyio.fail_after(20), pytest.raises(evflow.WorkflowCancellationError):
            await handle
        assert await a.get_status("wf") == "CANCELED"
        assert [type(e).__name__ for e in await a_store.read("wf")] == ["WorkflowStarted", "WorkflowCanceled"]


async def test_run_of_a_new_id_another_engine_creates_meanwhile_attaches_to_it(stores: StoreFactory) -> None:
    """b finds no "wf", then a creates it before b's WorkflowStarted asks for seq 1: b
    reads the log again and waits on a's execution."""
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    b_store = Interleaving(stores(), hold=WorkflowStarted)
    async with evflow.Engine(stores()) as a, evflow.Engine(b_store) as b:

        async def a_creates_it() -> None:
            await a.run_async(gated.step(key), "wf")

        b_store.before_release = a_creates_it
        handle = await b.run_async(plus.step(1, 1), "wf")
        assert await b.get_status("wf") == "RUNNING"
        gates[key].set()
        with anyio.fail_after(20):
            assert await handle == f"passed {key}"
    assert executions.count(key) == 1


class HeldRead(SharedMemoryStore):
    """A shared store whose next read, once armed, returns what it read only on ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.reading = anyio.Event()
        self.release = anyio.Event()

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        events = await super().read(workflow_id, after)
        if self.armed:
            self.armed = False
            self.reading.set()
            await self.release.wait()
        return events


async def test_two_reads_of_one_workflow_at_once_fold_each_event_once() -> None:
    """Two callers of one engine ask about a workflow another engine runs: the first read
    comes back after the second folded the same events; they are not folded twice."""
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    store = HeldRead()
    async with evflow.Engine(store) as a, evflow.Engine(store) as b:
        await a.run_async(gated.step(key), "wf")
        await wait_status(b, "wf", "RUNNING")  # b knows the workflow
        store.armed = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.get_status, "wf")  # its read is held back
            await store.reading.wait()
            gates[key].set()
            assert await a.get_output("wf") == f"passed {key}"
            assert await b.get_status("wf") == "SUCCESSFUL"  # folds the rest first
            store.release.set()
        assert await b.get_status("wf") == "SUCCESSFUL"
        assert await b.get_output("wf") == f"passed {key}"
