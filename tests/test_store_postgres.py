"""The PostgreSQL store: several engines sharing one schema.

Needs a server: ``postgresql://postgres@127.0.0.1:5432/test`` unless ``$EVFLOW_TEST_POSTGRES``
says otherwise; the tests are skipped (with the reason) when it cannot be reached. Each
test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import asyncpg
import pytest

import evflow
from evflow._codec import encode_event
from evflow._errors import CorruptLogError, SequenceConflictError, StoreError
from evflow._events import AnyEvent, StepStarted, WorkflowStarted
from evflow.stores import PostgresStore, Store
from evflow.stores.postgres import _dsn, _notify, _store
from store_contract import StoreContract

DSN = os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    # asyncpg runs on asyncio only (test_refuses_to_open_under_trio checks the message).
    return "asyncio"


async def _probe(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    await conn.close()


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    try:
        asyncio.run(_probe(DSN))
    except Exception as exc:  # any failure to connect means: no server for these tests
        pytest.skip(f"PostgreSQL not reachable at {_dsn.redact(DSN, 'evflow')}: {exc!r}")
    return DSN


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    name = f"evflow_test_{uuid.uuid4().hex}"
    yield name
    await _drop_schema(pg_dsn, name)


async def _drop_schema(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def running(*stores: PostgresStore) -> AsyncIterator[None]:
    """Open the stores and run their group commit, as engines do; close them after."""
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        for store in stores:
            await store.open()
            stack.push_async_callback(store.close)
            await tg.start(store.run)
        yield


def started(seq: int, name: str = "step") -> StepStarted:
    return StepStarted(seq=seq, time=time.time(), name=name)


def steps(events: Sequence[AnyEvent]) -> list[tuple[int, str]]:
    """``(seq, step name)`` of StepStarted events."""
    return [(e.seq, e.name) for e in events if isinstance(e, StepStarted)]


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll until ``condition()`` holds (no time limit: an event, not a speed, is awaited)."""
    while not await condition():
        await anyio.sleep(0.01)


@asynccontextmanager
async def follower(store: PostgresStore, workflow_id: str, after: int) -> AsyncIterator[anyio.Event]:
    """A task following the workflow's events after ``after`` (the event is set once it is
    woken), from the moment it listens for them (it polls an hour apart)."""
    woken = anyio.Event()

    async def follow() -> None:
        await store.wait_for_events(workflow_id, after, poll_interval=3600)
        woken.set()

    async def listening() -> bool:
        return workflow_id in store._listener.waiters

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await until(listening)
        yield woken


pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


# -- no server needed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        pytest.param("postgresql://u:secret@db:5432/app", "postgresql://u@db:5432/app", id="authority"),
        pytest.param(
            "postgresql://u@db/app?password=secret&sslmode=require",
            "postgresql://u@db/app?sslmode=require",
            id="query",
        ),
        pytest.param(
            "postgresql://db/app?schema=tenant_1", "postgresql://db/app?schema=tenant_1", id="schema"
        ),
        pytest.param("postgresql:///app?host=/run/pg", "postgresql:///app?host=%2Frun%2Fpg", id="socket"),
    ],
)
def test_url_never_shows_the_password(dsn: str, url: str) -> None:
    assert PostgresStore(dsn).url == url


def test_schema_from_the_url_or_the_argument() -> None:
    assert PostgresStore("postgresql://db/app?schema=tenant_1").schema == "tenant_1"
    assert PostgresStore("postgresql://db/app", schema="tenant_2").schema == "tenant_2"
    assert PostgresStore("postgresql://db/app").schema == "evflow"
    with pytest.raises(ValueError, match="contradicts"):
        PostgresStore("postgresql://db/app?schema=a", schema="b")


@pytest.mark.parametrize("name", ["", "1abc", 'x"; DROP TABLE y; --', "a-b", "x" * 64, "évflow"])
def test_schema_name_must_be_a_plain_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema name"):
        PostgresStore("postgresql://db/app", schema=name)


def test_refuses_to_open_under_trio() -> None:
    store = PostgresStore("postgresql://db/app")
    with pytest.raises(RuntimeError, match="asyncio"):
        anyio.run(store.open, backend="trio")


# -- several engines ---------------------------------------------------------------------------


async def test_same_seq_from_two_engines_one_wins(pg_dsn: str, schema: str) -> None:
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a, b):
        a.append_nowait("wf", [started(1, "from-a")])
        b.append_nowait("wf", [started(1, "from-b")])
        outcomes: dict[str, BaseException | None] = {}

        async def flush(name: str, store: PostgresStore) -> None:
            try:
                await store.flush("wf")
            except SequenceConflictError as exc:
                outcomes[name] = exc
            else:
                outcomes[name] = None

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush, "from-a", a)
            tg.start_soon(flush, "from-b", b)

        winners = [name for name, exc in outcomes.items() if exc is None]
        assert len(winners) == 1
        loser = next(exc for exc in outcomes.values() if exc is not None)
        assert isinstance(loser, SequenceConflictError)
        assert (loser.workflow_id, loser.expected, loser.actual) == ("wf", 1, 1)
        assert steps(await a.read("wf")) == [(1, winners[0])]


@pytest.mark.parametrize("clean_events", [pytest.param(1, id="one-statement"), pytest.param(300, id="copy")])
async def test_a_clash_leaves_the_rest_of_the_batch(pg_dsn: str, schema: str, clean_events: int) -> None:
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a):
        await a.append("shared", [started(1, "from-a")])
    await b.open()  # no run: flush writes the batch itself, so both appends share it
    try:
        b.append_nowait("shared", [started(1, "from-b")])
        b.append_nowait("clean", [started(seq) for seq in range(1, clean_events + 1)])
        errors: dict[str | None, BaseException | None] = {}

        async def flush(workflow_id: str | None) -> None:
            try:
                await b.flush(workflow_id)
            except SequenceConflictError as exc:
                errors[workflow_id] = exc
            else:
                errors[workflow_id] = None

        async with anyio.create_task_group() as tg:
            for workflow_id in ("clean", "shared", None):
                tg.start_soon(flush, workflow_id)
        # Only the clashing workflow's waiters (and a flush of everything) see the error.
        assert errors["clean"] is None
        for workflow_id in ("shared", None):
            error = errors[workflow_id]
            assert isinstance(error, SequenceConflictError)
            assert (error.workflow_id, error.expected, error.actual) == ("shared", 1, 1)
        assert len(await b.read("clean")) == clean_events
        assert steps(await b.read("shared")) == [(1, "from-a")]
    finally:
        await b.close()


async def test_after_a_conflict_appends_wait_until_the_caller_knows(pg_dsn: str, schema: str) -> None:
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a, b):
        await a.append("wf", [started(1, "from-a")])
        b.append_nowait("wf", [started(1, "from-b")])
        b.append_nowait("other", [started(1)])
        await b.flush("other")  # the batch is written; nobody has been told of "wf"'s clash
        with pytest.raises(SequenceConflictError) as caught:
            b.append_nowait("wf", [started(2, "from-b")])  # built on b's rejected seq 1
        assert (caught.value.expected, caught.value.actual) == (2, 1)
        assert steps(await b.read("wf")) == [(1, "from-a")]  # b knows the log now
        await b.append("wf", [started(2, "from-b")])
        assert steps(await a.read("wf")) == [(1, "from-a"), (2, "from-b")]


async def test_after_a_reported_conflict_the_stored_log_can_be_continued(pg_dsn: str, schema: str) -> None:
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a, b):
        await a.append("wf", [started(1), started(2)])
        with pytest.raises(SequenceConflictError) as caught:
            await b.append("wf", [started(2)])
        assert (caught.value.expected, caught.value.actual) == (2, 2)
        await b.append("wf", [started(3)])
        assert [e.seq for e in await a.read("wf")] == [1, 2, 3]


async def test_events_queued_behind_a_rejected_batch_never_land(pg_dsn: str, schema: str) -> None:
    store = PostgresStore(pg_dsn, schema=schema)
    async with running(store):
        await store.append("other", [started(1)])  # creates the schema
        rival = await asyncpg.connect(pg_dsn)
        try:
            # Another engine is committing seq 1 of "wf": ours must wait for its outcome.
            tx = rival.transaction()
            await tx.start()
            await rival.execute(f'INSERT INTO "{schema}".workflows VALUES ($1, 1)', "wf")
            store.append_nowait("wf", [started(1, "ours")])

            async def blocked() -> bool:
                waiting = await rival.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                    f'%"{schema}".workflows%',
                )
                return bool(waiting)

            await until(blocked)
            store.append_nowait("wf", [started(2, "ours")])  # queued behind the blocked batch
            await rival.execute(
                f'INSERT INTO "{schema}".events VALUES ($1, 1, 0, $2, $3)',
                "wf",
                "StepStarted",
                encode_event(started(1, "rival")),
            )
            await tx.commit()
            with pytest.raises(SequenceConflictError) as caught:
                await store.flush("wf")
            assert caught.value.expected in (1, 2)
        finally:
            await rival.close()
        assert steps(await store.read("wf")) == [(1, "rival")]


async def test_a_flush_after_the_refused_batch_was_written_still_raises(pg_dsn: str, schema: str) -> None:
    """The batch that held our refused append was judged and dropped before we flushed
    that workflow (we waited for another one of the batch): the flush still raises."""
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a, b):
        await b.append("wf", [started(1, "rival")])
        a.append_nowait("wf", [started(1, "ours")])
        a.append_nowait("other", [started(1)])
        await a.flush("other")  # the batch holding both is written now
        with pytest.raises(SequenceConflictError) as caught:
            await a.flush("wf")
        assert caught.value.expected == 1
        await a.flush("wf")  # reported once
        assert steps(await b.read("wf")) == [(1, "rival")]


async def test_the_database_refuses_a_gap_this_store_cannot_see(pg_dsn: str, schema: str) -> None:
    a, b = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(a, b):
        await a.append("wf", [started(1), started(2), started(3)])
        await b.append("wf", [started(4)])  # b never read "wf": the database checked seq 4 follows
        assert await b.delete("wf")
        await b.append("wf", [started(1, "anew")])  # b freed the id and reused it
        with pytest.raises(SequenceConflictError) as caught:
            await a.append("wf", [started(4)])  # follows a's stale view (seq 3) of the log
        assert (caught.value.expected, caught.value.actual) == (4, 1)
        assert steps(await a.read("wf")) == [(1, "anew")]


async def test_a_failed_write_is_reported_and_the_database_judges_the_next(pg_dsn: str, schema: str) -> None:
    app = f"evflow-test-{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in pg_dsn else "?"
    store = PostgresStore(f"{pg_dsn}{sep}application_name={app}", schema=schema)
    await store.open()
    rival = await asyncpg.connect(pg_dsn)
    try:
        await store.append("wf", [started(1)])
        tx = rival.transaction()
        await tx.start()  # holds the workflow's row, so the next write waits on the server
        await rival.execute(f'SELECT 1 FROM "{schema}".workflows WHERE workflow_id = $1 FOR UPDATE', "wf")
        store.append_nowait("wf", [started(2)])
        async with anyio.create_task_group() as tg:
            failed = anyio.Event()

            async def write() -> None:
                with pytest.raises(StoreError, match="writing events failed"):
                    await store.flush("wf")
                failed.set()

            tg.start_soon(write)

            blocked = "FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'"

            async def waiting() -> bool:
                return bool(await rival.fetchval(f"SELECT count(*) {blocked}", app))

            await until(waiting)
            # The connection is lost mid-write, as in a server restart or failover.
            await rival.execute(f"SELECT pg_terminate_backend(pid) {blocked}", app)
            await failed.wait()
        await tx.rollback()
        # Whether seq 2 landed is unknown to the store: the database decides what follows.
        with pytest.raises(SequenceConflictError):
            await store.append("wf", [started(3)])
        await store.append("wf", [started(2)])
        assert [e.seq for e in await store.read("wf")] == [1, 2]
    finally:
        await rival.close()
        await store.close()


async def test_a_write_connection_the_server_ended_between_commits_is_replaced(
    pg_dsn: str, schema: str
) -> None:
    # The group commit holds one connection across commits: when the server ends it (a
    # restart, a failover, an administrator), the next commit takes a new one.
    app = f"evflow-test-{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in pg_dsn else "?"
    store = PostgresStore(f"{pg_dsn}{sep}application_name={app}", schema=schema)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with running(store):
            await store.append("wf", [started(1)])
            await store.append("wf", [started(2)])
            writers = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2",
                app,
                "%WITH batch AS%",  # the append statement
            )
            assert len(writers) == 1  # both commits went through the same connection
            await admin.execute("SELECT pg_terminate_backend($1)", writers[0]["pid"])

            async def seen_closed() -> bool:
                return not _store._usable(store._write_conn)

            await until(seen_closed)
            await store.append("wf", [started(3)])
            await store.append("wf", [started(4)])
            assert [e.seq for e in await store.read("wf")] == [1, 2, 3, 4]
    finally:
        await admin.close()


# -- following and liveness --------------------------------------------------------------------


@pytest.mark.parametrize("many", [pytest.param(False, id="ids"), pytest.param(True, id="too-many-ids")])
async def test_listen_wakes_a_follower_on_another_engines_append(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    monkeypatch.setattr(_notify, "LISTEN_RECHECK", 3600.0)  # only a NOTIFY can wake it
    writer, reader = (
        PostgresStore(pg_dsn, schema=schema),
        PostgresStore(pg_dsn, schema=schema, read_only=True),
    )
    async with running(writer):
        await writer.append("wf", [started(1)])
        await reader.open()
        try:
            async with follower(reader, "wf", 1) as woken:
                assert not woken.is_set()
                if many:  # a NOTIFY payload is limited: this batch sends "*" instead of ids
                    for n in range(40):
                        writer.append_nowait(f"{n:0>250}", [started(1)])
                writer.append_nowait("wf", [started(2)])
                await writer.flush()
                await woken.wait()
        finally:
            await reader.close()


async def test_an_engine_hears_commits_only_once_it_follows_a_workflow(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancel requests and mail come on the control channel, which every writing engine
    # hears; commits are announced on the commit channel, which an engine LISTENs to only
    # from its first follower on: one that follows nothing is not woken by each of its own
    # commits.
    monkeypatch.setattr(_notify, "LISTEN_RECHECK", 3600.0)  # only a NOTIFY can wake a follower
    heard: list[str] = []
    on_notify = _notify.Listener._on_notify

    def counting(self: _notify.Listener, conn: object, pid: int, channel: str, payload: str) -> None:
        heard.append(payload)
        on_notify(self, conn, pid, channel, payload)

    monkeypatch.setattr(_notify.Listener, "_on_notify", counting)
    store, other = PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema)
    async with running(store, other):
        assert await store.wait_cancel_requests(0.01) == set()  # now listening
        await store.append("wf", [started(1)])
        await store.append("wf", [started(2)])
        await other.append("elsewhere", [started(1)])
        await other.request_cancel("wf")
        # Notifications come in commit order: the cancel request was sent after the commits.
        assert await store.wait_cancel_requests(3600) == {"wf"}
        assert heard == ['^["wf"]']

        async with follower(store, "followed", 0) as woken:
            await other.append("followed", [started(1)])
            await woken.wait()
        assert '["followed"]' in heard


async def test_wait_for_events_returns_at_once_when_there_are_some(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing wakes a waiter here but an append (polls and re-checks are an hour apart), as
    # the other waiter shows: the first call returns only because it looks before it
    # waits. Were it to wait first, it would hang until pytest-timeout stops the run.
    monkeypatch.setattr(_notify, "LISTEN_RECHECK", 3600.0)
    store = PostgresStore(pg_dsn, schema=schema)
    async with running(store), anyio.create_task_group() as tg:
        await store.append("wf", [started(1), started(2)])
        other_returned = anyio.Event()

        async def wait_for_seq_3() -> None:
            await store.wait_for_events("wf", 2, poll_interval=3600)
            other_returned.set()

        tg.start_soon(wait_for_seq_3)
        await store.wait_for_events("wf", 1, poll_interval=3600)
        assert not other_returned.is_set()
        await store.append("wf", [started(3)])
        await other_returned.wait()


async def test_owner_alive_while_an_engine_is_open(pg_dsn: str, schema: str) -> None:
    reader = PostgresStore(pg_dsn, schema=schema, read_only=True)
    reader.owner_id = "reader"
    await reader.open()
    try:
        assert not await reader.owner_alive("reader")  # a read-only store does not count
        engine = PostgresStore(pg_dsn, schema=schema)
        engine.owner_id = "engine-a"
        async with running(engine):
            assert await reader.owner_alive("engine-a")
            assert await engine.owner_alive("engine-a")
            assert not await reader.owner_alive("engine-b")
        assert not await reader.owner_alive("engine-a")
    finally:
        await reader.close()


async def test_two_engines_opening_at_once_create_the_schema_once(pg_dsn: str, schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=schema) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.open)
    try:
        for n, store in enumerate(stores):
            await store.append(f"wf-{n}", [started(1)])
        assert sorted(await stores[0].list_workflows()) == [f"wf-{n}" for n in range(4)]
    finally:
        for store in stores:
            await store.close()


# -- reading -------------------------------------------------------------------------------------


async def test_read_only_store_reads_but_never_writes(pg_dsn: str, schema: str) -> None:
    reader = PostgresStore(pg_dsn, schema=schema, read_only=True)
    await reader.open()
    try:
        # The schema does not exist yet: a reader sees an empty store and creates nothing.
        assert await reader.read("wf") == []
        assert await reader.list_workflows() == []
        assert await reader.read_all() == {}
        with pytest.raises(StoreError, match="read-only"):
            reader.append_nowait("wf", [started(1)])
        with pytest.raises(StoreError, match="read-only"):
            await reader.delete("wf")
        writer = PostgresStore(pg_dsn, schema=schema)
        async with running(writer):
            await writer.append("wf", [started(1)])
        assert [e.seq for e in await reader.read("wf")] == [1]
    finally:
        await reader.close()


async def test_a_damaged_row_names_its_workflow_and_seq(pg_dsn: str, schema: str) -> None:
    store = PostgresStore(pg_dsn, schema=schema)
    async with running(store):
        first = WorkflowStarted(seq=1, time=time.time(), workflow_id="bad")
        await store.append("bad", [first, started(2)])
        await store.append("good", [started(1)])
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"UPDATE \"{schema}\".events SET payload = '\\x00ff' WHERE workflow_id = 'bad' AND seq = 2"
            )
        finally:
            await conn.close()
        with pytest.raises(CorruptLogError) as caught:
            await store.read("bad")
        assert (caught.value.workflow_id, caught.value.position) == ("bad", 2)
        logs = await store.read_all()
        assert isinstance(logs["bad"], CorruptLogError)
        assert [e.seq for e in logs["good"]] == [1]  # type: ignore[union-attr]


async def test_flush_writes_itself_without_run_and_close_is_idempotent(pg_dsn: str, schema: str) -> None:
    store = PostgresStore(pg_dsn, schema=schema)
    await store.open()
    store.append_nowait("wf", [started(1)])
    store.append_nowait("wf", [started(2)])
    await store.flush()
    assert [e.seq for e in await store.read("wf")] == [1, 2]
    store.append_nowait("wf", [started(3)])
    await store.close()  # flushes what is queued
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        store.append_nowait("wf", [started(4)])
    again = PostgresStore(pg_dsn, schema=schema, read_only=True)
    await again.open()
    try:
        assert [e.seq for e in await again.read("wf")] == [1, 2, 3]
    finally:
        await again.close()


async def test_events_nobody_flushes_are_committed_by_themselves(pg_dsn: str, schema: str) -> None:
    # A StepStarted is queued and never flushed: the group commit writes it anyway, soon
    # (LAZY_COMMIT_SECONDS after its batch began), so other engines see running steps.
    store = PostgresStore(pg_dsn, schema=schema)
    reader = PostgresStore(pg_dsn, schema=schema, read_only=True)
    async with running(store):
        await store.append("wf", [started(1)])
        store.append_nowait("wf", [started(2)])
        await reader.open()
        try:

            async def landed() -> bool:
                return [e.seq for e in await reader.read("wf")] == [1, 2]

            await until(landed)
        finally:
            await reader.close()


class _CountingCommits(PostgresStore):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commits = 0

    async def _commit(self, batch: _store._Batch) -> None:
        self.commits += bool(batch.by_workflow)
        await super()._commit(batch)


@evflow.step
def _add_one(x: int) -> int:
    return x + 1


async def test_a_step_costs_one_commit_its_start_waits_for_its_end(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a flush commits here (a batch nobody waits for would wait an hour): each step's
    # StepStarted goes out with its StepFinished, in one transaction, not in one of its own.
    monkeypatch.setattr(_store, "LAZY_COMMIT_SECONDS", 3600.0)
    store = _CountingCommits(pg_dsn, schema=schema)
    node = _add_one.step(0)
    for _ in range(19):
        node = _add_one.step(node)
    async with evflow.Engine(store) as engine:
        before = store.commits
        assert await engine.run(node, "chain") == 20
        commits = store.commits - before
    assert commits <= 20 + 1, commits  # the start with the first step's, then one per step


async def _refuses_use(store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="not open"):
        store.append_nowait("wf", [started(1)])
    with pytest.raises(StoreError, match="not open"):
        await store.read("wf")
    with pytest.raises(StoreError, match="not open"):
        await store.list_workflows()


async def test_close_without_open_or_run(pg_dsn: str, schema: str) -> None:
    # close is a no-op on a store never opened, and on one already closed; a closed store
    # refuses to be used, holds no writer registration, and can be opened again.
    never = PostgresStore(pg_dsn, schema=schema)
    await never.close()
    await _refuses_use(never)
    reader = PostgresStore(pg_dsn, schema=schema, read_only=True)
    store = PostgresStore(pg_dsn, schema=schema)
    store.owner_id = "engine-a"
    await store.open()
    await reader.open()
    try:
        assert await reader.owner_alive("engine-a")
        await store.close()
        assert not await reader.owner_alive("engine-a")
        await store.close()
        await _refuses_use(store)
        async with running(store):
            await store.append("wf", [started(1)])
        async with running(never):
            assert [e.seq for e in await never.read("wf")] == [1]
        await _refuses_use(never)
    finally:
        await reader.close()


# -- the store contract ----------------------------------------------------------------------


class TestPostgresStore(StoreContract):
    """The shared store contract, one fresh schema per test (dropped afterwards)."""

    @pytest.fixture(autouse=True)
    def _use_schema(self, pg_dsn: str, schema: str) -> None:
        self.dsn = pg_dsn
        self.schema = schema

    async def make_store(self, tmp_path: Path) -> Store:
        store = PostgresStore(self.dsn, schema=self.schema)
        await store.open()
        return store

    async def make_reader(self, tmp_path: Path) -> Store | None:
        store = PostgresStore(self.dsn, schema=self.schema, read_only=True)
        await store.open()
        return store
