"""Queues (SPEC section 9): PENDING workflows, concurrency limits observed from inside the
steps, FIFO and priority order, dedup ids, cancel, restarts, engine limits, rate limits.

Runs on memory, file and PostgreSQL stores (PostgreSQL on asyncio only; skipped with the
reason when no server can be reached); two engines on one shared store for the global
limit, with a store's change feed (PostgreSQL's NOTIFYs, the memory store's own) and
without one (the store listed instead).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._context import current_step
from evflow.engine import _queues
from evflow.stores import ChangeFeed, MemoryStore, Store
from pg_schema import postgres_stores

pytestmark = pytest.mark.anyio


class Probe:
    """Counts the steps running at once (per key) and records the order they start in."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.started: list[int] = []
        self.by_engine: dict[str, int] = {}


probes: dict[str, Probe] = {}
gates: dict[str, anyio.Event] = {}


@evflow.step
async def observed(key: str, index: int) -> int:
    probe = probes[key]
    probe.active += 1
    probe.peak = max(probe.peak, probe.active)
    probe.started.append(index)
    ctx = current_step.get()
    engine_id = str(getattr(ctx.engine, "engine_id", "")) if ctx is not None else ""
    probe.by_engine[engine_id] = probe.by_engine.get(engine_id, 0) + 1
    try:
        await anyio.sleep(0.002)
        gate = gates.get(key)
        if gate is not None:
            await gate.wait()
    finally:
        probe.active -= 1
    return index


@evflow.step
async def gated(key: str) -> str:
    await gates[key].wait()
    return key


limited = evflow.Queue("test-limited", concurrency=5)
per_worker = evflow.Queue("test-per-worker", worker_concurrency=3)
serial = evflow.Queue("test-serial", concurrency=1)
ranked = evflow.Queue("test-ranked", concurrency=1, priority=True)
metered = evflow.Queue("test-metered", rate_limit=(4, 0.3))
#: Each engine may run 3, both together 4: both must take a share, and the global limit binds.
shared_limit = evflow.Queue("test-shared-limit", concurrency=4, worker_concurrency=3)


class SharedMemoryStore(MemoryStore):
    """One in-memory store used by several engines at once, as a database would be."""

    shared = True


class ListedSharedMemoryStore(SharedMemoryStore):
    """A shared store whose feed tells nothing: the queues list it instead."""

    def change_feed(self) -> ChangeFeed:
        return ChangeFeed()


StoreFactory = Callable[[], "Store | str"]


@pytest.fixture(params=["memory", "file", "postgres"])
async def storage(
    request: pytest.FixtureRequest, anyio_backend: str, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Opens the same store again for each engine (sequentially for file and memory)."""
    if request.param == "memory":
        store = MemoryStore()
        yield lambda: store
    elif request.param == "file":
        yield lambda: str(tmp_path / "store")
    else:
        async for factory in postgres_stores(anyio_backend):
            yield factory


@pytest.fixture(params=["shared-memory", "shared-memory-listed", "postgres"])
async def shared(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[StoreFactory]:
    if request.param != "postgres":
        store = SharedMemoryStore() if request.param == "shared-memory" else ListedSharedMemoryStore()
        yield lambda: store
    else:
        async for factory in postgres_stores(anyio_backend):
            yield factory


def new_probe(gate: bool = False) -> str:
    key = uuid.uuid4().hex
    probes[key] = Probe()
    if gate:
        gates[key] = anyio.Event()
    return key


async def wait_for(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not predicate():
            await anyio.sleep(0.005)


async def wait_status(engine: evflow.Engine, wid: str, status: str) -> None:
    with anyio.fail_after(30):
        while await engine.get_status(wid) != status:
            await anyio.sleep(0.01)


# -- PENDING --------------------------------------------------------------------------------------


async def test_a_workflow_waiting_in_a_queue_is_pending_everywhere(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()):
        first = await serial.enqueue(observed.step(key, 0), workflow_id=f"{key}-0")
        second = await serial.enqueue(observed.step(key, 1), workflow_id=f"{key}-1")
        await wait_for(lambda: probes[key].started == [0])
        assert await second.status() == "PENDING"
        assert await evflow.get_status(second.workflow_id) is evflow.WorkflowStatus.PENDING
        meta = await evflow.get_metadata(second.workflow_id)
        assert meta["status"] == "PENDING"
        assert meta["queue"] == "test-serial"
        assert "start_time" not in meta["stats"] and "queued_time" in meta["stats"]
        assert (await evflow.get_metadata(second.workflow_id, observed.name))["status"] == "PENDING"
        pending = await evflow.list_all("PENDING")
        assert (second.workflow_id, evflow.WorkflowStatus.PENDING) in pending
        assert all(wid != first.workflow_id for wid, _ in pending)
        # run_async / resume of a pending id attach to it: nothing starts early
        again = await observed.step(key, 9).run_async(second.workflow_id)
        await evflow.resume_async(second.workflow_id)
        assert await again.status() == "PENDING"
        with pytest.raises(TimeoutError):
            await second.result(timeout=0.05)
        gates[key].set()
        assert await first.result() == 0
        assert await again.result() == 1
        meta = await evflow.get_metadata(second.workflow_id)
        assert meta["status"] == "SUCCESSFUL"
        assert meta["stats"]["queued_time"] <= meta["stats"]["start_time"]
    assert probes[key].started == [0, 1]


async def test_the_log_of_a_pending_workflow_replays_pending(tmp_path: Path, anyio_backend: str) -> None:
    key = new_probe(gate=True)
    store = tmp_path / "store"
    async with evflow.Engine(store):
        await serial.enqueue(observed.step(key, 0), workflow_id="a")
        await serial.enqueue(observed.step(key, 1), workflow_id="b")
        await wait_for(lambda: probes[key].started == [0])
        events = [e async for e in evflow.read_events(store, "b")]
        assert len(events) == 1 and events[0].pending and events[0].queue == "test-serial"
        assert evflow.replay(events, live=False).status == "PENDING"
        await evflow.cancel("a")


# -- limits seen from inside the steps ---------------------------------------------------------


async def test_a_queue_never_runs_more_than_its_concurrency(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    n = 200
    async with evflow.Engine(storage()) as engine:
        handles = [await limited.enqueue(observed.step(key, i)) for i in range(n)]
        await wait_for(lambda: probes[key].active == 5)  # the steps hold until released
        assert len(await engine.list_all("PENDING")) == n - 5
        assert len(await engine.list_all("RUNNING")) == 5
        gates[key].set()
        with anyio.fail_after(120):
            assert [await h.result() for h in handles] == list(range(n))
    assert probes[key].peak == 5
    assert sorted(probes[key].started) == list(range(n))


async def test_worker_concurrency_caps_one_engine(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()) as engine:
        handles = [await per_worker.enqueue(observed.step(key, i)) for i in range(60)]
        await wait_for(lambda: probes[key].active == 3)
        assert len(await engine.list_all("PENDING")) == 57
        gates[key].set()
        with anyio.fail_after(60):
            for h in handles:
                await h.result()
    assert probes[key].peak == 3


async def test_fifo_order_within_a_queue(storage: StoreFactory) -> None:
    key = new_probe()
    async with evflow.Engine(storage()):
        handles = [await serial.enqueue(observed.step(key, i)) for i in range(25)]
        with anyio.fail_after(60):
            for h in handles:
                await h.result()
    assert probes[key].started == list(range(25))


async def test_lower_priority_numbers_start_first_then_fifo(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()):
        blocker = await ranked.enqueue(observed.step(key, -1))
        await wait_for(lambda: probes[key].started == [-1])
        priorities = [5, 1, 3, 1, 0, 5, 3, 0]
        handles = [await ranked.enqueue(observed.step(key, i), priority=p) for i, p in enumerate(priorities)]
        gates[key].set()
        with anyio.fail_after(60):
            await blocker.result()
            for h in handles:
                await h.result()
    expected = sorted(range(len(priorities)), key=lambda i: (priorities[i], i))
    assert probes[key].started == [-1, *expected]


async def test_a_held_dedup_id_raises_and_records_nothing(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()) as engine:
        running = await serial.enqueue(observed.step(key, 0), dedup_id="cart-1")
        waiting = await serial.enqueue(observed.step(key, 1), dedup_id="cart-2")
        await wait_for(lambda: probes[key].started == [0])
        before = sorted(wid for wid, _ in await engine.list_all())
        for held in ("cart-1", "cart-2"):  # RUNNING and PENDING holders
            with pytest.raises(evflow.DuplicateWorkflowError) as info:
                await serial.enqueue(observed.step(key, 2), workflow_id=f"dup-{held}", dedup_id=held)
            assert isinstance(info.value, evflow.EvflowError)
            assert held in str(info.value)
        assert sorted(wid for wid, _ in await engine.list_all()) == before
        # another queue does not share the ids
        other = await limited.enqueue(observed.step(key, 3), dedup_id="cart-1")
        gates[key].set()
        with anyio.fail_after(30):
            await running.result()
            await waiting.result()
            await other.result()
        # once its holder ended, the id is free again
        again = await serial.enqueue(observed.step(key, 4), dedup_id="cart-1")
        assert await again.result(timeout=30) == 4


async def test_canceling_a_pending_workflow_means_it_never_starts(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()):
        first = await serial.enqueue(observed.step(key, 0))
        doomed = await serial.enqueue(observed.step(key, 1))
        last = await serial.enqueue(observed.step(key, 2))
        await wait_for(lambda: probes[key].started == [0])
        await doomed.cancel()
        assert await doomed.status() == "CANCELED"
        with pytest.raises(evflow.WorkflowCancellationError):
            await doomed.result()
        gates[key].set()
        with anyio.fail_after(30):
            assert await first.result() == 0
            assert await last.result() == 2
        assert await doomed.status() == "CANCELED"
    assert probes[key].started == [0, 2]


async def test_pending_workflows_survive_a_restart_and_start_in_order(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage()):
        await serial.enqueue(observed.step(key, 0), workflow_id=f"{key}-0")
        for i in range(1, 6):
            await serial.enqueue(observed.step(key, i), workflow_id=f"{key}-{i}")
        await wait_for(lambda: probes[key].started == [0])
    # closed with 0 running (now RESUMABLE: it holds no slot) and 1..5 PENDING
    gates[key].set()
    async with evflow.Engine(storage()) as engine:  # no recover: starting pending work is not recovery
        with anyio.fail_after(30):
            for i in range(1, 6):
                assert await engine.get_output(f"{key}-{i}") == i
        assert await engine.get_status(f"{key}-0") == "RESUMABLE"
    assert probes[key].started == [0, 1, 2, 3, 4, 5]


# -- engine limits ----------------------------------------------------------------------------------


async def test_max_running_workflows_makes_more_run_async_calls_pending(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage(), max_running_workflows=4) as engine:
        handles = [await observed.step(key, i).run_async() for i in range(80)]
        await wait_for(lambda: probes[key].active == 4)
        assert len(await engine.list_all("PENDING")) == 76
        assert [await h.status() for h in handles[4:]] == ["PENDING"] * 76
        gates[key].set()
        with anyio.fail_after(60):
            assert [await h.result() for h in handles] == list(range(80))
        # started in order: the recorded start times follow the calls
        starts = [(await h.metadata())["stats"]["start_time"] for h in handles[4:]]
        assert starts == sorted(starts)
    assert probes[key].peak == 4
    assert sorted(probes[key].started[:4]) == [0, 1, 2, 3]


async def test_max_pending_workflows_refuses_more_and_records_nothing(storage: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(storage(), max_running_workflows=1, max_pending_workflows=2) as engine:
        running = await observed.step(key, 0).run_async("r")
        await wait_for(lambda: probes[key].started == [0])
        waiting = [await serial.enqueue(observed.step(key, 1), workflow_id="p1")]
        waiting.append(await observed.step(key, 2).run_async("p2"))
        with pytest.raises(evflow.QueueFullError):
            await observed.step(key, 3).run_async("full-1")
        with pytest.raises(evflow.QueueFullError):
            await serial.enqueue(observed.step(key, 3), workflow_id="full-2")
        assert sorted(wid for wid, _ in await engine.list_all()) == ["p1", "p2", "r"]
        gates[key].set()
        with anyio.fail_after(30):
            await running.result()
            for h in waiting:
                await h.result()


# -- several engines on one store --------------------------------------------------------------------


async def test_two_engines_never_run_more_than_the_global_concurrency(shared: StoreFactory) -> None:
    key = new_probe(gate=True)
    n = 200
    async with evflow.Engine(shared()) as a, evflow.Engine(shared()) as b:
        handles = []
        for i in range(n):
            engine = a if i % 2 else b
            handles.append(await engine.enqueue(shared_limit, observed.step(key, i)))
        await wait_for(lambda: probes[key].active == 4)
        assert len(await a.list_all("PENDING")) == n - 4
        gates[key].set()
        with anyio.fail_after(180):
            for h in handles:
                await h.result()
    assert probes[key].peak == 4
    assert set(probes[key].by_engine) == {a.engine_id, b.engine_id}  # both took their share
    assert sorted(probes[key].started) == list(range(n))


async def test_dedup_ids_hold_across_engines(shared: StoreFactory) -> None:
    key = new_probe(gate=True)
    async with evflow.Engine(shared()) as a, evflow.Engine(shared()) as b:
        first = await a.enqueue(serial, observed.step(key, 0), dedup_id="order-7")
        with pytest.raises(evflow.DuplicateWorkflowError):
            await b.enqueue(serial, observed.step(key, 1), dedup_id="order-7")
        gates[key].set()
        assert await first.result(timeout=30) == 0


@pytest.fixture
async def postgres(anyio_backend: str) -> AsyncIterator[Callable[[], Store]]:
    async for factory in postgres_stores(anyio_backend):
        yield factory


class Counted:
    """What the queues asked of one store: its listings, its reads, and how often the
    answers of its feeds named each workflow."""

    def __init__(self, store: Store) -> None:
        self.listings = 0
        self.named: Counter[str] = Counter()
        self.reads: list[str] = []
        list_workflows, read, change_feed = store.list_workflows, store.read, store.change_feed

        async def counted_list() -> list[str]:
            self.listings += 1
            return await list_workflows()

        async def counted_read(workflow_id: str, after: int = 0) -> list[Any]:
            self.reads.append(workflow_id)
            return await read(workflow_id, after)

        def counted_feed() -> ChangeFeed:
            feed = change_feed()
            changes = feed.changes

            async def counted_changes(
                *, fence: bool = True, skip: Callable[[str], bool] | None = None
            ) -> dict[str, int] | None:
                found = await changes(fence=fence, skip=skip)
                self.named.update(list(found or ()))  # the ids (a mapping would add its seqs)
                return found

            feed.changes = counted_changes  # type: ignore[method-assign]
            return feed

        store.list_workflows = counted_list  # type: ignore[method-assign]
        store.read = counted_read  # type: ignore[method-assign]
        store.change_feed = counted_feed  # type: ignore[method-assign]


async def test_enqueues_and_claims_on_postgres_never_list_the_store(postgres: Callable[[], Store]) -> None:
    """What a queue reads to keep up with other engines grows with the workflows it
    handles, not with the store: no listing per enqueue or claim, and the answers of its
    feed name another engine's workflow only for that workflow's own commits."""
    key, others = new_probe(), new_probe()
    postgres_a = postgres()
    counted = Counted(postgres_a)
    store, mine = range(400), range(45)
    async with evflow.Engine(postgres_a) as engine, evflow.Engine(postgres()) as other:
        with anyio.fail_after(120):
            # another engine's, not through the queue: these run all at once (their own probe)
            runs = [lambda i=i: other.run(observed.step(others, i), workflow_id=f"o-{i}") for i in store]
            await run_all_at_once(runs)
            handles = [await engine.enqueue(limited, observed.step(key, i), dedup_id=f"d{i}") for i in mine]
            assert sorted([await h.result() for h in handles]) == list(mine)
            mine_ids = {h.workflow_id for h in handles}
    assert counted.listings == 0
    store_ids = {f"o-{i}" for i in store}
    # every claim's fenced answer names what was committed before it: each of them once at least
    assert store_ids <= set(counted.named)
    # ... then only after its own commits (start, step, end), not once per enqueue or claim
    assert max(counted.named[w] for w in store_ids) <= 4
    assert set(counted.named) <= store_ids | mine_ids
    assert sum(counted.named[w] for w in mine_ids) <= 6 * len(mine)
    assert probes[key].peak <= 5


async def test_a_wait_on_another_engines_workflow_reads_nothing_until_it_changes(
    postgres: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a workflow another engine runs is heard of (NOTIFY), not polled for."""
    # No recheck (a read of what others run) during the test: the 1 s window below sees no
    # read, and "second" can only be started by what the feed hears of the end of "first"
    # (a claim that asked the feed while its watcher waited used to leave the watcher deaf
    # to every later change, until the recheck).
    monkeypatch.setattr(_queues, "SHARED_RECHECK", 3600.0)
    key = new_probe(gate=True)
    store_a = postgres()
    counted = Counted(store_a)
    async with evflow.Engine(postgres()) as b, evflow.Engine(store_a) as a:
        first = await b.enqueue(serial, observed.step(key, 0), workflow_id="first")
        await wait_for(lambda: probes[key].active == 1)
        second = await a.enqueue(serial, observed.step(key, 1), workflow_id="second")
        await wait_status(a, "second", "PENDING")
        await wait_for(lambda: "first" in counted.reads)  # a learned that b runs it
        reads = len(counted.reads)
        await anyio.sleep(1.0)  # a window in which a poll would read "first" again
        assert counted.reads[reads:] == []
        gates[key].set()
        with anyio.fail_after(30):
            assert await first.result() == 0
            assert await second.result() == 1
    assert probes[key].peak == 1


async def test_a_wait_for_a_pending_workflow_reads_nothing_until_it_is_claimed(
    postgres: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Awaiting a PENDING workflow on a shared store costs no read while it waits: the queue
    service hears of its claim (here by another engine) and that wakes the wait."""
    monkeypatch.setattr(_queues, "SHARED_RECHECK", 3600.0)
    key = new_probe(gate=True)
    store_a = postgres()
    counted = Counted(store_a)
    async with evflow.Engine(postgres()) as b, evflow.Engine(store_a, queues=[]) as a:
        first = await b.enqueue(serial, observed.step(key, 0), workflow_id="first")
        await wait_for(lambda: probes[key].active == 1)
        second = await b.enqueue(serial, observed.step(key, 1), workflow_id="second")
        outputs: list[Any] = []

        async def wait_in_a() -> None:
            outputs.append(await a.get_output("second"))

        await wait_status(a, "second", "PENDING")  # a knows it (its queue service too)
        await anyio.sleep(0.2)  # the feed's news of the enqueue is in: nothing new to read
        looks = counted.reads.count("second")
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_in_a)
            await wait_for(lambda: counted.reads.count("second") > looks)  # the wait looked once
            reads = len(counted.reads)
            await anyio.sleep(2.5)  # a waiter that polled would read it again each second
            assert counted.reads[reads:] == []
            gates[key].set()
            with anyio.fail_after(30):
                assert await first.result() == 0
                assert await second.result() == 1
        assert outputs == [1]


# -- rate limits ---------------------------------------------------------------------------------------


async def test_a_rate_limit_allows_n_starts_in_any_window(storage: StoreFactory) -> None:
    key = new_probe()
    count, per = metered.rate_limit or (0, 0.0)
    async with evflow.Engine(storage()) as engine:
        handles = [await metered.enqueue(observed.step(key, i)) for i in range(14)]
        with anyio.fail_after(60):
            for h in handles:
                await h.result()
        starts = sorted([(await engine.get_metadata(h.workflow_id))["stats"]["start_time"] for h in handles])
    for i, at in enumerate(starts):
        in_window = [s for s in starts[i:] if s < at + per]
        assert len(in_window) <= count, (i, starts)
    # and the limit was the reason for waiting: some window is full
    assert any(len([s for s in starts[i:] if s < at + per]) == count for i, at in enumerate(starts))


# -- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"concurrency": 0}, id="concurrency-0"),
        pytest.param({"worker_concurrency": -1}, id="worker-negative"),
        pytest.param({"rate_limit": (0, 1.0)}, id="rate-n-0"),
        pytest.param({"rate_limit": (3, 0)}, id="rate-window-0"),
        pytest.param({"rate_limit": 3}, id="rate-not-a-pair"),
    ],
)
async def test_bad_queue_options_are_refused_when_declared(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        evflow.Queue("test-bad", **kwargs)  # type: ignore[arg-type]


async def test_enqueue_without_an_engine_says_how_to_open_one() -> None:
    with pytest.raises(evflow.NoEngineError):
        await serial.enqueue(gated.step("x"))


# -- the CLI and the log tools ---------------------------------------------------------------------------


def test_the_cli_lists_shows_exports_and_imports_pending_workflows(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    key = new_probe(gate=True)
    store = tmp_path / "store"

    async def populate() -> None:
        async with evflow.Engine(store):
            await serial.enqueue(observed.step(key, 0), workflow_id="first")
            await serial.enqueue(observed.step(key, 1), workflow_id="waiting")
            await wait_for(lambda: probes[key].started == [0])

    anyio.run(populate)
    tests_dir = str(Path(__file__).parent)
    env = {k: v for k, v in os.environ.items() if k != "EVFLOW_STORAGE"}
    env["PYTHONPATH"] = os.pathsep.join([tests_dir, env.get("PYTHONPATH", "")])

    def cli(storage: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "evflow", "--storage", str(storage), *args],
            capture_output=True,
            env=env,
            input=stdin,
            check=False,
            timeout=120,
        )

    listed = cli(store, "list", "--status", "PENDING", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"workflow_id": "waiting", "status": "PENDING"}]
    assert cli(store, "status", "waiting").stdout.decode().strip() == "PENDING"
    shown = json.loads(cli(store, "show", "waiting", "--json").stdout)
    assert shown["status"] == "PENDING" and shown["queue"] == "test-serial"
    exported = cli(store, "export", "waiting")
    assert exported.returncode == 0, exported.stderr
    other = tmp_path / "other"
    assert cli(other, "import", "-", stdin=exported.stdout).returncode == 0
    assert cli(other, "export", "waiting").stdout == exported.stdout
    assert cli(other, "status", "waiting").stdout.decode().strip() == "PENDING"


async def test_enqueues_made_all_at_once_on_a_shared_store_all_land(shared: StoreFactory) -> None:
    """Many concurrent ``enqueue`` calls: each takes the queue's store-wide lock in turn,
    and holding it never starves the calls made under it of a connection."""
    key = new_probe()
    async with evflow.Engine(shared()) as engine:
        with anyio.fail_after(120):
            handles = await run_all_at_once(
                [lambda i=i: engine.enqueue(limited, observed.step(key, i)) for i in range(24)]
            )
            assert sorted([await h.result() for h in handles]) == list(range(24))
    assert probes[key].peak <= 5


async def run_all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls concurrently in a task group; their results in call order."""
    results: list[Any] = [None] * len(calls)

    async def one(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(one, index)
    return results
