"""The store contract as a reusable test suite: every store must pass it.

Use it by subclassing ``StoreContract`` in a ``test_store_<name>.py`` module under a
``Test...`` name (the base class itself is not collected; ``tests/`` is on ``sys.path``
under pytest's default import mode, hence the plain import)::

    from store_contract import StoreContract

    class TestMyStore(StoreContract):
        async def make_store(self, tmp_path: Path) -> Store:
            store = MyStore(...)          # an empty location unique to this test
            await store.open()
            return store                  # opened; the suite runs and closes it

        async def make_reader(self, tmp_path: Path) -> Store | None:   # optional
            ...                           # an independent opened view of the same data

Hooks (stable names, other store suites rely on them):

- ``make_store(tmp_path)`` (required): an opened store on the location that belongs to
  ``tmp_path`` (empty at a test's first call; a second call in the same test reopens the
  same data, as a restarted engine would). Each test
  starts its background work with ``await task_group.start(store.run)`` and closes it
  (``await store.close()``) before leaving the task group, as the engine does.
- ``make_reader(tmp_path)`` (optional, default None): a second, independently opened store
  on the same location (another process would see what it sees). Tests of what ``flush``
  guarantees and of persistence use it and are skipped when it returns None; the suite
  closes it.

Tests are plain async methods marked ``anyio``; they run on asyncio and trio
(``anyio_backend`` in conftest.py). No test depends on timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from evflow._errors import CorruptLogError, SequenceConflictError
from evflow._events import (
    AnyEvent,
    ErrorInfo,
    Event,
    MetadataAttached,
    StepFailed,
    StepFinished,
    StepStarted,
    WorkflowFinished,
    WorkflowStarted,
)
from evflow.stores import Store

__all__ = ["StoreContract", "make_events"]


def make_events(workflow_id: str, first: int, count: int, *, tag: str = "") -> list[Event]:
    """``count`` events of varied types with seqs ``first``, ``first + 1``, ...

    ``tag`` goes into every event (as a step name or metadata) so that two appends at the
    same seqs can be told apart.
    """
    out: list[Event] = []
    for seq in range(first, first + count):
        time = 1_764_150_000.0 + seq / 8
        name = f"step{tag}_{seq}"
        kind = seq % 5
        event: Event
        if seq == 1:
            event = WorkflowStarted(seq=1, time=time, workflow_id=workflow_id, user_metadata={"tag": tag})
        elif kind == 0:
            event = StepFinished(seq=seq, time=time, name=name, output=bytes([0, seq % 256]) + tag.encode())
        elif kind == 1:
            event = StepFailed(
                seq=seq,
                time=time,
                name=name,
                attempt=2,
                will_retry=True,
                error=ErrorInfo(type="builtins:ValueError", message=f"boom {tag}"),
            )
        elif kind == 2:
            event = MetadataAttached(seq=seq, time=time, metadata={"k": [seq, tag]}, step=name)
        elif kind == 3:
            event = WorkflowFinished(seq=seq, time=time)
        else:
            event = StepStarted(seq=seq, time=time, name=name)
        out.append(event)
    return out


def seqs(events: Sequence[AnyEvent]) -> list[int]:
    return [event.seq for event in events]


class StoreContract:
    """Behaviour every store shares (see the module docstring for the hooks)."""

    async def make_store(self, tmp_path: Path) -> Store:
        raise NotImplementedError

    async def make_reader(self, tmp_path: Path) -> Store | None:
        return None

    @asynccontextmanager
    async def running(self, tmp_path: Path) -> AsyncIterator[Store]:
        """An opened store with ``run`` started in a task group; closed on the way out."""
        store = await self.make_store(tmp_path)
        closed = False
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(store.run)
                try:
                    yield store
                finally:
                    closed = True
                    await store.close()
        finally:
            if not closed:
                await store.close()

    def require_reader(self) -> None:
        """Skip the test when the store has no independent reader (no persistence)."""
        if type(self).make_reader is StoreContract.make_reader:
            pytest.skip("this store has no independent reader")

    @asynccontextmanager
    async def reader(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = await self.make_reader(tmp_path)
        if store is None:
            pytest.skip("this store has no independent reader")
        try:
            yield store
        finally:
            await store.close()

    # -- append and read ----------------------------------------------------------------

    @pytest.mark.anyio
    async def test_append_then_read_in_order(self, tmp_path: Path) -> None:
        events = make_events("wf", 1, 12)
        async with self.running(tmp_path) as store:
            await store.append("wf", events[:5])
            store.append_nowait("wf", events[5:9])
            store.append_nowait("wf", events[9:])
            await store.flush()
            assert await store.read("wf") == events

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "after", [pytest.param(0, id="all"), 1, 5, 11, pytest.param(12, id="at-end"), 40]
    )
    async def test_read_after(self, tmp_path: Path, after: int) -> None:
        events = make_events("wf", 1, 12)
        async with self.running(tmp_path) as store:
            await store.append("wf", events)
            assert await store.read("wf", after) == events[after:]

    @pytest.mark.anyio
    async def test_read_unknown_is_empty(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            assert await store.read("nobody") == []
            assert await store.read("nobody", 3) == []
            assert "nobody" not in await store.list_workflows()

    @pytest.mark.anyio
    async def test_empty_append_is_a_no_op(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            await store.append("wf", [])
            await store.append("wf", make_events("wf", 1, 2))
            await store.append("wf", [])
            assert seqs(await store.read("wf")) == [1, 2]

    # -- sequence conflicts ----------------------------------------------------------------

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("first", "count"),
        [
            pytest.param(3, 1, id="duplicate-last"),
            pytest.param(1, 2, id="duplicate-start"),
            pytest.param(2, 3, id="overlap"),
            pytest.param(5, 1, id="gap"),
            pytest.param(0, 1, id="zero"),
        ],
    )
    async def test_seq_conflict_overwrites_nothing(self, tmp_path: Path, first: int, count: int) -> None:
        original = make_events("wf", 1, 3, tag="a")
        async with self.running(tmp_path) as store:
            await store.append("wf", original)
            with pytest.raises(SequenceConflictError) as info:
                await store.append("wf", make_events("wf", first, count, tag="b"))
            assert info.value.workflow_id == "wf"
            assert await store.read("wf") == original
            # The store is still usable and the log continues where it was.
            more = make_events("wf", 4, 2, tag="c")
            await store.append("wf", more)
            assert await store.read("wf") == original + more

    @pytest.mark.anyio
    async def test_first_event_must_have_seq_one(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            with pytest.raises(SequenceConflictError):
                await store.append("wf", make_events("wf", 2, 2))
            assert await store.read("wf") == []
            await store.append("wf", make_events("wf", 1, 1))
            assert seqs(await store.read("wf")) == [1]

    @pytest.mark.anyio
    async def test_conflict_within_one_append_writes_nothing(self, tmp_path: Path) -> None:
        events = make_events("wf", 1, 4)
        async with self.running(tmp_path) as store:
            with pytest.raises(SequenceConflictError):
                await store.append("wf", [events[0], events[1], events[3]])
            assert await store.read("wf") == []
            await store.append("wf", events)
            assert await store.read("wf") == events

    @pytest.mark.anyio
    async def test_conflict_leaves_other_queued_appends_alone(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            store.append_nowait("a", make_events("a", 1, 2))
            with pytest.raises(SequenceConflictError):
                store.append_nowait("a", make_events("a", 2, 1, tag="dup"))
            store.append_nowait("b", make_events("b", 1, 3))
            await store.flush()
            assert seqs(await store.read("a")) == [1, 2]
            assert seqs(await store.read("b")) == [1, 2, 3]

    # -- listing and deleting ---------------------------------------------------------------

    @pytest.mark.anyio
    async def test_list_workflows(self, tmp_path: Path) -> None:
        ids = ["alpha", "beta", "Gamma", "gamma", "a/b", "../up", ".", "x" * 256, "ünï cödé ✓"]
        async with self.running(tmp_path) as store:
            assert await store.list_workflows() == []
            for workflow_id in ids:
                await store.append(workflow_id, make_events(workflow_id, 1, 2))
            assert sorted(await store.list_workflows()) == sorted(ids)
            for workflow_id in ids:
                events = await store.read(workflow_id)
                assert seqs(events) == [1, 2]
                first = events[0]
                assert isinstance(first, WorkflowStarted)
                assert first.workflow_id == workflow_id

    @pytest.mark.anyio
    async def test_delete_then_reuse_id(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            await store.append("wf", make_events("wf", 1, 6, tag="old"))
            await store.append("other", make_events("other", 1, 2))
            assert await store.delete("wf") is True
            assert await store.read("wf") == []
            assert sorted(await store.list_workflows()) == ["other"]
            assert await store.delete("wf") is False
            fresh = make_events("wf", 1, 2, tag="new")
            await store.append("wf", fresh)
            assert await store.read("wf") == fresh
            assert seqs(await store.read("other")) == [1, 2]

    @pytest.mark.anyio
    async def test_delete_unknown_is_false(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            assert await store.delete("nobody") is False

    @pytest.mark.anyio
    async def test_delete_after_queued_appends(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            store.append_nowait("wf", make_events("wf", 1, 3))
            assert await store.delete("wf") is True
            assert await store.read("wf") == []
            assert await store.list_workflows() == []

    # -- flush and durability ---------------------------------------------------------------

    @pytest.mark.anyio
    async def test_flush_with_nothing_queued(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            await store.flush()
            await store.flush("wf")
            await store.append("wf", make_events("wf", 1, 1))
            await store.flush()
            store.append_nowait("other", make_events("other", 1, 2))
            await store.flush("other")
            assert seqs(await store.read("other")) == [1, 2]
            await store.flush()

    @pytest.mark.anyio
    async def test_flushed_events_are_visible_to_another_reader(self, tmp_path: Path) -> None:
        self.require_reader()
        async with self.running(tmp_path) as store:
            store.append_nowait("a", make_events("a", 1, 3))
            store.append_nowait("b", make_events("b", 1, 2))
            store.append_nowait("a", make_events("a", 4, 2))
            await store.flush()
            async with self.reader(tmp_path) as reader:
                assert seqs(await reader.read("a")) == [1, 2, 3, 4, 5]
                assert seqs(await reader.read("b")) == [1, 2]
                assert sorted(await reader.list_workflows()) == ["a", "b"]
                assert await reader.read("a") == await store.read("a")

    @pytest.mark.anyio
    async def test_events_survive_close_and_reopen(self, tmp_path: Path) -> None:
        self.require_reader()
        events = make_events("wf", 1, 7)
        async with self.running(tmp_path) as store:
            store.append_nowait("wf", events[:4])
            await store.append("wf", events[4:])
            await store.append("gone", make_events("gone", 1, 1))
            await store.delete("gone")
            store.append_nowait("queued", make_events("queued", 1, 2))
            # close() makes what is still queued durable
        async with self.reader(tmp_path) as reader:
            assert await reader.read("wf") == events
            assert seqs(await reader.read("queued")) == [1, 2]
            assert await reader.read("gone") == []
            assert sorted(await reader.list_workflows()) == ["queued", "wf"]

    @pytest.mark.anyio
    async def test_reopened_store_continues_each_log(self, tmp_path: Path) -> None:
        self.require_reader()  # a store without persistence starts empty again
        async with self.running(tmp_path) as store:
            await store.append("wf", make_events("wf", 1, 3))
        async with self.running(tmp_path) as store:
            with pytest.raises(SequenceConflictError):
                await store.append("wf", make_events("wf", 3, 1, tag="dup"))
            await store.append("wf", make_events("wf", 4, 2))
            assert seqs(await store.read("wf")) == [1, 2, 3, 4, 5]

    @pytest.mark.anyio
    async def test_flush_without_run(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)
        try:
            store.append_nowait("wf", make_events("wf", 1, 3))
            await store.flush()
            assert seqs(await store.read("wf")) == [1, 2, 3]
            await store.append("wf", make_events("wf", 4, 1))
            assert seqs(await store.read("wf")) == [1, 2, 3, 4]
        finally:
            await store.close()

    # -- many workflows ------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_many_workflows_appended_concurrently(self, tmp_path: Path) -> None:
        n_workflows, n_events = 120, 9
        expected = {f"wf-{i}": make_events(f"wf-{i}", 1, n_events, tag=str(i)) for i in range(n_workflows)}

        async def write(store: Store, workflow_id: str) -> None:
            events = expected[workflow_id]
            for index in range(0, n_events, 2):  # appends of one or two events, each flushed
                await store.append(workflow_id, events[index : index + 2])
                await anyio.lowlevel.checkpoint()

        async with self.running(tmp_path) as store:
            async with anyio.create_task_group() as tg:
                for workflow_id in expected:
                    tg.start_soon(write, store, workflow_id)
            assert sorted(await store.list_workflows()) == sorted(expected)
            for workflow_id, events in expected.items():
                assert await store.read(workflow_id) == events
            assert await store.read_all() == expected

    @pytest.mark.anyio
    async def test_read_all(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            assert await store.read_all() == {}
            await store.append("a", make_events("a", 1, 4))
            await store.append("b", make_events("b", 1, 1))
            await store.append("c", make_events("c", 1, 2))
            await store.delete("c")
            everything = await store.read_all()
            assert sorted(everything) == ["a", "b"]
            assert not any(isinstance(v, CorruptLogError) for v in everything.values())
            assert everything["a"] == await store.read("a")
            assert everything["b"] == await store.read("b")

    # -- named locks (queues claim under them) -------------------------------------------------

    @pytest.mark.anyio
    async def test_a_named_lock_is_held_by_one_holder_at_a_time(self, tmp_path: Path) -> None:
        inside: list[str] = []
        overlaps: list[tuple[str, ...]] = []

        async def hold(store: Store, name: str, who: str) -> None:
            async with store.lock(name):
                inside.append(who)
                if len([w for w in inside if w.startswith(name)]) > 1:
                    overlaps.append(tuple(inside))
                await anyio.sleep(0.01)
                inside.remove(who)

        async with self.running(tmp_path) as store:
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(hold, store, "q1", f"q1-{i}")
                    tg.start_soon(hold, store, "q2", f"q2-{i}")
            assert overlaps == []
            async with store.lock("q1"):  # free again, and a block that raises releases it
                pass
            with pytest.raises(KeyError):
                async with store.lock("q1"):
                    raise KeyError("x")
            with anyio.fail_after(10):
                async with store.lock("q1"):
                    pass

    # -- the change feed (queues keep up with other engines through it) ------------------------

    @pytest.mark.anyio
    async def test_a_change_feed_names_what_changed_with_its_last_seq(self, tmp_path: Path) -> None:
        async with self.running(tmp_path) as store:
            await store.append("wf-old", make_events("wf-old", 1, 2))
            feed = store.change_feed()
            try:
                first = await feed.changes()  # may name every workflow of the store
                if first is None:  # this store's feed cannot tell: its readers list the store
                    assert await feed.changes(fence=False) is None
                    return
                assert first.get("wf-old", 2) == 2
                await store.append("wf-a", make_events("wf-a", 1, 3))
                await store.append("wf-b", make_events("wf-b", 1, 1))
                assert await feed.changes() == {"wf-a": 3, "wf-b": 1}
                await store.append("wf-a", make_events("wf-a", 4, 2))
                assert await feed.changes() == {"wf-a": 5}
                assert await feed.changes() == {}
            finally:
                feed.close()
                feed.close()

    @pytest.mark.anyio
    async def test_a_change_feed_names_each_workflow_of_a_large_batch_and_no_other(
        self, tmp_path: Path
    ) -> None:
        # 300 ids of 60 characters: more than one NOTIFY payload (8000 bytes) can carry.
        async with self.running(tmp_path) as store:
            await store.append("wf-old", make_events("wf-old", 1, 2))
            feed = store.change_feed()
            try:
                if await feed.changes() is None:
                    return  # this store's feed cannot tell: its readers list the store
                ids = [f"wf-{n:0>57}" for n in range(300)]
                for workflow_id in ids:
                    store.append_nowait(workflow_id, make_events(workflow_id, 1, 1))
                await store.flush()
                assert await feed.changes() == dict.fromkeys(ids, 1)  # not every workflow
            finally:
                feed.close()

    @pytest.mark.anyio
    async def test_a_wait_on_a_change_feed_outlives_an_answer_given_meanwhile(self, tmp_path: Path) -> None:
        # One task waits on the feed while another asks it for changes (the queue service's
        # watcher and a claim): the wait must still end at the next change.
        async with self.running(tmp_path) as store:
            feed = store.change_feed()
            try:
                if await feed.changes() is None:
                    return  # this store's feed cannot tell: its readers list the store
                woke = anyio.Event()

                async def waiter() -> None:
                    await feed.wait(3600.0)
                    woke.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.wait_all_tasks_blocked()
                    assert await feed.changes() == {}  # asked meanwhile: nothing yet
                    await store.append("wf-a", make_events("wf-a", 1, 1))
                    with anyio.fail_after(10):
                        await woke.wait()  # woken by the write, not by the time
                assert await feed.changes() == {"wf-a": 1}
            finally:
                feed.close()

    @pytest.mark.anyio
    async def test_a_change_feed_hears_another_writer(self, tmp_path: Path) -> None:
        self.require_reader()
        async with self.running(tmp_path) as store, self.reader(tmp_path) as reader:
            feed = reader.change_feed()
            try:
                if await feed.changes() is None:
                    return  # cannot tell (a store that is not shared needs no feed)
                await store.append("wf-a", make_events("wf-a", 1, 2))
                with anyio.fail_after(10):
                    await feed.wait(3600.0)  # woken by the write, not by the time
                assert await feed.changes() == {"wf-a": 2}  # fenced: nothing is missed
            finally:
                feed.close()
