"""What a failing store does to a run: one error type, whichever write failed.

A run whose event could not be written (a full disk, say) raises
``WorkflowExecutionError`` with the ``StoreError`` as ``__cause__`` from ``run``,
``await handle``, ``handle.result()``, ``get_output`` and ``resume``; what was recorded
before stays as it was, and the workflow is RESUMABLE (absent if not even its start was
written) until a resume finishes it. The failures are injected at every write call of a
run in turn (see docs/storage.md, "What a failing store does").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import evflow
from evflow.events import AnyEvent, Event
from evflow.stores import FileStore, MemoryStore

pytestmark = pytest.mark.anyio


@evflow.step
async def add(left: int, right: int) -> int:
    return left + right


def dag() -> evflow.Node:
    # two steps that run concurrently, and one that needs both: 10
    return add.step(add.step(1, 2), add.step(3, 4))


def chain() -> evflow.Node:
    # one step after the other: 6
    return add.step(add.step(1, 2), 3)


#: Write calls (``append_nowait`` and ``flush``) of one run of ``dag()`` from start to end.
WRITES = 12
#: Of which ``append_nowait`` calls.
APPENDS = 8
#: Write calls of a resume of ``chain()`` whose first StepStarted could not be written.
RESUME_WRITES = 9


class FailingStore(MemoryStore):
    """A memory store whose ``fail_at``-th write call (``append_nowait`` or ``flush``,
    counted together from 1) raises ``StoreError`` like a failed write: the events of a
    failed append, and every event queued when a flush fails, are not kept, and (as in the
    PostgreSQL store) a workflow whose events were lost refuses appends until it is read
    again: they would follow events that are not there."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0
        self.queued: list[tuple[str, list[Event]]] = []
        self.lost: set[str] = set()

    def _failing(self) -> bool:
        self.calls += 1
        return self.calls == self.fail_at

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        if self._failing():
            raise evflow.StoreError("disk full")
        if workflow_id in self.lost:
            raise evflow.StoreError(f"an earlier write of {workflow_id!r} failed; read it again")
        last = [e.seq for w, evs in self.queued if w == workflow_id for e in evs]
        known = self._logs.get(workflow_id)
        expected = (last[-1] if last else known[-1].seq if known else 0) + 1
        if events[0].seq != expected:
            raise evflow.SequenceConflictError(workflow_id, events[0].seq, expected - 1)
        self.queued.append((workflow_id, list(events)))

    async def flush(self, workflow_id: str | None = None) -> None:
        failing = self._failing()
        queued, self.queued = self.queued, []
        if failing:
            self.lost.update(wid for wid, _ in queued)
        else:
            for wid, events in queued:
                super().append_nowait(wid, events)
        await anyio.lowlevel.checkpoint()  # a write takes a while: others run meanwhile
        if failing:
            raise evflow.StoreError("disk full")

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        self.lost.discard(workflow_id)
        return await super().read(workflow_id, after)


class FailingFileStore(FileStore):
    """A file store whose ``fail_at``-th ``append_nowait`` raises ``StoreError`` (and
    queues nothing), as a store that cannot write any more does."""

    def __init__(self, path: Path, fail_at: int | None = None) -> None:
        super().__init__(path)
        self.fail_at = fail_at
        self.calls = 0

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise evflow.StoreError("disk full")
        super().append_nowait(workflow_id, events)


def check_log(events: Sequence[AnyEvent]) -> str:
    """The log is intact (seqs 1, 2, ... and it folds); return the status it folds to."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    return evflow.replay(events).status.value


def store_failure(info: pytest.ExceptionInfo[evflow.WorkflowExecutionError]) -> None:
    assert type(info.value) is evflow.WorkflowExecutionError
    assert isinstance(info.value.__cause__, evflow.StoreError)
    assert not isinstance(info.value.__cause__, evflow.SequenceConflictError)
    assert "evflow.resume('wf')" in str(info.value)


async def test_the_counts_cover_a_whole_run(tmp_path: Path) -> None:
    store = FailingStore()
    async with evflow.Engine(store):
        assert await dag().run("wf") == 10
    assert store.calls == WRITES
    file_store = FailingFileStore(tmp_path / "store")
    async with evflow.Engine(file_store):
        assert await dag().run("wf") == 10
    assert file_store.calls == APPENDS
    store = FailingStore(3)
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError):
            await chain().run("wf")
        before = store.calls
        assert await evflow.resume("wf") == 6
    assert store.calls - before == RESUME_WRITES


async def wait_for_run(how: str) -> Any:
    if how == "run":
        return await dag().run("wf")
    handle = await dag().run_async("wf")
    return await (handle if how == "await handle" else handle.result())


@pytest.mark.parametrize("how", ["run", "await handle", "handle.result()"])
@pytest.mark.parametrize("fail_at", range(1, WRITES + 1))
async def test_a_failed_write_raises_the_same_error_wherever_it_happens(fail_at: int, how: str) -> None:
    store = FailingStore(fail_at)
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await wait_for_run(how)
        store_failure(info)
        logged = await store.read("wf")
        if logged:
            assert check_log(logged) == "RUNNING"  # the log holds what was written, intact
            assert await evflow.get_status("wf") == "RESUMABLE"
            assert (await evflow.get_metadata("wf"))["status"] == "RESUMABLE"
            with pytest.raises(evflow.WorkflowExecutionError) as info:
                await evflow.get_output("wf")
            store_failure(info)
            assert await evflow.resume("wf") == 10
        else:  # not even its start was written
            with pytest.raises(evflow.WorkflowNotFoundError):
                await evflow.get_status("wf")
            assert await dag().run("wf") == 10
        assert await evflow.get_status("wf") == "SUCCESSFUL"
        assert await evflow.get_output("wf") == 10
    assert check_log(await store.read("wf")) == "SUCCESSFUL"
    assert store.calls > WRITES  # the failure was inside the first run, not after it


@pytest.mark.parametrize("fail_at", range(1, RESUME_WRITES + 1))
async def test_a_failed_write_of_a_resume_raises_the_same_error(fail_at: int) -> None:
    store = FailingStore(3)  # the first StepStarted: only WorkflowStarted is recorded
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError):
            await chain().run("wf")
        assert [type(e).__name__ for e in await store.read("wf")] == ["WorkflowStarted"]
        store.fail_at = store.calls + fail_at
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await evflow.resume("wf")
        store_failure(info)
        assert check_log(await store.read("wf")) == "RUNNING"
        assert await evflow.get_status("wf") == "RESUMABLE"
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await evflow.get_output("wf")
        store_failure(info)
        assert await evflow.resume("wf") == 6
    assert check_log(await store.read("wf")) == "SUCCESSFUL"


@pytest.mark.parametrize("fail_at", range(1, APPENDS + 1))
async def test_a_file_store_that_cannot_write_keeps_what_it_has(tmp_path: Path, fail_at: int) -> None:
    path = tmp_path / "store"
    async with evflow.Engine(FailingFileStore(path, fail_at)):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await dag().run("wf")
        store_failure(info)
    # a new engine on the same directory reads an intact log and finishes the workflow
    async with evflow.Engine(FailingFileStore(path)) as engine:
        events = await engine.store.read("wf")
        if events:
            assert check_log(events) == "RUNNING"
            assert await evflow.get_status("wf") == "RESUMABLE"
            assert await evflow.resume("wf") == 10
        else:
            assert await dag().run("wf") == 10
        assert check_log(await engine.store.read("wf")) == "SUCCESSFUL"
