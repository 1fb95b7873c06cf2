"""``evflow.fork`` (SPEC section 11; docs/history.md): a new workflow from a point of
another's log; the outputs checkpointed before that point never run again, the rest runs
on the current code; the source is unchanged.

Runs on memory, file and PostgreSQL stores (PostgreSQL on asyncio only; skipped with the
reason when no server can be reached), on both backends where the store allows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import evflow
import history_workflows as hw
from evflow.events import AnyEvent, StepFinished, StepStarted, WorkflowStarted
from evflow.stores import MemoryStore, Store
from pg_schema import postgres_stores
from test_cli import evflow_cli

pytestmark = pytest.mark.anyio


Storage = Callable[[], "str | Store"]


@pytest.fixture(params=["memory", "file", "postgres"])
async def storage(
    request: pytest.FixtureRequest, anyio_backend: str, tmp_path: Path
) -> AsyncIterator[Storage]:
    """What each engine of a test opens: the same store every time."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda: store
        return
    if request.param == "file":
        yield lambda: str(tmp_path / "store")
        return
    async for factory in postgres_stores(anyio_backend):
        yield factory


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    """The file whose existence "fixes" the steps of history_workflows."""
    hw.calls.clear()
    return tmp_path / "fixed"


async def events_of(engine: evflow.Engine, wid: str) -> list[AnyEvent]:
    return [event async for event in evflow.read_events(engine.store, wid)]


async def failed_checkout(engine: evflow.Engine, wid: str, flag: Path) -> None:
    with pytest.raises(evflow.WorkflowExecutionError):
        await hw.checkout("order-7", str(flag)).run(wid)
    assert await engine.get_status(wid) == "FAILED"


async def test_a_fork_of_a_failed_run_reruns_only_the_failed_step_and_what_follows(
    storage: Storage, flag: Path
) -> None:
    async with evflow.Engine(storage()) as engine:
        await failed_checkout(engine, "src", flag)
        source_events = await events_of(engine, "src")
        source_fetch = await engine.get_metadata("src", "fetch")
        await anyio.Path(flag).touch()  # the fix
        hw.calls.clear()
        handle = await evflow.fork("src", "fixed", from_step="charge")
        assert handle.workflow_id == "fixed"
        assert await handle.result() == "paid 1250"
        assert hw.calls == ["charge", "receipt"]  # fetch's output was copied
        metadata = await evflow.get_metadata("fixed")
        assert metadata["status"] == "SUCCESSFUL"
        cut = next(e.seq for e in source_events if isinstance(e, StepStarted) and e.name == "charge") - 1
        assert metadata["forked_from"] == {"workflow_id": "src", "seq": cut}
        # the copied step keeps the source's stats; the re-run one has new ones
        assert await engine.get_metadata("fixed", "fetch") == {**source_fetch, "workflow_id": "fixed"}
        assert (await engine.get_metadata("fixed", "charge"))["user_metadata"] == {"card": "visa"}
        # the source is untouched
        assert await events_of(engine, "src") == source_events
        assert await engine.get_status("src") == "FAILED"
        assert "forked_from" not in await engine.get_metadata("src")
        first = (await events_of(engine, "fixed"))[0]
        assert isinstance(first, WorkflowStarted) and first.forked_from is not None
        assert first.steps == source_events[0].steps  # type: ignore[union-attr]
    async with evflow.Engine(storage()) as engine:  # read back by a new engine
        assert (await engine.get_metadata("fixed"))["forked_from"] == {"workflow_id": "src", "seq": cut}
        assert await engine.get_output("fixed") == "paid 1250"


async def test_a_fork_as_of_an_event_copies_what_finished_up_to_it(storage: Storage, flag: Path) -> None:
    await anyio.Path(flag).touch()
    async with evflow.Engine(storage()) as engine:
        assert await hw.checkout("order-8", str(flag)).run("ok") == "paid 1250"
        events = await events_of(engine, "ok")
        charged = next(e.seq for e in events if isinstance(e, StepFinished) and e.name == "charge")
        hw.calls.clear()
        handle = await engine.fork("ok", as_of=charged)
        assert await handle.result() == "paid 1250"
        assert hw.calls == ["receipt"]
        assert (await engine.get_metadata(handle.workflow_id))["forked_from"] == {
            "workflow_id": "ok",
            "seq": charged,
        }
        hw.calls.clear()
        before = await engine.fork("ok", as_of=charged - 1)  # charge had started, not finished
        assert await before.result() == "paid 1250"
        assert hw.calls == ["charge", "receipt"]
        hw.calls.clear()
        whole = await engine.fork("ok")  # everything is copied: nothing runs
        assert await whole.result() == "paid 1250"
        assert hw.calls == []
        assert (await engine.get_metadata(whole.workflow_id))["forked_from"]["seq"] == events[-1].seq
        # from_step within a prefix: charge as of before it finished
        hw.calls.clear()
        both = await engine.fork("ok", from_step="receipt", as_of=charged)
        assert await both.result() == "paid 1250"
        assert hw.calls == ["receipt"]


async def test_a_fork_after_a_continuation_keeps_the_recorded_sub_dag(storage: Storage, flag: Path) -> None:
    async with evflow.Engine(storage()) as engine:
        with pytest.raises(evflow.WorkflowExecutionError):
            await hw.countdown.step(2, str(flag)).run("count")
        assert (await engine.get_metadata("count", "countdown_2"))["status"] == "FAILED"
        await anyio.Path(flag).touch()
        hw.calls.clear()
        fork = await engine.fork("count", "count-fixed", from_step="countdown_2")
        assert await fork.result() == "liftoff"
        assert hw.calls == ["countdown(0)"]  # the parents' continuations were copied
        source_steps = [e.name for e in await events_of(engine, "count") if isinstance(e, StepStarted)]
        fork_events = await events_of(engine, "count-fixed")
        assert [e.name for e in fork_events if isinstance(e, StepStarted)] == ["countdown_2"]
        assert set(source_steps) == {"countdown", "countdown_1", "countdown_2"}
        assert (await engine.get_metadata("count-fixed", "countdown_1"))["status"] == "SUCCESSFUL"
        # from the root: everything runs again and records its continuations afresh
        hw.calls.clear()
        again = await engine.fork("count", from_step="countdown")
        assert await again.result() == "liftoff"
        assert hw.calls == ["countdown(2)", "countdown(1)", "countdown(0)"]


async def test_what_a_copied_step_published_stays_published(storage: Storage, flag: Path) -> None:
    async with evflow.Engine(storage()) as engine:
        with pytest.raises(evflow.WorkflowExecutionError):
            await hw.charge.step(hw.announce.step("order-3"), str(flag)).run("announced")
        await anyio.Path(flag).touch()
        fork = await engine.fork("announced", "announced-fixed", from_step="charge")
        with pytest.raises(evflow.WorkflowExecutionError):  # charge wants an order dict: fails again
            await fork.result()
        assert await evflow.get_event("announced-fixed", "progress", timeout=5) == {
            "order": "order-3",
            "stage": "announced",
        }
        assert (await engine.get_metadata("announced-fixed"))["published"]["progress"]["step"] == "announce"


async def test_a_canceled_and_a_resumable_workflow_can_be_forked(storage: Storage, flag: Path) -> None:
    key = uuid.uuid4().hex
    hw.gates[key] = anyio.Event()
    async with evflow.Engine(storage()) as engine:
        dag = hw.gated.step(key, hw.fetch.step("order-9"))
        await dag.run_async("left")
        with anyio.fail_after(20):
            while (await engine.get_metadata("left", "gated"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
        await hw.gated.step(key, 1).run_async("canceled")
        await engine.cancel("canceled")
        assert await engine.get_status("canceled") == "CANCELED"
    async with evflow.Engine(storage()) as engine:
        assert await engine.get_status("left") == "RESUMABLE"
        hw.gates[key].set()
        hw.calls.clear()
        fork = await engine.fork("left", from_step="gated")
        assert await fork.result() == {"order": "order-9", "amount": 1250}
        assert hw.calls == [f"gated({key})"]
        assert await engine.get_status("left") == "RESUMABLE"  # the source is not resumed
        canceled_fork = await engine.fork("canceled")
        assert await canceled_fork.result() == 1
        assert await engine.get_status("canceled") == "CANCELED"


async def test_a_fork_is_validated_before_anything_is_written(storage: Storage, flag: Path) -> None:
    async with evflow.Engine(storage()) as engine:
        await failed_checkout(engine, "src", flag)
        last = (await events_of(engine, "src"))[-1].seq
        with pytest.raises(evflow.WorkflowNotFoundError):
            await engine.fork("nope", "new")
        with pytest.raises(evflow.StepNotFoundError):
            await engine.fork("src", "new", from_step="no-such-step")
        with pytest.raises(ValueError, match="outside the log"):
            await engine.fork("src", "new", as_of=last + 1)
        with pytest.raises(ValueError, match="outside the log"):
            await engine.fork("src", "new", as_of=0)
        with pytest.raises(ValueError, match="already exists"):
            await engine.fork("src", "src", from_step="charge")
        assert sorted(wid for wid, _ in await engine.list_all()) == ["src"]
        counter = await hw.Counter.get_or_create("counter-1")
        await counter.incr.run(1)
        with pytest.raises(ValueError, match="virtual actor"):
            await engine.fork("counter-1", "new")
        assert sorted(wid for wid, _ in await engine.list_all()) == ["counter-1", "src"]


def failed_checkout_in(store: Path, wid: str, flag: Path) -> None:
    async def main() -> None:
        async with evflow.Engine(str(store)) as engine:
            await failed_checkout(engine, wid, flag)

    anyio.run(main)


def test_fork_on_the_command_line(tmp_path: Path, flag: Path) -> None:
    store = tmp_path / "store"
    failed_checkout_in(store, "src", flag)
    flag.touch()
    result = evflow_cli(store, "fork", "src", "--from-step", "charge", "--new-id", "fixed")
    assert result.code == 0, result.err
    assert result.out.split()[:2] == ["fixed", "SUCCESSFUL"]
    assert "forked from src at seq" in result.out
    assert evflow_cli(store, "--json", "show", "fixed").json()["forked_from"]["workflow_id"] == "src"
    as_json = evflow_cli(store, "--json", "fork", "src", "--as-of", "1")
    assert as_json.code == 0 and as_json.json()["forked_from"] == {"workflow_id": "src", "seq": 1}
    missing = evflow_cli(store, "fork", "ghost", "--from-step", "x")
    assert (missing.code, missing.err.strip()) == (1, "not found: ghost")
    unknown = evflow_cli(store, "fork", "src", "--from-step", "x")
    assert unknown.code == 1 and "not found: step 'x'" in unknown.err
    taken = evflow_cli(store, "fork", "src", "--new-id", "fixed")
    assert taken.code == 1 and "already exists" in taken.err
