"""``evflow.wait`` (SPEC section 8): run nodes concurrently, end at the first
``num_returns`` (or a timeout); the pending nodes go on running and a later ``wait`` on
them re-runs none, also across a resume.

Durations are short; assertions are on values, the order of recorded events and counts
of executions, never on elapsed wall time.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._codec import Ref
from evflow._events import StepFinished, TimerStarted

pytestmark = pytest.mark.anyio

runs: Counter[str] = Counter()
gates: dict[str, anyio.Event] = {}


@evflow.step
async def slow(label: str, seconds: float) -> str:
    runs[label] += 1
    await anyio.sleep(seconds)
    return label


@evflow.step
async def gated(label: str, gate: str) -> str:
    runs[label] += 1
    await gates[gate].wait()
    return label


@evflow.step
async def boom(label: str) -> str:
    runs[label] += 1
    raise ValueError(f"{label} broke")


@evflow.step(name="rewait")
def rewait(result: tuple[list[str], list[Any]]) -> Any:
    _ready, pending = result
    return evflow.wait(pending, num_returns=len(pending), name="rest")


@evflow.step(name="both")
def both(first: Any, rest: Any) -> list[Any]:
    return [first, rest]


@evflow.step(name="follow")
def follow(result: tuple[list[str], list[Any]]) -> Any:
    ready, pending = result
    return joined.step(ready[0], pending[0])  # a pending node as a dependency


@evflow.step(name="joined")
def joined(a: str, b: str) -> str:
    return f"{a}+{b}"


@evflow.step(name="stray")
def stray() -> Any:
    return evflow.wait([Ref("no-such-step")])


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_the_first_to_end_is_ready_and_the_others_pending(anyio_backend: str) -> None:
    a, b, c = fresh("a"), fresh("b"), fresh("c")
    async with evflow.Engine("memory://") as engine:
        node = evflow.wait([slow.step(a, 0.3), slow.step(b, 0.02), slow.step(c, 0.2)])
        ready, pending = await node.run("wf")
        state = evflow.replay(await engine.store.read("wf"))
        meta = await engine.get_metadata("wf", "wait")
    assert ready == [b]
    by_label = {evflow_args(state, name): name for name in state.steps if name != "wait"}
    assert [p.name for p in pending] == [by_label[a], by_label[c]]  # the recorded step names
    assert meta["step_options"]["step_type"] == "WAIT"
    assert meta["status"] == "SUCCESSFUL"
    # the workflow ended with the wait: the nodes still running were stopped
    assert {state.steps[by_label[a]].status, state.steps[by_label[c]].status} == {"CANCELED"}


def evflow_args(state: evflow.WorkflowState, name: str) -> str:
    from evflow._codec import decode_value

    args, _ = decode_value(state.steps[name].spec.args)
    return str(args[0])


async def test_ready_values_come_in_the_order_the_nodes_ended(anyio_backend: str) -> None:
    a, b, c = fresh("a"), fresh("b"), fresh("c")
    async with evflow.Engine("memory://") as engine:
        node = evflow.wait([slow.step(a, 0.3), slow.step(b, 0.15), slow.step(c, 0.02)], num_returns=2)
        ready, pending = await node.run("wf")
        events = await engine.store.read("wf")
    assert ready == [c, b]
    assert len(pending) == 1
    ended = [e.name for e in events if isinstance(e, StepFinished)]
    assert ended.index("wait") > max(i for i, name in enumerate(ended) if name != "wait")


async def test_waiting_again_on_the_pending_nodes_runs_none_of_them_twice(anyio_backend: str) -> None:
    a, b, c = fresh("a"), fresh("b"), fresh("c")
    async with evflow.Engine("memory://") as engine:
        first = evflow.wait([slow.step(a, 0.2), slow.step(b, 0.02), slow.step(c, 0.1)])
        ready, pending = await rewait.step(first).run("wf")
        state = evflow.replay(await engine.store.read("wf"))
    assert sorted(ready) == sorted([a, c]) and pending == []
    assert runs[a] == runs[b] == runs[c] == 1
    assert state.steps["rest"].parent == "rewait"


async def test_a_pending_node_can_be_a_dependency(anyio_backend: str) -> None:
    a, b = fresh("a"), fresh("b")
    async with evflow.Engine("memory://"):
        out = await follow.step(evflow.wait([slow.step(a, 0.15), slow.step(b, 0.01)])).run("wf")
    assert out == f"{b}+{a}"
    assert runs[a] == runs[b] == 1


async def test_at_the_timeout_the_ready_list_may_be_short(anyio_backend: str) -> None:
    a, b = fresh("a"), fresh("b")
    gate = fresh("gate")
    gates[gate] = anyio.Event()
    async with evflow.Engine("memory://") as engine:
        node = evflow.wait([gated.step(a, gate), slow.step(b, 0.01)], num_returns=2, timeout=0.1)
        ready, pending = await node.run("wf")
        meta = await engine.get_metadata("wf", "wait")
        events = await engine.store.read("wf")
    assert ready == [b] and len(pending) == 1
    timer = next(e for e in events if isinstance(e, TimerStarted))
    assert meta["stats"]["wake_time"] == timer.wake_time == meta["stats"]["start_time"] + 0.1
    assert meta["stats"]["end_time"] >= timer.wake_time


async def test_a_node_that_fails_fails_the_workflow(anyio_backend: str) -> None:
    a, b = fresh("a"), fresh("b")
    async with evflow.Engine("memory://"):
        with pytest.raises(evflow.WorkflowExecutionError) as raised:
            await evflow.wait([slow.step(a, 5), boom.options(max_retries=0).step(b)]).run("wf")
    assert isinstance(raised.value.__cause__, ValueError)


async def test_a_reference_to_a_step_the_workflow_has_not_recorded_is_refused(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        with pytest.raises(evflow.WorkflowExecutionError) as raised:
            await stray.options(max_retries=0).step().run("wf")
        assert isinstance(raised.value.__cause__, ValueError)
        assert "no-such-step" in str(raised.value.__cause__)
        assert set(evflow.replay(await engine.store.read("wf")).steps) == {"stray"}


def untyped(value: object) -> Any:
    """A deliberately wrong argument, past the type checker."""
    return value


@pytest.mark.parametrize(
    ("build", "error"),
    [
        pytest.param(lambda: evflow.wait([]), ValueError, id="empty"),
        pytest.param(lambda: evflow.wait(untyped(slow.step("x", 1))), TypeError, id="not-a-list"),
        pytest.param(lambda: evflow.wait([1]), TypeError, id="not-a-node"),
        pytest.param(lambda: evflow.wait([n := slow.step("x", 1), n]), ValueError, id="twice"),
        pytest.param(lambda: evflow.wait([slow.step("x", 1)], num_returns=0), ValueError, id="zero"),
        pytest.param(lambda: evflow.wait([slow.step("x", 1)], num_returns=2), ValueError, id="too-many"),
        pytest.param(lambda: evflow.wait([slow.step("x", 1)], num_returns=True), TypeError, id="bool"),
        pytest.param(lambda: evflow.wait([slow.step("x", 1)], timeout=-1), ValueError, id="negative-timeout"),
        pytest.param(lambda: evflow.wait([slow.step("x", 1)], name=""), ValueError, id="empty-name"),
    ],
)
def test_bad_arguments_fail_when_the_node_is_built(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


@pytest.mark.parametrize("storage", ["memory", "file"])
async def test_across_a_resume_the_pending_nodes_run_once_and_ended_ones_not_again(
    anyio_backend: str, storage: str, tmp_path: Path
) -> None:
    a, b = fresh("a"), fresh("b")
    gate = fresh("gate")
    gates[gate] = anyio.Event()
    store: Any = evflow.stores.MemoryStore() if storage == "memory" else tmp_path
    async with evflow.Engine(store) as engine:
        first = evflow.wait([gated.step(a, gate), slow.step(b, 0.01)], name="first")
        await rewait.step(first).run_async("wf")

        async def rest_started() -> bool:
            return "rest" in evflow.replay(await engine.store.read("wf")).steps

        with anyio.fail_after(20):
            while not await rest_started():
                await anyio.sleep(0.01)
        assert (await engine.get_metadata("wf", "rest"))["status"] == "RUNNING"
    async with evflow.Engine(store) as engine:
        assert await engine.get_status("wf") == "RESUMABLE"
        handle = await engine.resume_async("wf")
        with anyio.fail_after(20):
            while runs[a] < 2:  # the interrupted node runs again (it had not ended) ...
                await anyio.sleep(0.01)
        gates[gate].set()
        ready, pending = await handle
        state = evflow.replay(await engine.store.read("wf"))
    assert ready == [a] and pending == []
    assert runs[b] == 1  # ... the one that had ended keeps its value
    assert runs[a] == 2
    assert [e.name for e in await _finished(store, tmp_path, storage)].count("first") == 1
    assert state.status == "SUCCESSFUL"


async def _finished(store: Any, tmp_path: Path, storage: str) -> list[StepFinished]:
    if storage == "memory":
        events = await store.read("wf")
    else:
        async with evflow.stores.FileStore(tmp_path, read_only=True) as reader:
            events = await reader.read("wf")
    return [e for e in events if isinstance(e, StepFinished)]


async def test_the_value_of_a_wait_feeds_a_step_like_any_value(anyio_backend: str) -> None:
    a, b = fresh("a"), fresh("b")
    async with evflow.Engine("memory://"):
        first, rest = await both.step(
            evflow.wait([slow.step(a, 0.01)]), evflow.wait([slow.step(b, 0.01)], timeout=5)
        ).run("wf")
    assert first == ([a], []) and rest == ([b], [])
