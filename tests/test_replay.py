"""Log replay tools: ``evflow.read_events`` (read-only, safe while an engine writes) and
``evflow.replay(events, as_of=...)``, whose metadata equals ``get_metadata`` at that point."""

from __future__ import annotations

from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest

import cli_workflows
import evflow
from evflow._events import StepStarted
from evflow.stores import MemoryStore

pytestmark = pytest.mark.anyio


async def _collect(storage: Any, workflow_id: str, **kwargs: Any) -> list[Any]:
    return [event async for event in evflow.read_events(storage, workflow_id, **kwargs)]


async def _step_names(engine: evflow.Engine, workflow_id: str) -> list[str]:
    return list(evflow.replay(await engine.store.read(workflow_id)).steps)


@pytest.mark.parametrize("dag", [pytest.param("ok", id="successful"), pytest.param("failing", id="failed")])
async def test_replay_of_a_finished_workflow_equals_get_metadata(tmp_path: Path, dag: str) -> None:
    store = tmp_path / "store"
    async with evflow.Engine(store) as engine:
        node = cli_workflows.ok_dag() if dag == "ok" else cli_workflows.failing_dag()
        with suppress(evflow.WorkflowExecutionError):
            await node.run("wf", metadata={"k": [1, 2]})
        expected = await engine.get_metadata("wf")
        names = await _step_names(engine, "wf")
        expected_steps = {name: await engine.get_metadata("wf", name) for name in names}
    events = await _collect(store, "wf")
    state = evflow.replay(events)
    assert state.metadata() == expected
    assert {name: state.metadata(name) for name in names} == expected_steps
    assert expected["status"] == ("SUCCESSFUL" if dag == "ok" else "FAILED")


async def test_replay_as_of_equals_get_metadata_at_that_point(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    store = MemoryStore()
    async with evflow.Engine(store) as engine:
        handle = await cli_workflows.gated_dag(gate).run_async("wf", metadata={"phase": "mid"})
        await cli_workflows.wait_started(gate)
        # Nothing else happens while wait_file waits: this is the state right after its StepStarted.
        then = await engine.get_metadata("wf")
        then_steps = {name: await engine.get_metadata("wf", name) for name in ("add", "wait_file")}
        await anyio.Path(gate).touch()
        assert await handle == 2
        now = await engine.get_metadata("wf")
    events = await _collect(store, "wf")
    started = next(e.seq for e in events if isinstance(e, StepStarted) and e.name == "wait_file")
    past = evflow.replay(events, as_of=started)
    assert then["status"] == "RUNNING" and "end_time" not in then["stats"]
    assert past.metadata() == then
    assert {name: past.metadata(name) for name in then_steps} == then_steps
    assert evflow.replay(events).metadata() == now
    # The prefix before WorkflowFinished: running, no end time.
    before_end = evflow.replay(events, as_of=events[-1].seq - 1).metadata()
    assert before_end["status"] == "RUNNING" and "end_time" not in before_end["stats"]


async def test_read_events_after(tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path / "store"):
        await cli_workflows.ok_dag().run("wf")
    events = await _collect(tmp_path / "store", "wf")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert type(events[0]).__name__ == "WorkflowStarted"
    assert type(events[-1]).__name__ == "WorkflowFinished"
    tail = await _collect(tmp_path / "store", "wf", after=3)
    assert tail == events[3:]
    assert await _collect(tmp_path / "store", "wf", after=len(events)) == []


async def test_read_events_file_url(tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path / "store"):
        await cli_workflows.ok_dag().run("wf")
    assert await _collect(f"file://{tmp_path / 'store'}", "wf") == await _collect(tmp_path / "store", "wf")


async def test_read_events_unknown_workflow(tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path / "store"):
        await cli_workflows.ok_dag().run("wf")
    with pytest.raises(evflow.WorkflowNotFoundError, match="nope"):
        await _collect(tmp_path / "store", "nope")
    with pytest.raises(evflow.WorkflowNotFoundError):
        await _collect(tmp_path / "store", "nope", after=2)
    with pytest.raises(evflow.WorkflowNotFoundError):
        await _collect(tmp_path / "empty", "nope", follow=True)


@pytest.mark.parametrize(
    ("workflow_id", "after", "error"),
    [
        pytest.param("", 0, ValueError, id="empty-id"),
        pytest.param(3, 0, TypeError, id="non-str-id"),
        pytest.param("wf", -1, ValueError, id="negative-after"),
    ],
)
async def test_read_events_bad_arguments(
    tmp_path: Path, workflow_id: Any, after: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        evflow.read_events(tmp_path, workflow_id, after=after)


async def test_read_events_while_the_engine_writes_the_same_store(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    store = tmp_path / "store"
    async with evflow.Engine(store):
        handle = await cli_workflows.gated_dag(gate).run_async("wf")
        await cli_workflows.wait_started(gate)
        # A reader takes no lock: this works while the engine holds it. The running step's
        # StepStarted reaches the log with the next commit (a few ms at most).
        with anyio.fail_after(10):
            while type((events := await _collect(store, "wf"))[-1]).__name__ != "StepStarted":
                await anyio.sleep(0.005)
        assert evflow.replay(events).status == "RUNNING"
        await anyio.Path(gate).touch()
        assert await handle == 2
    assert type((await _collect(store, "wf"))[-1]).__name__ == "WorkflowFinished"


async def test_follow_yields_new_events_until_the_run_ends(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    store = tmp_path / "store"
    seen: list[Any] = []
    async with evflow.Engine(store):
        await cli_workflows.gated_dag(gate).run_async("wf")
        await cli_workflows.wait_started(gate)
        async with evflow.read_events(store, "wf", follow=True) as stream:
            async for event in stream:
                seen.append(event)
                if isinstance(event, StepStarted) and event.name == "wait_file":
                    await anyio.Path(gate).touch()  # only now can the rest of the run happen
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert type(seen[-1]).__name__ == "WorkflowFinished"
    assert seen == await _collect(store, "wf")


async def test_follow_of_a_resumable_workflow_ends(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    store = tmp_path / "store"
    async with evflow.Engine(store):
        await cli_workflows.gated_dag(gate).run_async("wf")
        await cli_workflows.wait_started(gate)
    # No engine writes the store: nothing would come, so the stream ends.
    events = await _collect(store, "wf", follow=True)
    assert type(events[-1]).__name__ == "StepStarted"
    assert evflow.replay(events, live=False).status == "RESUMABLE"


async def test_follow_can_stop_early(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    store = tmp_path / "store"
    async with evflow.Engine(store):
        await cli_workflows.gated_dag(gate).run_async("wf")
        await cli_workflows.wait_started(gate)
        async with aclosing(evflow.read_events(store, "wf", follow=True)) as stream:
            async for event in stream:
                assert event.seq == 1
                break
        await anyio.Path(gate).touch()
        assert await evflow.get_output("wf") == 2


async def test_read_events_from_a_store_instance(tmp_path: Path) -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        await cli_workflows.ok_dag().run("wf")
        events = await _collect(store, "wf")
    assert events == await store.read("wf")
    # the reader did not open or close it: nothing still counts the engine as live
    assert events and await store.owner_alive(store.owner_id) is False


async def test_read_events_of_a_damaged_log(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with evflow.Engine(store):
        await cli_workflows.ok_dag().run("wf")
        await cli_workflows.ok_dag().run("other")
    log = store / "workflows" / "wf.log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(evflow.CorruptLogError, match="wf"):
        await _collect(store, "wf")
    assert evflow.replay(await _collect(store, "other")).status == "SUCCESSFUL"


async def test_replay_needs_no_engine_and_no_io(tmp_path: Path) -> None:
    async with evflow.Engine(tmp_path / "store"):
        await cli_workflows.ok_dag().run("wf")
    events = await _collect(tmp_path / "store", "wf")
    # Pure and synchronous: the same events give the same metadata, any number of times.
    assert evflow.replay(events).metadata() == evflow.replay(list(events)).metadata()
    with pytest.raises(ValueError):
        evflow.replay([])
    assert evflow.replay(events, as_of=1).metadata()["stats"] == {"start_time": events[0].time}
