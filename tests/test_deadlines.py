"""Deadlines (SPEC section 9): ``timeout=`` on run / run_async / enqueue is a recorded
deadline that cancels the workflow (``WorkflowTimeoutError``), also across restarts; and
callers bounding their own wait (``get_output(timeout=)``, ``handle.result(timeout=)``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

import evflow
from evflow.stores import MemoryStore

pytestmark = pytest.mark.anyio

gates: dict[str, anyio.Event] = {}
slow_queue = evflow.Queue("test-deadline-queue", concurrency=1)


@evflow.step
async def gated(key: str) -> str:
    await gates[key].wait()
    return key


def new_gate() -> str:
    key = uuid.uuid4().hex
    gates[key] = anyio.Event()
    return key


async def wait_status(engine: evflow.Engine, wid: str, status: str) -> None:
    with anyio.fail_after(30):
        while await engine.get_status(wid) != status:
            await anyio.sleep(0.01)


# -- the caller's own bound ------------------------------------------------------------------------


async def test_get_output_with_a_timeout_raises_and_leaves_the_workflow_running() -> None:
    key = new_gate()
    async with evflow.Engine("memory://") as engine:
        handle = await gated.step(key).run_async("wf")
        with pytest.raises(TimeoutError):
            await evflow.get_output("wf", timeout=0.05)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.05)
        assert await engine.get_status("wf") == "RUNNING"
        gates[key].set()
        assert await handle.result(timeout=30) == key
        assert await evflow.get_output("wf", timeout=30) == key


# -- recorded deadlines --------------------------------------------------------------------------------


async def test_run_with_a_timeout_cancels_the_workflow_at_its_deadline() -> None:
    key = new_gate()
    async with evflow.Engine("memory://") as engine:
        with pytest.raises(evflow.WorkflowTimeoutError) as info:
            await gated.step(key).run("wf", timeout=0.1)
        assert isinstance(info.value, evflow.WorkflowCancellationError)
        assert isinstance(info.value, TimeoutError)
        meta = await engine.get_metadata("wf")
        assert meta["status"] == "CANCELED"
        assert meta["deadline"] == info.value.deadline
        assert (await engine.get_metadata("wf", gated.name))["status"] == "CANCELED"
        with pytest.raises(evflow.WorkflowTimeoutError):
            await engine.get_output("wf")


async def test_a_workflow_that_ends_in_time_is_not_touched_by_its_deadline() -> None:
    key = new_gate()
    gates[key].set()
    async with evflow.Engine("memory://") as engine:
        assert await gated.step(key).run("wf", timeout=60) == key
        assert await engine.get_status("wf") == "SUCCESSFUL"


async def test_a_plain_cancel_is_not_a_timeout() -> None:
    key = new_gate()
    async with evflow.Engine("memory://"):
        handle = await gated.step(key).run_async("wf", timeout=3600)
        await handle.cancel()
        with pytest.raises(evflow.WorkflowCancellationError) as info:
            await handle.result()
        assert not isinstance(info.value, evflow.WorkflowTimeoutError)


async def test_a_pending_workflow_past_its_deadline_is_canceled_and_never_starts() -> None:
    blocker, late = new_gate(), new_gate()
    async with evflow.Engine("memory://") as engine:
        first = await slow_queue.enqueue(gated.step(blocker))
        doomed = await slow_queue.enqueue(gated.step(late), timeout=0.1)
        with pytest.raises(evflow.WorkflowTimeoutError):
            await doomed.result()
        assert "start_time" not in (await engine.get_metadata(doomed.workflow_id))["stats"]
        gates[blocker].set()
        assert await first.result(timeout=30) == blocker


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_a_deadline_survives_a_restart(kind: str, tmp_path: Path) -> None:
    key = new_gate()
    memory = MemoryStore()

    def storage() -> evflow.Store | str:
        return memory if kind == "memory" else str(tmp_path / "store")

    async with evflow.Engine(storage()) as engine:
        await gated.step(key).run_async("wf", timeout=0.3)
        deadline = (await engine.get_metadata("wf"))["deadline"]
    # closed before the deadline: the workflow is RESUMABLE, its deadline recorded
    async with evflow.Engine(storage()) as engine:
        await wait_status(engine, "wf", "CANCELED")
        with pytest.raises(evflow.WorkflowTimeoutError) as info:
            await engine.get_output("wf")
        assert info.value.deadline == deadline


@pytest.mark.parametrize("timeout", [0, -1, "soon", True])
async def test_a_bad_timeout_is_refused_before_anything_is_written(timeout: object) -> None:  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    async with evflow.Engine("memory://") as engine:
        with pytest.raises(ValueError):
            await gated.step("x").run_async("wf", timeout=timeout)  # type: ignore[arg-type]
        assert await engine.list_all() == []
