"""The engine core's event listeners (``EngineCore.add_event_listener``): told of every
event the engine records, right after it is folded, and of every live run's end.

Every scenario runs on asyncio and trio (``anyio_backend`` in conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import evflow
from evflow._projection import WorkflowState, replay
from evflow.engine import EngineCore
from evflow.events import Event

pytestmark = pytest.mark.anyio

HANG = 30
BLOCKED: set[str] = set()


@evflow.step(name="twice", max_retries=1)
def twice(wid: str) -> int:
    if wid in BLOCKED:
        BLOCKED.discard(wid)
        raise ValueError("once")
    return 1


@evflow.step(name="parked")
async def parked() -> None:
    await anyio.sleep_forever()


class Recorder:
    """A service that listens to its engine's core."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.told: list[tuple[str, Event, str]] = []
        self.closed: list[str] = []
        core.add_event_listener(self)

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        # the state has folded the event already
        assert state.last_seq >= event.seq
        self.told.append((state.workflow_id, event, state.metadata()["status"]))

    def run_closed(self, workflow_id: str) -> None:
        self.closed.append(workflow_id)


async def test_a_listener_hears_every_event_the_engine_records(anyio_backend: str) -> None:
    wid = f"heard-{anyio_backend}"
    BLOCKED.add(wid)
    async with evflow.Engine("memory://") as engine:
        recorder = engine.service(Recorder)
        await twice.step(wid).run(wid)
        log = [event async for event in evflow.read_events(engine.store, wid)]
    assert [event for w, event, _ in recorder.told if w == wid] == log
    assert [type(e).__name__ for e in log] == [
        "WorkflowStarted",
        "StepStarted",
        "StepFailed",
        "StepStarted",
        "StepFinished",
        "WorkflowFinished",
    ]
    # told after the fold: the status it saw is the status the log gives at that event
    for _, event, status in recorder.told:
        assert status == replay(log, as_of=event.seq).metadata()["status"]
    assert recorder.closed == [wid]


async def test_a_run_that_records_no_end_is_closed_all_the_same(anyio_backend: str, tmp_path: Path) -> None:
    wid = f"parked-{anyio_backend}"
    async with evflow.Engine(tmp_path / "store") as engine:
        recorder = engine.service(Recorder)
        await parked.step().run_async(wid)
        with anyio.fail_after(HANG):
            while (await evflow.get_metadata(wid, "parked"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
        assert recorder.closed == []
    assert [type(e).__name__ for _, e, _ in recorder.told] == ["WorkflowStarted", "StepStarted"]
    assert recorder.closed == [wid]


async def test_a_removed_listener_hears_nothing_more(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        recorder = engine.service(Recorder)
        await twice.step("one").run("one")
        recorder.core.remove_event_listener(recorder)
        await twice.step("two").run("two")
        with pytest.raises(ValueError):
            recorder.core.remove_event_listener(recorder)
    assert {w for w, _, _ in recorder.told} == {"one"}
    assert recorder.closed == ["one"]
