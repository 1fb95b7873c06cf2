"""Virtual actors (SPEC section 5): durable objects whose writer calls are steps.

Every async scenario runs on asyncio and trio (``anyio_backend`` in conftest.py). The
SIGKILL test runs a child process from ``tests/actor_workflows.py`` on a file store.
"""

# Type checkers do not see what @evflow.virtual_actor adds to a class (get_or_create, and
# .step()/.options() on self.method), so attribute checks are off for this file.
# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._codec import decode_value
from evflow._events import ActorCallSubmitted, StepFinished, StepStarted, WorkflowStarted
from evflow.stores import MemoryStore

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:  # the child gets it on PYTHONPATH
    sys.path.insert(0, str(TESTS_DIR))
import actor_workflows  # noqa: E402

#: A bound on waiting for something that must happen; it only turns a hang into a failure.
HANG = 30
SLEEP = 0.05

#: Events a test creates in its own event loop and a method waits on.
EVENTS: dict[str, anyio.Event] = {}
#: What methods saw, for tests to inspect.
SEEN: list[Any] = []


# -- the seed examples ------------------------------------------------------------------------


@evflow.virtual_actor
class Actor:
    def __init__(self, v: int) -> None:
        self.v = v

    def add_v(self, v: int) -> int:
        time.sleep(SLEEP)
        self.v += v
        return self.v

    @evflow.virtual_actor.readonly
    def get_v(self) -> int:
        return self.v


@evflow.virtual_actor
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self, n: int) -> Any:
        self.n += 1
        if n - 1 > 0:
            return self.incr.options(name="incr", metadata={"current_n": self.n}).step(n - 1)
        return self.n


# -- a general-purpose actor ----------------------------------------------------------------------


@evflow.virtual_actor
class Box:
    def __init__(self, items: list[Any] | None = None) -> None:
        self.items = list(items or [])

    def append(self, x: Any) -> list[Any]:
        self.items.append(x)
        return list(self.items)

    async def append_slowly(self, x: Any, pause: float) -> list[Any]:
        await anyio.sleep(pause)
        self.items.append(x)
        return list(self.items)

    async def append_when(self, x: Any, key: str) -> list[Any]:
        self.items.append(f"half of {x}")  # never recorded unless the call ends
        await EVENTS[key].wait()
        self.items[-1] = x
        return list(self.items)

    async def chain(self, xs: list[Any], key: str = "") -> Any:
        x = xs[0]
        if x == "wait":
            await EVENTS[key].wait()
        SEEN.append(x)
        self.items.append(x)
        if len(xs) > 1:
            return self.chain.options(name="link").step(xs[1:], key)
        return list(self.items)

    def fail_after_mutating(self, x: Any) -> None:
        self.items.append(x)
        raise ValueError(f"no {x}")

    def flaky_append(self, x: Any, failures: int) -> list[Any]:
        SEEN.append(list(self.items))
        self.items.append(x)
        if len(SEEN) <= failures:
            raise RuntimeError(f"attempt {len(SEEN)} fails")
        return list(self.items)

    def note(self, x: Any) -> int:
        evflow.attach_metadata({"noted": x})
        self.items.append(x)
        return len(self.items)

    def keep_a_set(self) -> int:
        self.items.append({"a set"})
        return len(self.items)

    @evflow.virtual_actor.readonly
    def snapshot(self) -> list[Any]:
        return list(self.items)

    @evflow.virtual_actor.readonly
    def mutate(self) -> list[Any]:
        self.items.append("from readonly")
        return list(self.items)

    @evflow.virtual_actor.readonly
    async def rendezvous(self, mine: str, other: str) -> int:
        EVENTS[mine].set()
        await EVENTS[other].wait()
        return len(self.items)

    @evflow.virtual_actor.readonly
    def returns_node(self) -> Any:
        return self.append.step("never")

    @evflow.virtual_actor.readonly
    def broken(self) -> None:
        raise KeyError("nope")


def box_name(method: str) -> str:
    return f"{Box.__module__}.Box.{method}"


def index_of(name: str, base: str) -> int:
    return 0 if name == base else int(name[len(base) + 1 :])


async def wait_step_status(actor_id: str, name: str, status: str) -> None:
    with anyio.fail_after(HANG):
        while True:
            try:
                if (await evflow.get_metadata(actor_id, name))["status"] == status:
                    return
            except evflow.StepNotFoundError:
                pass  # a chained step is named when its parent finishes
            await anyio.sleep(0.005)


@pytest.fixture(autouse=True)
def _fresh_module_state() -> None:
    EVENTS.clear()
    SEEN.clear()


# -- the seed examples, in awaitable form --------------------------------------------------------


@pytest.mark.anyio
async def test_named_calls_get_numbered_names_with_their_own_metadata_and_stats() -> None:
    async with evflow.Engine("memory://"):
        actor = await Actor.get_or_create("vid", 0)
        assert await actor.add_v.options(name="add", metadata={"m1": "v1"}).run(10) == 10
        assert await actor.add_v.options(name="add", metadata={"m1": "v2"}).run(10) == 20
        assert await actor.add_v.options(name="add", metadata={"m1": "v3"}).run(10) == 30
        assert await actor.get_v.run() == 30
        for name, value in [("add", "v1"), ("add_1", "v2"), ("add_2", "v3")]:
            meta = await evflow.get_metadata("vid", name)
            assert meta["name"] == name
            assert meta["status"] == "SUCCESSFUL"
            assert meta["user_metadata"] == {"m1": value}
            assert meta["step_options"]["step_type"] == "ACTOR_METHOD"
            stats = meta["stats"]
            assert stats["end_time"] - stats["start_time"] >= SLEEP
        workflow = await evflow.get_metadata("vid")
        assert workflow["status"] == "SUCCESSFUL"
        assert workflow["stats"]["end_time"] - workflow["stats"]["start_time"] >= SLEEP


@pytest.mark.anyio
async def test_a_recursive_chain_names_each_call_and_keeps_the_outer_metadata() -> None:
    async with evflow.Engine("memory://"):
        counter = await Counter.get_or_create("counter")
        assert await counter.incr.options(name="incr", metadata={"outer_k": "outer_v"}).run(5) == 5
        outer = await evflow.get_metadata("counter", "incr")
        assert outer["user_metadata"] == {"outer_k": "outer_v"}
        previous_end = outer["stats"]["end_time"]
        for i in range(1, 5):
            meta = await evflow.get_metadata("counter", f"incr_{i}")
            assert meta["user_metadata"] == {"current_n": i}
            assert meta["status"] == "SUCCESSFUL"
            assert meta["step_options"]["step_type"] == "ACTOR_METHOD"
            assert meta["stats"]["start_time"] >= previous_end  # a continuation starts after its parent
            previous_end = meta["stats"]["end_time"]
        with pytest.raises(evflow.StepNotFoundError):
            await evflow.get_metadata("counter", "incr_5")
        # the counter runs across calls
        assert await counter.incr.options(name="incr").run(1) == 6
        assert (await evflow.get_metadata("counter", "incr_5"))["user_metadata"] == {}


# -- naming, ordering, state ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_default_names_are_module_class_method_and_count_across_calls() -> None:
    @evflow.virtual_actor
    class Local:
        def ping(self) -> str:
            return "pong"

    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box")
        await box.append.run(1)
        await box.append.run(2)
        await box.append.options(name="custom").run(3)
        await box.append.run(4)
        state_names = [box_name("append"), box_name("append") + "_1", "custom", box_name("append") + "_2"]
        for name in state_names:
            assert (await evflow.get_metadata("box", name))["status"] == "SUCCESSFUL"
        local = await Local.get_or_create("local")
        assert await local.ping.run() == "pong"
        expected = (
            f"{__name__}.test_default_names_are_module_class_method_and_count_across_calls.locals.Local.ping"
        )
        assert (await evflow.get_metadata("local", expected))["step_options"]["name"] == expected


@pytest.mark.anyio
async def test_concurrent_writer_calls_apply_one_at_a_time_in_submission_order() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box")
        count = 20
        handles: dict[int, Any] = {}

        async def submit(i: int) -> None:
            # later submissions sleep less: any reordering or overlap would show
            handles[i] = await box.append_slowly.options(name="put").run_async(i, (count - i) * 0.002)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(submit, i)
        order = sorted(handles, key=lambda i: index_of(handles[i].name, "put"))
        results = {i: await handle for i, handle in handles.items()}
        assert await box.snapshot.run() == order
        for position, i in enumerate(order):
            assert results[i] == order[: position + 1]
        events = await store.read("box")
        submitted = [e.step.name for e in events if isinstance(e, ActorCallSubmitted)]
        started = [e.name for e in events if isinstance(e, StepStarted)]
        assert started == submitted
        # one run per call, and the runs do not overlap
        for first, second in itertools.pairwise(order):
            a = await evflow.get_metadata("box", handles[first].name)
            b = await evflow.get_metadata("box", handles[second].name)
            assert a["stats"]["end_time"] <= b["stats"]["start_time"]

        # sequential submission from one task: the loop's order
        box2 = await Box.get_or_create("box2")
        sequential = [await box2.append_slowly.run_async(i, (10 - i) * 0.002) for i in range(10)]
        assert await sequential[-1] == list(range(10))


@pytest.mark.anyio
async def test_state_and_names_carry_over_to_a_new_engine() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box", [1])
        assert await box.append.run(2) == [1, 2]
    async with evflow.Engine(store):
        assert await evflow.get_status("box") == "SUCCESSFUL"
        again = await evflow.get_actor("box")
        assert await again.snapshot.run() == [1, 2]
        assert await again.append.run(3) == [1, 2, 3]
        assert (await evflow.get_metadata("box", box_name("append") + "_1"))["status"] == "SUCCESSFUL"
        # an existing actor ignores get_or_create's arguments
        same = await Box.get_or_create("box", ["ignored"])
        assert await same.snapshot.run() == [1, 2, 3]


@pytest.mark.anyio
async def test_every_writer_step_records_the_state_after_it_chained_steps_included() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box")
        assert await box.chain.options(name="link").run(["a", "b", "c"]) == ["a", "b", "c"]
        events = await store.read("box")
    first = events[0]
    assert isinstance(first, WorkflowStarted)
    assert first.kind == "actor"
    assert first.actor_class == f"{Box.__module__}:Box"
    assert first.actor_state is not None
    assert decode_value(first.actor_state) == {"items": []}
    states = {
        e.name: decode_value(e.actor_state) for e in events if isinstance(e, StepFinished) and e.actor_state
    }
    assert states == {
        "link": {"items": ["a"]},
        "link_1": {"items": ["a", "b"]},
        "link_2": {"items": ["a", "b", "c"]},
    }


@pytest.mark.anyio
async def test_status_is_running_during_a_call_and_each_call_is_a_run() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box")
        assert await evflow.get_status("box") == "SUCCESSFUL"
        assert (await evflow.get_metadata("box"))["stats"] == {}
        await box.append.run(0)
        first = (await evflow.get_metadata("box"))["stats"]
        EVENTS["go"] = anyio.Event()
        handle = await box.append_when.run_async(1, "go")
        assert await evflow.get_status("box") == "RUNNING"
        await wait_step_status("box", handle.name, "RUNNING")
        running = await evflow.get_metadata("box")
        assert running["status"] == "RUNNING"
        assert "end_time" not in running["stats"]
        assert running["stats"]["start_time"] >= first["end_time"]
        EVENTS["go"].set()
        assert await handle == [0, 1]
        done = await evflow.get_metadata("box")
        assert done["status"] == "SUCCESSFUL"
        assert done["stats"]["end_time"] >= done["stats"]["start_time"] == running["stats"]["start_time"]
        # with no call left, resume and get_output give the last call's value
        assert await evflow.get_output("box") == [0, 1]
        assert await evflow.resume("box") == [0, 1]


@pytest.mark.anyio
async def test_attach_metadata_inside_a_method() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box")
        await box.note.options(name="note", metadata={"given": 1}).run("x")
        assert (await evflow.get_metadata("box", "note"))["user_metadata"] == {"given": 1, "noted": "x"}


# -- readonly calls ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_readonly_calls_discard_mutations_and_record_nothing() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box", ["a"])
        await box.append.run("b")
        before = len(await store.read("box"))
        metadata = await evflow.get_metadata("box")
        assert await box.mutate.run() == ["a", "b", "from readonly"]
        handle = await box.mutate.run_async()
        assert isinstance(handle, evflow.WorkflowHandle)
        assert await handle == ["a", "b", "from readonly"]
        assert await box.snapshot.run() == ["a", "b"]
        assert len(await store.read("box")) == before
        assert await evflow.get_metadata("box") == metadata
        # no name was consumed
        await box.append.run("c")
        assert (await evflow.get_metadata("box", box_name("append") + "_1"))["status"] == "SUCCESSFUL"
        with pytest.raises(evflow.StepNotFoundError):
            await evflow.get_metadata("box", box_name("mutate"))


@pytest.mark.anyio
async def test_readonly_calls_run_concurrently_and_read_the_recorded_state() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box", [1, 2])
        EVENTS.update(a=anyio.Event(), b=anyio.Event(), go=anyio.Event())
        results: list[int] = []

        async def call(mine: str, other: str) -> None:
            results.append(await box.rendezvous.run(mine, other))

        # each call waits for the other to have started: they only finish if concurrent
        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", "b")
                tg.start_soon(call, "b", "a")
        assert results == [2, 2]

        # while a writer call runs, readers see the last recorded state and the status stays
        handle = await box.append_when.run_async(3, "go")
        await wait_step_status("box", handle.name, "RUNNING")
        assert await box.snapshot.run() == [1, 2]
        assert await evflow.get_status("box") == "RUNNING"
        EVENTS["go"].set()
        assert await handle == [1, 2, 3]
        assert await box.snapshot.run() == [1, 2, 3]


@pytest.mark.anyio
async def test_readonly_errors() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box")
        with pytest.raises(TypeError, match="readonly"):
            await box.returns_node.run()
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await box.broken.run()
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(TypeError, match="readonly"):
            box.snapshot.options(name="x")
        assert await evflow.get_status("box") == "SUCCESSFUL"

    @evflow.virtual_actor
    class Chainer:
        @evflow.virtual_actor.readonly
        def look(self) -> int:
            return 1

        def chain_a_reader(self) -> Any:
            return self.look.step()

        def direct(self) -> int:
            return int(self.look()) + 1

    async with evflow.Engine("memory://"):
        chainer = await Chainer.get_or_create("chainer")
        assert await chainer.direct.run() == 2  # inside the class a method is a plain method
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await chainer.chain_a_reader.options(max_retries=0).run()
        assert isinstance(info.value.__cause__, TypeError)


# -- failure, retry, cancel -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_failed_call_leaves_the_state_and_the_next_call_works() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box", ["a"])
        with pytest.raises(evflow.WorkflowExecutionError, match="no b") as info:
            await box.fail_after_mutating.options(name="bad", max_retries=0).run("b")
        assert isinstance(info.value.__cause__, ValueError)
        assert await evflow.get_status("box") == "FAILED"
        workflow = await evflow.get_metadata("box")
        assert workflow["status"] == "FAILED"
        assert "end_time" in workflow["stats"]
        step = await evflow.get_metadata("box", "bad")
        assert step["status"] == "FAILED"
        assert "end_time" in step["stats"]
        assert await box.snapshot.run() == ["a"]
        assert await box.append.run("c") == ["a", "c"]
        assert await evflow.get_status("box") == "SUCCESSFUL"
        # an earlier call's failure stays on its step
        assert (await evflow.get_metadata("box", "bad"))["status"] == "FAILED"
        # resume_all(include_failed=True) has nothing to re-run for an actor
        with pytest.raises(evflow.WorkflowExecutionError):
            await box.fail_after_mutating.options(max_retries=0).run("d")
        assert [wid for wid, _ in await evflow.resume_all(include_failed=True)] == ["box"]
        assert await box.snapshot.run() == ["a", "c"]


@pytest.mark.anyio
async def test_each_retry_starts_from_the_recorded_state() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box", ["a"])
        assert await box.flaky_append.options(max_retries=3).run("b", 2) == ["a", "b"]
        assert SEEN == [["a"], ["a"], ["a"]]
        SEEN.clear()
        result = await box.flaky_append.options(max_retries=0, catch_exceptions=True).run("c", 1)
        value, error = result
        assert value is None
        assert isinstance(error, RuntimeError)
        assert await box.snapshot.run() == ["a", "b"]
        assert await evflow.get_status("box") == "SUCCESSFUL"


@pytest.mark.anyio
async def test_cancel_stops_the_running_call_and_the_queued_ones() -> None:
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box", ["a"])
        EVENTS["never"] = anyio.Event()
        running = await box.append_when.run_async("b", "never")
        queued = await box.append.run_async("c")
        await wait_step_status("box", running.name, "RUNNING")
        await evflow.cancel("box")
        assert await evflow.get_status("box") == "CANCELED"
        assert "end_time" not in (await evflow.get_metadata("box"))["stats"]
        with pytest.raises(evflow.WorkflowCancellationError):
            await running
        with pytest.raises(evflow.WorkflowCancellationError):
            await queued
        assert queued.name is not None and running.name is not None
        assert (await evflow.get_metadata("box", running.name))["status"] == "CANCELED"
        assert (await evflow.get_metadata("box", queued.name))["status"] == "CANCELED"
        assert await box.snapshot.run() == ["a"]
        assert await evflow.resume_all() == []
        # the actor lives on: a new call is a new run
        assert await box.append.run("d") == ["a", "d"]
        assert await evflow.get_status("box") == "SUCCESSFUL"


# -- interruption and resume -------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_interrupted_chain_resumes_from_its_last_recorded_state() -> None:
    store = MemoryStore()
    EVENTS["go"] = anyio.Event()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box")
        chained = await box.chain.options(name="link").run_async(["a", "b", "wait", "c"], "go")
        queued = await box.append.options(name="queued").run_async("d")
        await wait_step_status("box", "link_2", "RUNNING")
    # the engine is gone: the call did not end and the queued one never ran
    with pytest.raises(evflow.WorkflowNotRunningError):
        await chained
    with pytest.raises(evflow.WorkflowNotRunningError):
        await queued
    assert SEEN == ["a", "b"]
    async with evflow.Engine(store):
        assert await evflow.get_status("box") == "RESUMABLE"
        assert (await evflow.get_metadata("box", "link_1"))["status"] == "SUCCESSFUL"
        assert (await evflow.get_metadata("box", "link_2"))["status"] == "RESUMABLE"
        assert (await evflow.get_metadata("box", "queued"))["status"] == "PENDING"
        box = await evflow.get_actor("box")
        assert await box.snapshot.run() == ["a", "b"]
        EVENTS["go"].set()
        resumed = await evflow.resume_all()
        assert [wid for wid, _ in resumed] == ["box"]
        assert await resumed[0][1] == ["a", "b", "wait", "c", "d"]
        assert SEEN == ["a", "b", "wait", "c"]  # the recorded links did not run again
        assert await evflow.get_output("box", name="link") == ["a", "b", "wait", "c"]
        assert await evflow.get_status("box") == "SUCCESSFUL"
        events = await store.read("box")
        resumes = [e for e in events if isinstance(e, WorkflowStarted) and e.resume]
        assert len(resumes) == 3  # a run per call: the chain's twice (it was cut off), the queued one's
        # the pure fold agrees with the engine
        replayed = evflow.replay(events)
        assert replayed.metadata() == await evflow.get_metadata("box")
        for name in replayed.steps:
            assert replayed.metadata(name) == await evflow.get_metadata("box", name)


@pytest.mark.anyio
async def test_a_new_call_on_a_resumable_actor_runs_after_the_waiting_ones() -> None:
    store = MemoryStore()
    EVENTS["go"] = anyio.Event()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box")
        await box.append_when.options(name="first").run_async("a", "go")
        await wait_step_status("box", "first", "RUNNING")
    EVENTS["go"].set()
    async with evflow.Engine(store):
        box = await evflow.get_actor("box")
        assert await box.append.run("b") == ["a", "b"]


@pytest.mark.anyio
async def test_cancel_a_resumable_actor_drops_its_waiting_calls() -> None:
    store = MemoryStore()
    EVENTS["never"] = anyio.Event()
    async with evflow.Engine(store):
        box = await Box.get_or_create("box", ["a"])
        await box.append_when.options(name="cut").run_async("b", "never")
        await box.append.options(name="waiting").run_async("c")
        await wait_step_status("box", "cut", "RUNNING")
    async with evflow.Engine(store):
        assert await evflow.get_status("box") == "RESUMABLE"
        await evflow.cancel("box")
        assert await evflow.get_status("box") == "CANCELED"
        assert (await evflow.get_metadata("box", "cut"))["status"] == "CANCELED"
        assert (await evflow.get_metadata("box", "waiting"))["status"] == "CANCELED"
        with pytest.raises(evflow.WorkflowCancellationError):
            await evflow.resume("box")
        box = await evflow.get_actor("box")
        assert await box.snapshot.run() == ["a"]


# -- the API surface ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_handles_and_lookups() -> None:
    @evflow.step
    def plain() -> int:
        return 1

    async with evflow.Engine("memory://") as engine:
        with pytest.raises(evflow.WorkflowNotFoundError):
            await evflow.get_actor("nobody")
        with pytest.raises(evflow.WorkflowNotFoundError):
            await engine.get_actor("nobody")
        await plain.step().run("plain")
        with pytest.raises(TypeError, match="not a virtual actor"):
            await evflow.get_actor("plain")
        with pytest.raises(TypeError, match="not a virtual actor"):
            await Box.get_or_create("plain")
        box = await Box.get_or_create("box")
        with pytest.raises(TypeError, match="Actor"):
            await Actor.get_or_create("box", 1)
        with pytest.raises(TypeError, match="cannot be called directly"):
            box.append(1)
        with pytest.raises(TypeError):
            await box.append.run(1, 2)
        with pytest.raises(TypeError):
            box.append.options(checkpoint=False)
        with pytest.raises(ValueError):
            box.append.options(metadata={1: "x"})
        with pytest.raises(AttributeError):
            box.missing  # noqa: B018
        with pytest.raises(TypeError, match="nodes"):
            await box.append.run(plain.step())
        with pytest.raises(TypeError):
            await box.snapshot.run("extra")
        handle = await engine.get_actor("box")
        call = await handle.append.options(name="x", max_retries=0, timeout=5).run_async(1)
        assert call.workflow_id == "box"
        assert call.name == "x"
        assert await call.result() == [1]
        assert (await evflow.get_metadata("box", "x"))["step_options"]["max_retries"] == 0
        assert await call.status() == "SUCCESSFUL"
        # a deleted actor's id can be used afresh
        await evflow.delete("box")
        fresh = await Box.get_or_create("box", ["new"])
        assert await fresh.append.run(2) == ["new", 2]
        assert await handle.snapshot.run() == ["new", 2]
        with pytest.raises(TypeError):
            await Box().append.step(1).run()  # an actor node runs only inside its actor


class _OnlyGet:
    def __getstate__(self) -> dict[str, Any]:
        return {}


class _OnlySet:
    def __setstate__(self, state: Any) -> None:
        pass


class _Slots:
    __slots__ = ("x",)


class _AsyncInit:
    async def __init__(self) -> None:  # type: ignore[misc]
        pass


class _Reserved:
    def get_or_create(self) -> None:
        pass


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        pytest.param(_OnlyGet, "__getstate__ but not __setstate__", id="getstate-only"),
        pytest.param(_OnlySet, "__setstate__ but not __getstate__", id="setstate-only"),
        pytest.param(_Slots, "__slots__", id="slots-without-state-methods"),
        pytest.param(_AsyncInit, "__init__", id="async-init"),
        pytest.param(_Reserved, "get_or_create", id="reserved-name"),
    ],
)
def test_decoration_validates_the_class(cls: type[Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evflow.virtual_actor(cls)


def test_decoration_needs_a_class_and_readonly_a_method() -> None:
    with pytest.raises(ValueError, match="already"):
        evflow.virtual_actor(Box)
    with pytest.raises(TypeError):
        evflow.virtual_actor(len)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        evflow.virtual_actor.readonly(1)  # type: ignore[type-var]


@evflow.virtual_actor
class Account:
    """State through __getstate__/__setstate__: the cache is never recorded."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0
        self.cache = "built"

    def __getstate__(self) -> dict[str, Any]:
        return {"owner": self.owner, "balance": self.balance}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.owner = state["owner"]
        self.balance = state["balance"]
        self.cache = "rebuilt"

    def deposit(self, amount: int) -> tuple[int, str]:
        self.balance += amount
        return self.balance, self.cache

    @evflow.virtual_actor.readonly
    def describe(self) -> tuple[str, int, str]:
        return self.owner, self.balance, self.cache


@pytest.mark.anyio
async def test_custom_state_methods() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        account = await Account.get_or_create("acct", "ann")
        assert await account.deposit.run(10) == (10, "rebuilt")  # calls run on the recorded state
        assert await account.describe.run() == ("ann", 10, "rebuilt")
    async with evflow.Engine(store):
        account = await evflow.get_actor("acct")
        assert await account.deposit.run(5) == (15, "rebuilt")
    events = await store.read("acct")
    first = events[0]
    assert isinstance(first, WorkflowStarted) and first.actor_state is not None
    assert decode_value(first.actor_state) == {"owner": "ann", "balance": 0}
    last = [e for e in events if isinstance(e, StepFinished)][-1]
    assert last.actor_state is not None
    assert decode_value(last.actor_state) == {"owner": "ann", "balance": 15}


@pytest.mark.anyio
async def test_state_that_msgpack_cannot_hold_is_refused_without_pickle() -> None:
    async with evflow.Engine("memory://", allow_pickle=False):
        with pytest.raises(TypeError, match="allow_pickle=False"):
            await Box.get_or_create("box", [{1, 2}])
        with pytest.raises(evflow.WorkflowNotFoundError):
            await evflow.get_status("box")
        box = await Box.get_or_create("box2")
        with pytest.raises(TypeError, match="allow_pickle=False"):
            await box.append.run(frozenset())  # refused before anything is recorded
        with pytest.raises(evflow.WorkflowExecutionError, match="allow_pickle=False") as info:
            await box.keep_a_set.options(max_retries=0).run()
        assert isinstance(info.value.__cause__, TypeError)
        assert await box.snapshot.run() == []
    async with evflow.Engine("memory://"):
        box = await Box.get_or_create("box", [{1, 2}])  # pickled
        assert await box.append.run(3) == [{1, 2}, 3]


# -- a real crash ---------------------------------------------------------------------------------


def _child(store: Path, gate: Path, mark: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, actor_workflows; actor_workflows.main(sys.argv[1:])",
            "run",
            str(store),
            str(gate),
            str(mark),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_sigkilled_process_mid_call_resumes_from_the_last_recorded_state(
    tmp_path: Path, backend: str
) -> None:
    store, gate, mark = tmp_path / "store", tmp_path / "gate", tmp_path / "mark"
    gate.touch()
    proc = _child(store, gate, mark)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=HANG)
    gate.unlink()
    actor_workflows.GATE, actor_workflows.MARK = str(gate), str(mark)
    actor_id = actor_workflows.ACTOR_ID

    async def check() -> None:
        async with evflow.Engine(store):
            assert await evflow.get_status(actor_id) == "RESUMABLE"
            statuses = {
                name: (await evflow.get_metadata(actor_id, name))["status"]
                for name in ["add", "link", "link_1", "link_2", "add_1"]
            }
            assert statuses == {
                "add": "SUCCESSFUL",
                "link": "SUCCESSFUL",
                "link_1": "SUCCESSFUL",
                "link_2": statuses["link_2"],
                "add_1": "PENDING",
            }
            # RESUMABLE if its StepStarted was flushed before the kill (nothing waits for that)
            assert statuses["link_2"] in ("RESUMABLE", "PENDING")
            ledger = await evflow.get_actor(actor_id)
            assert await ledger.read.run() == ["first", "a", "b"]
            final = ["first", "a", "b", "c", "d", "queued"]
            assert await evflow.resume(actor_id) == final
            assert await evflow.get_output(actor_id, name="link") == final[:-1]
            assert await evflow.get_status(actor_id) == "SUCCESSFUL"
            assert await ledger.read.run() == final

    anyio.run(check, backend=backend)
