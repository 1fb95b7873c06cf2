"""The engine: running DAGs, naming, metadata and stats, failure, retry, resume, cancel.

Every scenario runs on asyncio and trio (``anyio_backend`` in conftest.py).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow.stores import MemoryStore

pytestmark = pytest.mark.anyio

calls: list[str] = []


@evflow.step
def add(left: int, right: int) -> int:
    calls.append("add")
    return left + right


@evflow.step
async def incr(n: int, limit: int) -> Any:
    if n >= limit:
        return n
    return incr.options(name="incr").step(n + 1, limit)


@evflow.step
def total(values: Any) -> int:
    return sum(values["xs"]) + sum(values["pair"])


@evflow.step
async def boom(message: str) -> int:
    raise KeyError(message)


class Flaky:
    """A failure switch shared by steps of one test."""

    fail = True


@evflow.step(max_retries=0)
def maybe_fail(x: int) -> int:
    if Flaky.fail:
        raise ValueError(f"failing on {x}")
    return x * 10


@evflow.step
async def sleeper(seconds: float) -> float:
    await anyio.sleep(seconds)
    return seconds


async def test_dag_runs_and_returns_its_output() -> None:
    async with evflow.Engine("memory://"):
        assert await add.step(add.step(1, 2), 3).run("wf") == 6
        assert await evflow.get_status("wf") == "SUCCESSFUL"
        assert await evflow.get_status("wf") is evflow.WorkflowStatus.SUCCESSFUL


async def test_bfs_naming_from_the_output_node() -> None:
    async with evflow.Engine("memory://"):
        await add.step(add.step(add.step(1, 2), 3), add.step(4, 5)).run("wf")
        base = add.name
        # breadth-first from the output: output, its children in argument order, then theirs
        names = {
            n: (await evflow.get_metadata("wf", n))["status"]
            for n in (base, f"{base}_1", f"{base}_2", f"{base}_3")
        }
        assert set(names.values()) == {"SUCCESSFUL"}
        assert await evflow.get_output("wf", name=f"{base}_1") == 6
        assert await evflow.get_output("wf", name=f"{base}_2") == 9
        assert await evflow.get_output("wf", name=f"{base}_3") == 3
        with pytest.raises(evflow.StepNotFoundError):
            await evflow.get_metadata("wf", f"{base}_4")


async def test_explicit_names_get_suffixes_per_workflow() -> None:
    async with evflow.Engine("memory://"):
        named = add.options(name="plus")
        await named.step(named.step(1, 2), named.step(3, 4)).run("wf")
        for name in ("plus", "plus_1", "plus_2"):
            assert (await evflow.get_metadata("wf", name))["name"] == name


async def test_recursive_continuations_are_named_in_call_order() -> None:
    async with evflow.Engine("memory://"):
        step = incr.options(name="incr")
        assert await step.step(0, 3).run("wf") == 3
        starts = []
        for name in ("incr", "incr_1", "incr_2", "incr_3"):
            meta = await evflow.get_metadata("wf", name)
            assert meta["status"] == "SUCCESSFUL"
            starts.append(meta["stats"])
        # a continuation's children start after the parent's end_time
        for parent, child in itertools.pairwise(starts):
            assert child["start_time"] >= parent["end_time"]


async def test_dependencies_inside_nested_containers() -> None:
    async with evflow.Engine("memory://"):
        node = total.step({"xs": [add.step(1, 1), add.step(2, 2)], "pair": (add.step(3, 3), 4)})
        assert await node.run("wf") == 2 + 4 + 6 + 4


async def test_the_same_node_object_runs_once() -> None:
    calls.clear()
    async with evflow.Engine("memory://"):
        shared = add.step(1, 2)
        assert await add.step(shared, shared).run("wf") == 6
    assert calls == ["add", "add"]


async def test_independent_nodes_run_concurrently() -> None:
    both_running = anyio.Event()
    running = 0

    @evflow.step
    async def meet() -> int:
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        await both_running.wait()
        return 1

    async with evflow.Engine("memory://"):
        with anyio.fail_after(10):
            assert await add.step(meet.step(), meet.step()).run("wf") == 2


async def test_a_workflow_is_one_task_plus_one_per_extra_concurrent_step() -> None:
    # Thousands of workflows wait in flight at once (docs/performance.md, (g)): a step
    # runs in its workflow's own task while it is the only one runnable.
    release = anyio.Event()
    waiting = 0

    @evflow.step
    async def wait(x: int) -> int:
        nonlocal waiting
        waiting += 1
        await release.wait()
        return x

    async with evflow.Engine("memory://"):
        before = len(anyio.get_running_tasks())
        singles = [await wait.step(i).run_async(f"single-{i}") for i in range(3)]
        both = await add.step(wait.step(10), wait.step(20)).run_async("both")
        with anyio.fail_after(10):
            while waiting < 5:
                await anyio.sleep(0.01)
        assert len(anyio.get_running_tasks()) - before == 3 + 2
        release.set()
        assert [await handle for handle in singles] == [0, 1, 2]
        assert await both == 30


async def test_workflow_and_step_metadata() -> None:
    async with evflow.Engine("memory://"):
        step = add.options(name="add_step", metadata={"team": "ml"})
        before = time.time()
        await step.step(1, 2).run("wf", metadata={"owner": "me"})
        after = time.time()
        meta = await evflow.get_metadata("wf")
        assert meta["workflow_id"] == "wf"
        assert meta["status"] == "SUCCESSFUL"
        assert meta["user_metadata"] == {"owner": "me"}
        assert before <= meta["stats"]["start_time"] <= meta["stats"]["end_time"] <= after
        step_meta = await evflow.get_metadata("wf", "add_step")
        assert step_meta["name"] == "add_step"
        assert step_meta["status"] == "SUCCESSFUL"
        assert step_meta["user_metadata"] == {"team": "ml"}
        assert step_meta["step_options"]["step_type"] == "FUNCTION"
        assert step_meta["step_options"]["max_retries"] == 3
        assert step_meta["step_options"]["catch_exceptions"] is False
        assert step_meta["step_options"]["checkpoint"] is True
        stats = step_meta["stats"]
        assert (
            meta["stats"]["start_time"]
            <= stats["start_time"]
            <= stats["end_time"]
            <= meta["stats"]["end_time"]
        )
        assert isinstance(stats["start_time"], float)


async def test_running_workflow_has_no_end_time_and_canceled_neither() -> None:
    async with evflow.Engine("memory://"):
        handle = await sleeper.options(name="nap").step(30).run_async("wf")
        while (await evflow.get_metadata("wf", "nap"))["status"] != "RUNNING":
            await anyio.sleep(0.01)
        meta = await evflow.get_metadata("wf")
        assert meta["status"] == "RUNNING"
        assert "start_time" in meta["stats"] and "end_time" not in meta["stats"]
        assert "end_time" not in (await evflow.get_metadata("wf", "nap"))["stats"]
        await handle.cancel()
        meta = await evflow.get_metadata("wf")
        assert meta["status"] == "CANCELED"
        assert "end_time" not in meta["stats"]
        step_meta = await evflow.get_metadata("wf", "nap")
        assert step_meta["status"] == "CANCELED"
        assert "end_time" not in step_meta["stats"]
        with pytest.raises(evflow.WorkflowCancellationError):
            await handle
        with pytest.raises(evflow.WorkflowCancellationError):
            await evflow.get_output("wf")


async def test_failure_then_resume_gives_later_times() -> None:
    Flaky.fail = True
    async with evflow.Engine("memory://"):
        node = add.step(maybe_fail.step(1), 5)
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await node.run("wf")
        assert isinstance(info.value.__cause__, ValueError)
        assert "wf" in str(info.value) and "maybe_fail" in str(info.value)
        failed = await evflow.get_metadata("wf")
        assert failed["status"] == "FAILED"
        failed_step = await evflow.get_metadata("wf", maybe_fail.name)
        assert failed_step["status"] == "FAILED"
        assert "end_time" in failed_step["stats"]
        Flaky.fail = False
        assert await evflow.resume("wf") == 15
        resumed = await evflow.get_metadata("wf")
        assert resumed["status"] == "SUCCESSFUL"
        assert resumed["stats"]["start_time"] > failed["stats"]["end_time"]
        assert resumed["stats"]["end_time"] > failed["stats"]["end_time"]
        step_meta = await evflow.get_metadata("wf", maybe_fail.name)
        assert step_meta["stats"]["start_time"] > failed_step["stats"]["end_time"]


async def test_checkpointed_steps_are_not_rerun_on_resume() -> None:
    Flaky.fail = True
    calls.clear()
    async with evflow.Engine("memory://"):
        node = maybe_fail.step(add.step(1, 1))
        with pytest.raises(evflow.WorkflowExecutionError):
            await node.run("wf")
        first = await evflow.get_metadata("wf", add.name)
        Flaky.fail = False
        assert await evflow.resume("wf") == 20
        assert calls == ["add"]
        assert await evflow.get_metadata("wf", add.name) == first


async def test_checkpoint_false_is_recomputed_on_resume() -> None:
    Flaky.fail = True
    calls.clear()
    async with evflow.Engine("memory://"):
        node = maybe_fail.step(add.options(checkpoint=False).step(1, 1))
        with pytest.raises(evflow.WorkflowExecutionError):
            await node.run("wf")
        Flaky.fail = False
        assert await evflow.resume("wf") == 20
        assert calls == ["add", "add"]


async def test_retries_with_delay_then_success() -> None:
    attempts: list[float] = []

    @evflow.step(max_retries=2, retry_delay=0.01)
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"

    async with evflow.Engine("memory://"):
        assert await flaky.step().run("wf") == "ok"
    assert len(attempts) == 3
    # the delay doubles: 0.01 then 0.02
    assert attempts[2] - attempts[1] >= 0.02


async def test_retries_exhausted_fail_the_workflow() -> None:
    attempts = 0

    @evflow.step(max_retries=1)
    def always() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("nope")

    async with evflow.Engine("memory://"):
        with pytest.raises(evflow.WorkflowExecutionError):
            await always.step().run("wf")
    assert attempts == 2


async def test_timeout_counts_as_a_failed_attempt() -> None:
    async with evflow.Engine("memory://"):
        node = sleeper.options(timeout=0.05, max_retries=1).step(30)
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await node.run("wf")
        assert isinstance(info.value.__cause__, TimeoutError)


async def test_catch_exceptions_gives_result_error_pairs() -> None:
    async with evflow.Engine("memory://"):
        result, error = await boom.options(catch_exceptions=True, max_retries=0).step("k").run("bad")
        assert result is None and isinstance(error, KeyError)
        assert await add.options(catch_exceptions=True).step(1, 2).run("good") == (3, None)


async def test_failure_cause_keeps_its_type_in_a_new_engine() -> None:
    store = MemoryStore()
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError):
            await boom.options(max_retries=0).step("lost").run("wf")
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await evflow.get_output("wf")
        assert isinstance(info.value.__cause__, KeyError)
        assert info.value.__cause__.args == ("lost",)


async def test_leaving_the_engine_interrupts_and_a_new_engine_resumes() -> None:
    store = MemoryStore()
    gate = {"block": True}

    @evflow.step
    async def wait_gate() -> str:
        while gate["block"]:
            await anyio.sleep(0.01)
        return "through"

    async with evflow.Engine(store):
        handle = await wait_gate.options(name="gate").step().run_async("wf")
        while (await evflow.get_metadata("wf", "gate"))["status"] != "RUNNING":
            await anyio.sleep(0.01)
    async with evflow.Engine(store):
        assert await evflow.get_status("wf") == "RESUMABLE"
        assert (await evflow.get_metadata("wf"))["status"] == "RESUMABLE"
        assert (await evflow.get_metadata("wf", "gate"))["status"] == "RESUMABLE"
        assert await evflow.list_all("RESUMABLE") == [("wf", "RESUMABLE")]
        with pytest.raises(evflow.WorkflowNotRunningError):
            await evflow.get_output("wf")
        with pytest.raises(evflow.WorkflowNotRunningError):
            await handle.result()
        gate["block"] = False
        resumed = await evflow.resume_all()
        assert [wid for wid, _ in resumed] == ["wf"]
        assert await resumed[0][1] == "through"


async def test_run_with_an_existing_id_never_starts_a_second_execution() -> None:
    async with evflow.Engine("memory://"):
        assert await add.step(1, 2).run("wf") == 3
        # SUCCESSFUL: the stored output, the new DAG is ignored
        assert await add.step(10, 20).run("wf") == 3
        h1 = await sleeper.step(0.05).run_async("slow")
        h2 = await sleeper.step(99).run_async("slow")
        assert await h1 == 0.05
        assert await h2 == 0.05


async def test_resume_rules() -> None:
    async with evflow.Engine("memory://"):
        assert await add.step(1, 2).run("done") == 3
        assert await evflow.resume("done") == 3
        handle = await sleeper.step(0.05).run_async("running")
        attached = await evflow.resume_async("running")
        assert await attached == 0.05
        await handle
        with pytest.raises(evflow.WorkflowNotFoundError):
            await evflow.resume("missing")


async def test_cancel_rules() -> None:
    async with evflow.Engine("memory://"):
        assert await add.step(1, 2).run("done") == 3
        await evflow.cancel("done")
        assert await evflow.get_status("done") == "SUCCESSFUL"
        with pytest.raises(evflow.WorkflowExecutionError):
            await boom.options(max_retries=0).step("x").run("failed")
        await evflow.cancel("failed")
        assert await evflow.get_status("failed") == "CANCELED"
        await evflow.cancel("failed")
        assert await evflow.get_status("failed") == "CANCELED"
        assert await evflow.resume_all(include_failed=True) == []


async def test_cancel_abandons_a_sync_step_thread_and_discards_its_result() -> None:
    release = threading.Event()
    finished = threading.Event()

    @evflow.step
    def blocking() -> str:
        release.wait(30)
        finished.set()
        return "late"

    async with evflow.Engine("memory://"):
        handle = await blocking.options(name="blocking").step().run_async("wf")
        while (await evflow.get_metadata("wf", "blocking"))["status"] != "RUNNING":
            await anyio.sleep(0.01)
        with anyio.fail_after(10):
            await evflow.cancel("wf")
        assert await evflow.get_status("wf") == "CANCELED"
        release.set()
        await anyio.to_thread.run_sync(finished.wait, 10)
        await anyio.sleep(0.05)
        assert await evflow.get_status("wf") == "CANCELED"
        assert "end_time" not in (await evflow.get_metadata("wf", "blocking"))["stats"]
        with pytest.raises(evflow.WorkflowCancellationError):
            await handle


@pytest.mark.parametrize("retry_delay", [0.0, 1.0])
async def test_a_step_whose_cleanup_raises_when_canceled_is_canceled_not_failed(retry_delay: float) -> None:
    """An exception raised by a step's own clean-up of its cancellation is not a failure
    of the step: no StepFailed, no retry, the workflow is CANCELED."""
    started = anyio.Event()

    @evflow.step(name="tidy", max_retries=3, retry_delay=retry_delay)
    async def tidy() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("the clean-up failed")

    async with evflow.Engine("memory://") as engine:
        handle = await tidy.step().run_async("wf")
        await started.wait()
        with anyio.fail_after(10):
            await evflow.cancel("wf")
        with pytest.raises(evflow.WorkflowCancellationError):
            await handle
        await anyio.sleep(0.05)  # a retry would have started by now
        assert await evflow.get_status("wf") == "CANCELED"
        kinds = [type(e).__name__ for e in await engine.store.read("wf")]
        assert kinds == ["WorkflowStarted", "StepStarted", "WorkflowCanceled"], kinds


async def test_resume_a_canceled_workflow() -> None:
    async with evflow.Engine("memory://"):
        handle = await sleeper.step(30).run_async("wf")
        await anyio.sleep(0.05)
        await handle.cancel()
        assert await evflow.get_status("wf") == "CANCELED"
        # resuming re-runs the canceled step from the start
        handle = await evflow.resume_async("wf")
        await handle.cancel()
        assert await evflow.get_status("wf") == "CANCELED"


async def test_delete() -> None:
    async with evflow.Engine("memory://"):
        await add.step(1, 2).run("wf")
        await evflow.delete("wf")
        with pytest.raises(evflow.WorkflowNotFoundError):
            await evflow.get_status("wf")
        with pytest.raises(evflow.WorkflowNotFoundError):
            await evflow.delete("wf")
        assert await add.step(5, 5).run("wf") == 10
        handle = await sleeper.step(30).run_async("busy")
        with pytest.raises(evflow.WorkflowRunningError, match="busy"):
            await evflow.delete("busy")
        await handle.cancel()
        await evflow.delete("busy")


async def test_list_all_filters() -> None:
    async with evflow.Engine("memory://"):
        await add.step(1, 2).run("ok")
        with pytest.raises(evflow.WorkflowExecutionError):
            await boom.options(max_retries=0).step("x").run("bad")
        assert sorted(await evflow.list_all()) == [("bad", "FAILED"), ("ok", "SUCCESSFUL")]
        assert await evflow.list_all("SUCCESSFUL") == [("ok", "SUCCESSFUL")]
        assert await evflow.list_all(evflow.WorkflowStatus.FAILED) == [("bad", "FAILED")]
        assert sorted(await evflow.list_all({"FAILED", evflow.WorkflowStatus.SUCCESSFUL})) == [
            ("bad", "FAILED"),
            ("ok", "SUCCESSFUL"),
        ]
        with pytest.raises(ValueError, match="BOGUS"):
            await evflow.list_all("BOGUS")


@pytest.mark.parametrize(
    ("workflow_id", "error"),
    [
        pytest.param("", ValueError, id="empty"),
        pytest.param("x" * 257, ValueError, id="too-long"),
        pytest.param("a\x00b", ValueError, id="nul"),
        pytest.param(42, TypeError, id="not-str"),
    ],
)
async def test_bad_workflow_ids(workflow_id: Any, error: type[Exception]) -> None:
    async with evflow.Engine("memory://"):
        with pytest.raises(error):
            await add.step(1, 2).run(workflow_id)
        assert await evflow.list_all() == []


async def test_generated_ids_are_unique() -> None:
    async with evflow.Engine("memory://"):
        h1 = await add.step(1, 2).run_async()
        h2 = await add.step(1, 2).run_async()
        assert h1.workflow_id != h2.workflow_id
        assert await h1 == await h2 == 3


async def test_bad_run_metadata_is_refused_before_anything_is_recorded() -> None:
    async with evflow.Engine("memory://"):
        with pytest.raises(ValueError, match="metadata"):
            await add.step(1, 2).run("wf", metadata={"x": object()})
        with pytest.raises(ValueError, match="metadata"):
            await add.step(1, 2).run("wf", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
        assert await evflow.list_all() == []


class Opaque:
    def __init__(self, value: int) -> None:
        self.value = value


@evflow.step
def unwrap(box: Opaque) -> int:
    return box.value


@evflow.step
def wrap(value: int) -> Opaque:
    return Opaque(value)


async def test_pickle_fallback_and_allow_pickle_false() -> None:
    async with evflow.Engine("memory://"):
        assert await unwrap.step(Opaque(7)).run("pickled") == 7
    async with evflow.Engine("memory://", allow_pickle=False):
        with pytest.raises(TypeError, match="allow_pickle=False"):
            await unwrap.step(Opaque(7)).run("refused")
        assert await evflow.list_all() == []
        # a tuple is plain data: it round-trips without pickle
        assert await add.options(catch_exceptions=True).step(1, 2).run("tuple") == (3, None)
        with pytest.raises(evflow.WorkflowExecutionError, match="allow_pickle=False"):
            await wrap.options(max_retries=0).step(3).run("bad-output")


async def test_unpicklable_argument_is_refused() -> None:
    async with evflow.Engine("memory://"):
        with pytest.raises(TypeError, match="not picklable"):
            await unwrap.step(lambda: 1).run("wf")  # type: ignore[arg-type]
        assert await evflow.list_all() == []


async def test_missing_step_function_on_resume_fails_naming_it() -> None:
    store = MemoryStore()

    @evflow.step
    def transient() -> int:
        return 1

    async with evflow.Engine(store):
        await add.step(1, 2).run("healthy")
        handle = await sleeper.step(30).run_async("wf")
        await anyio.sleep(0.01)
        del handle
    # rewrite the recorded DAG so that its function path no longer imports
    events = store._logs["wf"]
    started = events[0]
    assert isinstance(started, evflow._events.WorkflowStarted)  # type: ignore[attr-defined]
    spec = started.steps[0]
    import msgspec

    events[0] = msgspec.structs.replace(
        started, steps=[msgspec.structs.replace(spec, func="no_such_module_xyz:gone")]
    )
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError, match="no_such_module_xyz:gone"):
            await evflow.resume("wf")
        assert await evflow.get_output("healthy") == 3


async def test_attach_metadata_in_sync_and_async_steps() -> None:
    @evflow.step
    def sync_step() -> int:
        evflow.attach_metadata({"progress": 1})
        evflow.attach_metadata({"progress": 2, "note": "sync"})
        return 1

    @evflow.step(metadata={"static": True})
    async def async_step(x: int) -> int:
        evflow.attach_metadata({"seen": x})
        return x + 1

    async with evflow.Engine("memory://"):
        assert await async_step.options(name="a").step(sync_step.options(name="s").step()).run("wf") == 2
        assert (await evflow.get_metadata("wf", "s"))["user_metadata"] == {"progress": 2, "note": "sync"}
        assert (await evflow.get_metadata("wf", "a"))["user_metadata"] == {"static": True, "seen": 1}
    with pytest.raises(RuntimeError, match="inside a running step"):
        evflow.attach_metadata({"x": 1})


async def test_attach_metadata_validates() -> None:
    @evflow.step(max_retries=0)
    def bad() -> None:
        evflow.attach_metadata({"x": object()})

    async with evflow.Engine("memory://"):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await bad.step().run("wf")
        assert isinstance(info.value.__cause__, ValueError)


async def test_module_functions_without_an_engine() -> None:
    with pytest.raises(evflow.NoEngineError, match="Engine"):
        await evflow.get_status("wf")
    with pytest.raises(RuntimeError):
        await add.step(1, 2).run("wf")


def test_unknown_storage_scheme() -> None:
    with pytest.raises(ValueError, match="memory://"):
        evflow.Engine("s3://bucket/x")


async def test_engine_methods_mirror_module_functions(tmp_path: Path) -> None:
    async with evflow.Engine("memory://") as first, evflow.Engine("memory://") as second:
        assert await first.run(add.step(1, 2), "wf") == 3
        assert await second.run(add.step(2, 2), "wf") == 4
        assert await first.get_output("wf") == 3
        assert await second.get_output("wf") == 4
        assert (await first.get_metadata("wf"))["status"] == "SUCCESSFUL"
        assert await second.list_all() == [("wf", "SUCCESSFUL")]


async def test_deep_static_dag_and_long_continuation_chain() -> None:
    @evflow.step
    async def inc(x: int) -> int:
        return x + 1

    @evflow.step
    async def countdown(n: int) -> Any:
        return n if n == 0 else countdown.step(n - 1)

    async with evflow.Engine("memory://"):
        node = inc.step(0)
        for _ in range(499):
            node = inc.step(node)
        assert await node.run("deep") == 500
        assert await countdown.step(10_000).run("chain") == 0
        last = await evflow.get_metadata("chain", f"{countdown.name}_10000")
        assert last["status"] == "SUCCESSFUL"


class FlakyStore(MemoryStore):
    """A memory store whose flush fails while ``broken`` is set (a full disk, say)."""

    broken = False

    async def flush(self, workflow_id: str | None = None) -> None:
        if self.broken:
            raise evflow.StoreError("disk full")


async def test_a_store_failure_lets_go_of_the_workflow_and_nothing_else() -> None:
    store = FlakyStore()
    async with evflow.Engine(store):
        assert await add.step(1, 2).run("before") == 3
        store.broken = True
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await add.step(add.step(1, 1), 1).run("during")
        assert isinstance(info.value.__cause__, evflow.StoreError)
        # the execution let go of the workflow before run raised
        assert await evflow.get_status("during") == "RESUMABLE"
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await evflow.get_output("during")
        assert isinstance(info.value.__cause__, evflow.StoreError)
        store.broken = False
        assert await evflow.get_status("before") == "SUCCESSFUL"
        assert await add.step(2, 2).run("after") == 4
        assert await evflow.resume("during") == 3


class FlushLog(MemoryStore):
    """A memory store that records which events each flush made durable."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[str] = []
        self.flushes: list[list[str]] = []

    def append_nowait(self, workflow_id: str, events: Any) -> None:
        super().append_nowait(workflow_id, events)
        self.queued += [f"{type(e).__name__}:{getattr(e, 'name', '')}" for e in events]

    async def flush(self, workflow_id: str | None = None) -> None:
        if self.queued:
            self.flushes.append(self.queued)
            self.queued = []


async def test_each_step_is_durable_before_the_next_and_the_last_with_the_end() -> None:
    store = FlushLog()
    async with evflow.Engine(store):
        assert await add.step(add.step(1, 2), 3).run("two") == 6
    inner, outer = f"{add.name}_1", add.name
    # the dependency's StepFinished is flushed before the step that needs it starts; the
    # output step's StepFinished shares one flush with the WorkflowFinished
    assert store.flushes == [
        ["WorkflowStarted:"],
        [f"StepStarted:{inner}", f"StepFinished:{inner}"],
        [f"StepStarted:{outer}", f"StepFinished:{outer}", "WorkflowFinished:"],
    ]


class EndWriteFails(MemoryStore):
    """A memory store whose flush of a workflow's end fails like a real failed write: the
    events of that flush are not kept."""

    fail = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[str, Any]] = []

    def append_nowait(self, workflow_id: str, events: Any) -> None:
        super().append_nowait(workflow_id, events)
        self.pending += [(workflow_id, event) for event in events]

    async def flush(self, workflow_id: str | None = None) -> None:
        pending, self.pending = self.pending, []
        if self.fail and any(type(event).__name__ == "WorkflowFinished" for _, event in pending):
            for wid, event in pending:
                self._logs[wid].remove(event)
            raise evflow.StoreError("disk full")


async def test_an_end_that_could_not_be_written_is_not_reported() -> None:
    store = EndWriteFails()
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await add.step(1, 2).run("end")
        assert isinstance(info.value.__cause__, evflow.StoreError)
        assert await evflow.get_status("end") == "RESUMABLE"  # not SUCCESSFUL: not on disk
        assert (await evflow.get_metadata("end"))["status"] == "RESUMABLE"
        store.fail = False
        assert await evflow.resume("end") == 3
        assert await evflow.get_status("end") == "SUCCESSFUL"
    assert type(store._logs["end"][-1]).__name__ == "WorkflowFinished"


async def test_run_returns_only_once_the_end_is_durable(tmp_path: Path) -> None:
    Flaky.fail = True
    async with evflow.Engine(tmp_path / "store") as engine:
        with pytest.raises(evflow.WorkflowExecutionError):
            await maybe_fail.step(1).run("failed")
        # the failure is in the log already, and nothing still runs the workflow
        events = [type(e).__name__ async for e in evflow.read_events(tmp_path / "store", "failed")]
        assert events[-1] == "WorkflowFailed"
        await engine.cancel("failed")
        assert await engine.get_status("failed") == "CANCELED"
        assert await add.step(1, 2).run("done") == 3
        events = [type(e).__name__ async for e in evflow.read_events(tmp_path / "store", "done")]
        assert events[-1] == "WorkflowFinished"
        await engine.delete("done")
        with pytest.raises(evflow.WorkflowExecutionError):
            await maybe_fail.step(2).run("again")
        Flaky.fail = False
        assert await engine.resume("again") == 20


async def test_timeouts_say_which_step_and_how_long() -> None:
    async with evflow.Engine("memory://"):
        with pytest.raises(evflow.WorkflowExecutionError, match=r"timed out after 0\.05 s"):
            await sleeper.options(name="nap", timeout=0.05, max_retries=0).step(30).run("wf")


async def test_a_log_from_a_newer_format_is_refused_and_others_stay_usable() -> None:
    import msgspec

    store = MemoryStore()
    async with evflow.Engine(store):
        await add.step(1, 2).run("old")
        await add.step(1, 2).run("future")
    first = store._logs["future"][0]
    store._logs["future"][0] = msgspec.structs.replace(first, version=99)
    async with evflow.Engine(store):
        with pytest.raises(evflow.CorruptLogError, match="newer evflow"):
            await evflow.get_status("future")
        assert await evflow.get_output("old") == 3


async def test_the_output_of_a_long_chain_is_found_without_walking_it_each_step() -> None:
    """Finding a chain's output (after every step, as the engine does) walks each link of
    the chain of continuations once in all, not once per step: a chain is linear."""
    from evflow._projection import apply

    n = 300
    async with evflow.Engine("memory://") as engine:
        assert await incr.step(0, n).run("chain") == n
        events = await engine.store.read("chain")

    class CountingSteps(dict[str, Any]):
        looked = 0

        def get(self, key: str, default: Any = None) -> Any:
            CountingSteps.looked += 1
            return super().get(key, default)

    state = apply(None, events[0])
    state.steps = CountingSteps(state.steps)
    for event in events[1:]:
        apply(state, event)
        if type(event).__name__ == "StepFinished":
            state.value_source(state.output or "")
    assert state.value_source(state.output or "") is not None
    assert CountingSteps.looked < 3 * (n + 1)  # walking it each time: ~n * n / 2


async def test_a_finished_workflow_gives_the_cyclic_gc_one_object_not_one_per_step() -> None:
    """The projection of a finished workflow is walked by every full collection of the
    process (issue 16 (d)): its steps and their bookkeeping are not tracked, only the
    ``WorkflowState`` itself, so 5,000 finished workflows do not slow down the reads."""
    import gc

    from evflow._projection import replay

    async with evflow.Engine("memory://") as engine:
        assert await add.step(add.step(1, 1), add.step(2, 2)).run("three") == 6
        events = await engine.store.read("three")
    for state in (engine_state := replay(events), replay(events[:3])):  # finished, mid-run
        assert len(state.steps) == 3
        assert not gc.is_tracked(state.steps)
        assert not any(gc.is_tracked(step) for step in state.steps.values())
        assert not gc.is_tracked(state.running)
        assert not gc.is_tracked(state.counters)
    assert engine_state.status == "SUCCESSFUL"
