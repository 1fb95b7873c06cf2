"""PostgreSQL store: one log shared by several engines (processes, machines).

Tables and statements are in ``_sql``; URLs in ``_dsn``; LISTEN/NOTIFY in ``_notify``.

Appends are optimistic: a batch moves ``workflows.last_seq`` from ``first_seq - 1`` to its
last seq (or inserts the row for ``seq == 1``) and inserts the events of exactly the
workflows whose row moved, all in one statement. The row lock makes a concurrent engine's
append to the same workflow wait and then miss, so a taken *or skipped* seq becomes
``SequenceConflictError`` for that workflow only, and nothing is ever overwritten.

After a conflict the store's view of the workflow is the database's, and events queued
behind the rejected ones are dropped with the same error. Until a caller has been handed
that error (by ``flush``/``append``) or has read the workflow again, further appends to it
are refused too: they were built on the rejected events. After that, appends that follow
the stored log are accepted, so an engine must not keep appending to a workflow whose
append raised ``SequenceConflictError``: another engine owns it.

Liveness and leases: a writing store with an ``owner_id`` holds ``pg_advisory_lock(OWNER_LOCK,
<crc32 of the id>)`` on a dedicated connection while open (the session lock goes away with
the connection, so a crashed engine never looks alive) and renews a heartbeat row in
``engines`` every ``lease / 6`` seconds on that connection. An engine is live while both
hold (``owner_alive`` looks for the lock in ``pg_locks`` rather than taking it, and
compares the heartbeat with the database's clock). Once ``lease`` seconds have passed
since its last renewal was sent (a paused process, a network cut), the store refuses
appends until it renews again (``lease_ok``): by then another engine may have taken its
workflows over. A renewal that finds such a lapse keeps refusing them until the engine
has stopped its runs of the workflows it lost (``wait_lapse``, ``lapse_checked``), so that
no step of one starts meanwhile. Whatever it still tries to append is fenced by the seqs
anyway.

Group commit: a batch is committed as soon as somebody ``flush``es it (``append`` does), or
LAZY_COMMIT_SECONDS after it began filling: events nobody waits for (a ``StepStarted``)
wait that long for company, so that a short step costs one commit, not two (the file
store does the same).

Each committed batch sends ``NOTIFY`` on a per-schema channel with a JSON array of workflow
ids (``"*"`` when it would not fit), which ``wait_for_events`` listens for.

asyncpg runs on asyncio only; this store refuses to open under trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ..._codec import decode_event, encode_event
from ..._errors import CorruptLogError, LeaseExpiredError, SequenceConflictError, StoreError
from ..._events import AnyEvent, Event
from .._base import ChangeFeed, Store, check_sequence
from .._group_commit import LAZY_COMMIT_SECONDS, Batch, GroupCommit
from ._dsn import DEFAULT_SCHEMA, check_schema, pop_schema, redact
from ._notify import Listener, NotifyFeed, cancel_note, mail_note, notes
from ._sql import DDL_LOCK, OWNER_LOCK, Sql

__all__ = ["PostgresStore"]

#: How long a started batch write may run on after cancellation before it is abandoned.
_COMMIT_TIMEOUT = 30.0
_DEADLOCK_RETRIES = 5
#: Batches with this many events are COPYed (measured crossover, see ``_insert``).
_COPY_FROM = 128
#: The events that change ``workflows.owner``: a start sets it, a run's end clears it.
_OWNING = frozenset({"WorkflowStarted", "WorkflowFinished", "WorkflowFailed", "WorkflowCanceled"})


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError("the PostgreSQL store needs asyncpg: pip install 'evflow[postgres]'") from exc
    return asyncpg


async def _keep_session(conn: Any) -> None:
    """Pool connections never change session state (no SET, LISTEN or session locks), so
    skip asyncpg's reset query: a round trip per release. Open transactions are still
    rolled back by asyncpg."""


class _WorkflowRows:
    """One workflow's events within one batch, encoded as rows, from seq ``first`` on."""

    __slots__ = ("first", "own", "rows")

    def __init__(self, first: int) -> None:
        self.first = first
        self.rows: list[tuple[int, float, str, bytes]] = []
        #: What the batch makes of ``workflows.owner``: None unchanged, "" cleared.
        self.own: str | None = None

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1


class _Batch(Batch):
    """Everything queued between two commits (``errors``: the workflows it refused);
    ``waited``: somebody flushes it, so it is committed at once; else at ``due``."""

    __slots__ = ("by_workflow", "due", "waited")

    def __init__(self) -> None:
        super().__init__()
        self.by_workflow: dict[str, _WorkflowRows] = {}
        self.due = time.monotonic() + LAZY_COMMIT_SECONDS
        self.waited = False


class PostgresStore(Store):
    """Event logs in PostgreSQL tables, shared safely by several engines (asyncio only).

    ``dsn`` is a libpq URI (``postgresql://user:password@host:port/db``), optionally with
    ``?schema=NAME`` (default ``evflow``; or pass ``schema``); ``url`` repeats it without
    the password. ``read_only`` stores (the CLI, replay tools) neither create the schema
    nor count as a live writer, and refuse appends and deletes.
    """

    shared = True

    def __init__(self, dsn: str, *, schema: str | None = None, read_only: bool = False) -> None:
        dsn, url_schema = pop_schema(dsn)
        if schema is None:
            schema = url_schema or DEFAULT_SCHEMA
        elif url_schema is not None and url_schema != schema:
            raise ValueError(f"schema {schema!r} contradicts schema={url_schema!r} in the storage URL")
        check_schema(schema)
        self._asyncpg = _import_asyncpg()
        self._dsn = dsn
        self.url = redact(dsn, schema)
        self.schema = schema
        self.read_only = read_only
        self._key = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        self._sql = Sql(f'"{schema}"')
        self._pool: Any = None
        self._lock_conn: Any = None
        #: Connections for named locks only: a lock's holder uses the main pool inside it,
        #: so holding a main-pool connection for the lock could leave none for it.
        self._lock_pool: Any = None
        #: The group commit's own connection: a write never queues behind reads. It is
        #: held from the first commit on (``_writer``): a pool release per commit costs
        #: ~70 us of client CPU.
        self._write_pool: Any = None
        self._write_conn: Any = None
        self._named_locks: dict[str, anyio.Lock] = {}
        self._listener = Listener(self._asyncpg, dsn, f"evflow.{schema}"[:63], f"evflow-ctl.{schema}"[:63])
        self._write_lock: asyncio.Lock | None = None
        # What this instance knows of each log: the last seq queued, and the workflows
        # whose appends are refused because their last append failed, until a caller is
        # told (the actual last seq after a conflict, or why it is unknown).
        self._last: dict[str, int] = {}
        self._refused: dict[str, int | str] = {}
        self._batches: GroupCommit[_Batch] = GroupCommit()
        #: A refused or failed append's error, until a flush of its workflow reports it:
        #: its batch may be written and gone before the caller flushes.
        self._unreported: dict[str, StoreError] = {}
        self._running = False
        #: What ``run`` sleeps on while nothing is due (set by ``_wake``).
        self._wakeup: asyncio.Future[None] | None = None
        self._run_exited: anyio.Event | None = None
        #: Until when (``time.monotonic``) this engine's lease surely holds.
        self._lease_until = float("inf")
        self._lapsed: anyio.Event | None = None
        #: A renewal found the lease had lapsed: appends stay refused, although the lease
        #: holds again, until the engine has stopped the runs taken over meanwhile
        #: (``lapse_checked``).
        self._fenced = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema if missing and (unless read-only) register as a writer.

        Raises ``StoreError`` when the server cannot be reached or the schema not created.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the PostgreSQL store uses asyncpg, which runs on asyncio only; "
                "run the engine with anyio.run(..., backend='asyncio')"
            ) from None
        if self._pool is not None:
            raise StoreError(f"{self.url}: store is already open")
        pg = self._asyncpg
        self._write_lock = asyncio.Lock()  # no checkpoint when free, unlike anyio's
        self._batches = GroupCommit()
        try:
            self._pool = await pg.create_pool(self._dsn, min_size=1, max_size=4, reset=_keep_session)
            self._lock_pool = await pg.create_pool(self._dsn, min_size=0, max_size=2, reset=_keep_session)
            self._listener.open()
            if not self.read_only:
                self._write_pool = await pg.create_pool(
                    self._dsn, min_size=1, max_size=1, reset=_keep_session
                )
                await self._create_schema()
                if self.owner_id is not None:
                    self._lapsed = anyio.Event()
                    await self._join()
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            await self._release()
            raise StoreError(f"cannot open PostgreSQL store {self.url}: {exc}") from exc
        except BaseException:
            await self._release()
            raise

    async def _join(self) -> None:
        """Take this engine's advisory lock on a connection of its own (held for the
        engine's life: ``owner_alive`` finds it in ``pg_locks``) and write its heartbeat."""
        assert self.owner_id is not None
        conn = await self._asyncpg.connect(self._dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", OWNER_LOCK, _owner_key(self.owner_id))
            await self._renew(conn)
        except BaseException:
            conn.terminate()
            raise
        self._lock_conn = conn

    async def _renew(self, conn: Any) -> None:
        assert self.owner_id is not None
        sent = time.monotonic()
        await conn.execute(self._sql.heartbeat, self.owner_id, _owner_key(self.owner_id), self.lease)
        if sent > self._lease_until and self._lapsed is not None:
            # The lease ran out before this renewal: others may have taken workflows over.
            # Nothing is appended (no step of such a workflow starts here) until the engine
            # has checked which are no longer its own.
            self._fenced = True
            self._lapsed.set()
            self._lapsed = anyio.Event()
        self._lease_until = sent + self.lease

    async def _beat(self) -> None:
        """Renew the heartbeat every ``lease / 6`` seconds; should the lock's connection
        go, take the lock again on a new one (meanwhile this engine looks dead)."""
        pg = self._asyncpg
        while True:
            await anyio.sleep(self.lease / 6)
            try:
                with anyio.fail_after(self.lease):
                    conn = self._lock_conn
                    if conn is None or conn.is_closed():
                        self._lock_conn = None
                        await self._join()
                    else:
                        await self._renew(conn)
            except (OSError, TimeoutError, pg.PostgresError, pg.InterfaceError):
                conn, self._lock_conn = self._lock_conn, None
                if conn is not None:
                    conn.terminate()

    def lease_ok(self) -> bool:
        """Whether this engine's lease surely still holds (no engine can have judged it
        dead): ``time.monotonic()`` is before the last renewal's send time plus ``lease``,
        and no lapse is waiting for ``lapse_checked``."""
        return not self._fenced and time.monotonic() <= self._lease_until

    async def wait_lapse(self) -> None:
        """Return when a renewal finds that the lease had run out before it; appends are
        refused from then until ``lapse_checked``."""
        if self._lapsed is None:
            await anyio.sleep_forever()
        assert self._lapsed is not None
        await self._lapsed.wait()

    def lapse_checked(self) -> None:
        """The engine has stopped its runs of the workflows taken over during the lapse:
        appends are accepted again (while the lease holds)."""
        self._fenced = False

    async def _create_schema(self) -> None:
        async with self._pool.acquire() as conn:
            # Skip the DDL when everything exists, so engines need no CREATE privilege.
            if await conn.fetchval(self._sql.tables_exist):
                return
            async with conn.transaction():
                # IF NOT EXISTS alone races between two engines opening at once.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", DDL_LOCK, self._key)
                await conn.execute(self._sql.create)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Group commit: write everything queued in one transaction, repeatedly, until closed."""
        if self._pool is None:
            raise StoreError(f"{self.url}: open the store before running it")
        self._running = True
        self._run_exited = anyio.Event()
        task_status.started()
        loop = asyncio.get_running_loop()
        try:
            async with anyio.create_task_group() as tg:
                if self._lock_conn is not None:
                    tg.start_soon(self._beat, name="evflow heartbeat")
                while True:
                    batch = self._batches.filling
                    if batch is None:
                        if self._batches.closing:
                            break
                        self._wakeup = loop.create_future()
                        await self._wakeup
                        continue
                    if not (batch.waited or self._batches.closing):
                        wait = batch.due - time.monotonic()
                        if wait > 0:  # nobody waits for it yet: give it company
                            self._wakeup = loop.create_future()
                            timer = loop.call_later(wait, self._wake)
                            try:
                                await self._wakeup
                            finally:
                                timer.cancel()
                            continue
                    await self._write_next()
                tg.cancel_scope.cancel()
        finally:
            self._running = False
            self._wakeup = None
            self._run_exited.set()
            waiting = self._batches.filling
            if waiting is not None:
                waiting.wake()  # its flushers write it themselves

    def _wake(self) -> None:
        """Wake ``run`` if it sleeps (a batch to commit now, or due, or the close)."""
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def close(self) -> None:
        """Write everything queued, stop ``run`` and disconnect. Safe to call twice; a close
        while another is under way waits for it.

        Append errors are reported to the callers of ``flush``/``append``, not here.
        """
        if self._pool is None:
            return
        if not self._batches.begin_close():  # another task is closing it: wait for that
            await self._batches.closed()
            return
        self._wake()
        try:
            with contextlib.suppress(StoreError):  # reported to the flush/append callers
                await self.flush()
            if self._running and self._run_exited is not None:
                await self._run_exited.wait()
        finally:
            with anyio.move_on_after(_COMMIT_TIMEOUT, shield=True):
                await self._release()
            self._batches.end_close()

    async def _release(self) -> None:
        await self._listener.close()
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.execute(self._sql.leave, self.owner_id)  # not live from now on
                await conn.close()
            except Exception:  # a dead connection is as good as closed
                conn.terminate()
        conn, self._write_conn = self._write_conn, None
        if conn is not None:
            if not _usable(conn):
                _discard(conn)
            else:
                try:
                    await self._write_pool.release(conn)
                except BaseException:
                    _discard(conn)
                    raise
        for attr in ("_write_pool", "_lock_pool", "_pool"):
            pool = getattr(self, attr)
            setattr(self, attr, None)
            if pool is not None:
                try:
                    await pool.close()
                except BaseException:
                    pool.terminate()
                    raise

    # -- appending -------------------------------------------------------------------------

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events; checks their seqs against what this store has seen (never blocks).

        A workflow this store has not read nor written may start at any seq: the database
        checks it. Raises ``SequenceConflictError`` (or the ``StoreError`` of a failed
        write) while an earlier failure of this workflow's appends is not yet reported.
        """
        if self.read_only:
            raise StoreError(f"{self.url}: store is open read-only")
        if self._pool is None or self._batches.closing:
            raise StoreError(f"{self.url}: store is not open")
        if not events:
            return
        if "\x00" in workflow_id:
            raise ValueError(f"workflow id {workflow_id!r} contains NUL, which PostgreSQL text cannot hold")
        if not self.lease_ok():
            raise LeaseExpiredError(
                f"{self.url}: this engine's lease ran out (paused or cut off from the server "
                "for longer than it); another engine may own the workflow now"
            )
        first = events[0].seq
        refused = self._refused.get(workflow_id)
        if refused is not None:
            if isinstance(refused, int):
                raise SequenceConflictError(workflow_id, first, refused)
            raise StoreError(refused)
        last = self._last.get(workflow_id)
        if last is None:
            if first < 1:
                raise SequenceConflictError(workflow_id, first, 0)
            last = first - 1
        new_last = check_sequence(workflow_id, last, events)
        batch = self._batches.filling
        if batch is None:
            batch = self._batches.filling = _Batch()
            self._wake()  # the writer sleeps: it commits this batch when due
        queued = batch.by_workflow.get(workflow_id)
        if queued is None:
            queued = batch.by_workflow[workflow_id] = _WorkflowRows(first)
        rows = queued.rows
        for e in events:
            name = type(e).__name__
            rows.append((e.seq, e.time, name, encode_event(e)))
            if name in _OWNING:
                if name == "WorkflowStarted":
                    queued.own = "" if e.pending else e.owner  # type: ignore[attr-defined]
                else:
                    queued.own = ""
        self._last[workflow_id] = new_last

    async def append(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events and wait until they are committed; raises only this workflow's errors."""
        self.append_nowait(workflow_id, events)
        await self.flush(workflow_id)

    async def flush(self, workflow_id: str | None = None) -> None:
        """Return once everything queued before the call is committed.

        Raises ``SequenceConflictError`` if another engine took a seq first, or
        ``StoreError`` if the write failed (then whether it landed is unknown: read the
        workflow again). With ``workflow_id``, only that workflow's error is raised;
        without, the first one. Writes itself when ``run`` is not running.
        """
        batches = [
            b
            for b in self._batches.in_order()
            if workflow_id is None or workflow_id in b.by_workflow or workflow_id in b.errors
        ]
        for batch in batches:
            while not batch.done:
                if self._running:
                    if not batch.waited:
                        batch.waited = True  # commit it now
                        self._wake()
                    await batch.wait()
                else:
                    await self._write_next()
        for batch in batches:
            error = batch.error_for(workflow_id)
            if error is not None:
                # The caller knows now: the workflow's appends are judged afresh.
                if workflow_id is not None:
                    self._refused.pop(workflow_id, None)
                    self._unreported.pop(workflow_id, None)
                elif isinstance(error, SequenceConflictError):
                    self._refused.pop(error.workflow_id, None)
                    self._unreported.pop(error.workflow_id, None)
                else:
                    for reported in batch.by_workflow:
                        self._refused.pop(reported, None)
                        self._unreported.pop(reported, None)
                raise _copy(error)  # one exception object per waiter: tracebacks stay apart
        if workflow_id is not None and not batches:
            # Its batch was judged and dropped before this flush: report what it said.
            unreported = self._unreported.pop(workflow_id, None)
            if unreported is not None:
                self._refused.pop(workflow_id, None)
                raise _copy(unreported)

    async def _write_next(self) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            batch = self._batches.take()
            if batch is None:
                return
            try:
                # A started commit finishes even when the caller is cancelled: the batch
                # holds other workflows' events too.
                with anyio.move_on_after(_COMMIT_TIMEOUT, shield=True) as scope:
                    await self._commit(batch)
                if scope.cancelled_caught:
                    self._fail(batch, f"{self.url}: writing events timed out; whether they landed is unknown")
            except BaseException as exc:  # a bug: its waiters must not think it landed
                self._fail(batch, f"{self.url}: writing events failed: {exc!r}", exc)
                raise
            finally:
                self._batches.written()
                batch.finish()

    async def _commit(self, batch: _Batch) -> None:
        if not batch.by_workflow:
            return
        pg = self._asyncpg
        ids = sorted(batch.by_workflow)  # one lock order for every engine: no deadlocks in practice
        try:
            accepted = await self._insert_retrying(ids, batch.by_workflow)
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            self._fail(batch, f"{self.url}: writing events failed: {exc!r}", exc)
            return
        rejected = [w for w in ids if w not in accepted]
        if not rejected:
            return
        try:  # the others are committed: only the rejected ones wait on this
            async with self._writer() as conn:
                found = dict(await conn.fetch(self._sql.last_seqs, rejected))
                missing = [w for w in rejected if w not in found]
                if missing:
                    found.update(await conn.fetch(self._sql.max_seqs, missing))
        except (OSError, pg.PostgresError, pg.InterfaceError):
            found = {}  # still a conflict, only its actual last seq is unknown (shown as 0)
        for workflow_id in rejected:
            self._conflict(batch, workflow_id, found.get(workflow_id) or 0)

    async def _insert_retrying(self, ids: list[str], queued: dict[str, _WorkflowRows]) -> set[str]:
        pg = self._asyncpg
        for _ in range(_DEADLOCK_RETRIES - 1):
            try:
                return await self._insert(ids, queued)
            except pg.DeadlockDetectedError:
                continue
            except pg.UniqueViolationError:
                # The events table holds rows its workflows row does not account for
                # (edited by hand?): write workflow by workflow so the others land.
                accepted: set[str] = set()
                for workflow_id in ids:
                    with contextlib.suppress(pg.UniqueViolationError):
                        accepted |= await self._insert([workflow_id], queued)
                return accepted
        return await self._insert(ids, queued)

    async def _insert(self, ids: list[str], queued: dict[str, _WorkflowRows]) -> set[str]:
        """Write the rows of ``ids`` atomically; return the ids whose seqs fitted.

        Small batches go in one statement (one round trip); from ``_COPY_FROM`` events on,
        claiming the seqs and then COPYing the events is faster despite the extra trips.
        """
        firsts = [queued[w].first for w in ids]
        lasts = [queued[w].last for w in ids]
        owns = [queued[w].own for w in ids]
        payload = notes(ids)
        async with self._writer() as conn:
            if sum(len(queued[w].rows) for w in ids) >= _COPY_FROM:
                async with conn.transaction():
                    accepted = set(
                        await conn.fetchval(
                            self._sql.claim, ids, firsts, lasts, owns, self._listener.channel, payload
                        )
                    )
                    await conn.copy_records_to_table(
                        "events",
                        schema_name=self.schema,
                        columns=("workflow_id", "seq", "time", "type", "payload"),
                        records=[(w, *row) for w in ids if w in accepted for row in queued[w].rows],
                    )
                return accepted
            columns: tuple[list[Any], ...] = ([], [], [], [], [])
            for workflow_id in ids:
                for row in queued[workflow_id].rows:
                    columns[0].append(workflow_id)
                    for column, value in zip(columns[1:], row, strict=True):
                        column.append(value)
            accepted_ids = await conn.fetchval(
                self._sql.append, ids, firsts, lasts, owns, *columns, self._listener.channel, payload
            )
            return set(accepted_ids)

    @contextlib.asynccontextmanager
    async def _writer(self) -> AsyncIterator[Any]:
        """The write connection, held across commits; one that a commit left in doubt
        (cancelled, timed out, cut off) is terminated, and the next commit gets another."""
        conn = self._write_conn
        if conn is None or not _usable(conn):
            if conn is not None:
                _discard(conn)  # closed, it may still hold the pool's only slot
            self._write_conn = None
            conn = self._write_conn = await self._write_pool.acquire()
        try:
            yield conn
        except self._asyncpg.PostgresError:
            raise  # the server refused the statement (or ended the connection: seen next time)
        except BaseException:
            self._write_conn = None
            _discard(conn)
            raise

    def _conflict(self, batch: _Batch, workflow_id: str, actual: int) -> None:
        first = batch.by_workflow[workflow_id].first
        batch.errors[workflow_id] = SequenceConflictError(workflow_id, first, actual)
        self._unreported[workflow_id] = batch.errors[workflow_id]
        self._refused[workflow_id] = actual
        # Events queued since follow the rejected ones: they must not land on the winner's.
        later = self._batches.filling
        if later is not None and workflow_id in later.by_workflow:
            dropped = later.by_workflow.pop(workflow_id)
            later.errors[workflow_id] = SequenceConflictError(workflow_id, dropped.first, actual)
        if actual:
            self._last[workflow_id] = actual
        else:
            self._last.pop(workflow_id, None)

    def _fail(self, batch: _Batch, message: str, cause: BaseException | None = None) -> None:
        batch.failure = StoreError(message)
        batch.failure.__cause__ = cause
        later = self._batches.filling
        for workflow_id in batch.by_workflow:
            # Whether the batch landed is unknown: the database judges the next append.
            self._refused[workflow_id] = (
                f"workflow {workflow_id!r}: an earlier append failed ({message}); "
                "read the workflow again before appending"
            )
            self._unreported[workflow_id] = batch.failure
            if later is None or workflow_id not in later.by_workflow:
                self._last.pop(workflow_id, None)

    # -- reading ---------------------------------------------------------------------------

    def _learn(self, workflow_id: str, last: int) -> None:
        """Record a log's last committed seq (0: unknown), unless appends are on the way."""
        for batch in self._batches.in_order():
            if workflow_id in batch.by_workflow:
                return
        self._refused.pop(workflow_id, None)
        self._unreported.pop(workflow_id, None)  # the caller has read what the store holds
        if last:
            self._last[workflow_id] = last
        else:
            self._last.pop(workflow_id, None)

    def _pool_or_raise(self) -> Any:
        if self._pool is None:
            raise StoreError(f"{self.url}: store is not open")
        return self._pool

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        """Committed events of the workflow with ``seq > after``, in order.

        Raises ``CorruptLogError`` (position = the seq) for an undecodable row or a gap.
        """
        pool = self._pool_or_raise()
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(self._sql.read, workflow_id, after)
        except self._asyncpg.UndefinedTableError:
            rows = []
        events = _decode(workflow_id, after, rows)
        if events:
            self._learn(workflow_id, events[-1].seq)
        elif after <= 0:
            self._learn(workflow_id, 0)
        return events

    async def list_workflows(self) -> list[str]:
        pool = self._pool_or_raise()
        try:
            async with pool.acquire() as conn:
                return [r[0] for r in await conn.fetch(self._sql.list)]
        except self._asyncpg.UndefinedTableError:
            return []

    async def read_all(self) -> dict[str, list[AnyEvent] | CorruptLogError]:
        """Every workflow's events (one query), or why its log cannot be read."""
        pool = self._pool_or_raise()
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(self._sql.read_all)
        except self._asyncpg.UndefinedTableError:
            rows = []
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row[1:])
        out: dict[str, list[AnyEvent] | CorruptLogError] = {}
        for workflow_id, wf_rows in grouped.items():
            try:
                events = _decode(workflow_id, 0, wf_rows)
            except CorruptLogError as exc:
                out[workflow_id] = exc
            else:
                out[workflow_id] = events
                self._learn(workflow_id, events[-1].seq)
        return out

    async def delete(self, workflow_id: str) -> bool:
        """Remove the workflow's log; False if there was none. The id is then free."""
        if self.read_only:
            raise StoreError(f"{self.url}: store is open read-only")
        pool = self._pool_or_raise()
        with contextlib.suppress(StoreError):  # queued events are part of the log to delete
            await self.flush(workflow_id)
        try:
            async with pool.acquire() as conn, conn.transaction():
                found = await conn.fetchval(self._sql.delete_workflow, workflow_id)
                status = await conn.execute(self._sql.delete_events, workflow_id)
                await conn.execute(self._sql.delete_workflow_mail, workflow_id)
        except self._asyncpg.UndefinedTableError:
            return False
        self._learn(workflow_id, 0)
        return found is not None or status != "DELETE 0"

    # -- following -------------------------------------------------------------------------

    async def wait_for_events(self, workflow_id: str, after: int, poll_interval: float = 0.05) -> None:
        """Return once the workflow has a committed event with ``seq > after``.

        Woken by ``NOTIFY`` from any engine's commit (``LISTEN`` on a dedicated
        connection); polls every ``poll_interval`` seconds while it cannot listen.
        """

        async def has_events() -> bool:
            pool = self._pool_or_raise()  # raises once the store is closed
            try:
                async with pool.acquire() as conn:
                    return bool(await conn.fetchval(self._sql.has_events, workflow_id, after))
            except self._asyncpg.UndefinedTableError:
                return False

        await self._listener.wait(workflow_id, has_events, poll_interval)

    def change_feed(self) -> ChangeFeed:
        """What every engine's commits NOTIFY, fenced (``_notify.NotifyFeed``)."""
        return NotifyFeed(self._listener, self._pool_or_raise, self._sql.last_seqs, self._sql.all_last_seqs)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """A transaction-scoped advisory lock keyed by the schema and ``name``, held for the
        block: every engine on the database waits for it, and it goes away with a dead
        holder's connection.

        Callers in this process queue on a local lock first, and the advisory lock is held
        on a connection of its own small pool, never the main one: the block's appends and
        reads need main-pool connections, which concurrent holders would otherwise use up
        (four concurrent ``enqueue`` calls hung for good that way).
        """
        self._pool_or_raise()
        local = self._named_locks.get(name)
        if local is None:
            local = self._named_locks[name] = anyio.Lock()
        async with local, self._lock_pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql.named_lock, f"{self.schema}:{name}")
            yield

    # -- the mailbox ----------------------------------------------------------------------

    async def post_message(self, workflow_id: str, message: bytes) -> int:
        """Insert the message into the mailbox and NOTIFY, in one statement; its id."""
        if self.read_only:
            raise StoreError(f"{self.url}: store is open read-only")
        pool = self._pool_or_raise()
        pg = self._asyncpg
        try:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    self._sql.post_mail,
                    workflow_id,
                    message,
                    time.time(),
                    self._listener.control,
                    mail_note(workflow_id),
                )
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            raise StoreError(f"{self.url}: cannot post a message for {workflow_id!r}: {exc}") from exc
        return int(row[0])

    async def read_mailbox(self, workflow_ids: Sequence[str]) -> list[tuple[int, str, bytes]]:
        pool = self._pool_or_raise()
        pg = self._asyncpg
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(self._sql.read_mail, list(workflow_ids))
        except pg.UndefinedTableError:
            return []
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            raise StoreError(f"{self.url}: cannot read the mailbox: {exc}") from exc
        return [(int(r[0]), r[1], bytes(r[2])) for r in rows]

    async def delete_from_mailbox(self, mailbox_ids: Sequence[int]) -> None:
        if self.read_only:
            raise StoreError(f"{self.url}: store is open read-only")
        pool = self._pool_or_raise()
        pg = self._asyncpg
        try:
            async with pool.acquire() as conn:
                await conn.execute(self._sql.delete_mail, list(mailbox_ids))
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            raise StoreError(f"{self.url}: cannot delete from the mailbox: {exc}") from exc

    async def wait_for_mail(self, seen: int, recheck: float) -> int:
        """Woken by the mailbox's ``NOTIFY``; see ``Store.wait_for_mail``."""
        self._pool_or_raise()
        return await self._listener.wait_mail(seen, recheck, min(recheck, 1.0))

    async def owner_alive(self, owner: str | None) -> bool:
        """Whether the engine ``owner`` is live: it holds its advisory lock and its lease."""
        if owner is None:
            return False
        if owner == self.owner_id and self._lock_conn is not None:
            return True
        pool = self._pool_or_raise()
        try:
            async with pool.acquire() as conn:
                return bool(await conn.fetchval(self._sql.engine_alive, owner))
        except self._asyncpg.UndefinedTableError:  # a reader of a store nobody created
            return False

    # -- recovery and ownership (see _sql: workflows.owner) --------------------------------

    async def claim_orphans(self, limit: int) -> list[tuple[str, str]]:
        """Make this engine the owner of up to ``limit`` workflows that no live engine runs
        although their logs leave them going; ``(workflow id, previous owner)`` of each.
        Concurrent claimers never get the same workflow."""
        if self.owner_id is None or self.read_only:
            return []
        pool = self._pool_or_raise()
        async with pool.acquire() as conn:
            rows = await conn.fetch(self._sql.claim_orphans, self.owner_id, limit)
        return [(r[0], r[1]) for r in rows]

    async def disown(self, workflow_id: str, *, orphan: bool) -> None:
        """This engine does not run the workflow although the owner index names it:
        ``orphan=True`` offers it to any engine's recovery, False says nobody must run it."""
        if self.owner_id is None or self.read_only:
            return
        pool = self._pool_or_raise()
        async with pool.acquire() as conn:
            await conn.execute(self._sql.disown, workflow_id, self.owner_id, orphan)

    async def not_owned(self, workflow_ids: Sequence[str]) -> list[str]:
        """Those of ``workflow_ids`` that the owner index no longer gives to this engine."""
        if self.owner_id is None or not workflow_ids:
            return []
        pool = self._pool_or_raise()
        async with pool.acquire() as conn:
            return [r[0] for r in await conn.fetch(self._sql.not_owned, list(workflow_ids), self.owner_id)]

    async def request_cancel(self, workflow_id: str) -> bool:
        """Ask the engine that runs the workflow to cancel it (a NOTIFY: not durable)."""
        pool = self._pool_or_raise()
        pg = self._asyncpg
        try:
            async with pool.acquire() as conn:
                await conn.execute(self._sql.cancel_note, self._listener.control, cancel_note(workflow_id))
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            raise StoreError(f"{self.url}: cannot ask for the cancel of {workflow_id!r}: {exc}") from exc
        return True

    async def wait_cancel_requests(self, recheck: float) -> set[str]:
        """The workflows whose cancel was asked (``request_cancel``) since the last call."""
        self._pool_or_raise()
        return await self._listener.wait_cancels(recheck)


def _usable(conn: Any) -> bool:
    """Whether a pool connection still works: not closed (the server may have ended it),
    nor taken back by its pool already (its proxy then refuses every call)."""
    try:
        return not conn.is_closed()
    except Exception:  # InterfaceError: released back to the pool
        return False


def _discard(conn: Any) -> None:
    """Terminate a pool connection, which gives its pool the slot back (a closed one too);
    one its pool took back already refuses the call and needs nothing."""
    with contextlib.suppress(Exception):
        conn.terminate()


def _owner_key(owner: str) -> int:
    return zlib.crc32(owner.encode()) & 0x7FFFFFFF


def _copy(error: StoreError) -> StoreError:
    copy = (
        SequenceConflictError(error.workflow_id, error.expected, error.actual)
        if isinstance(error, SequenceConflictError)
        else StoreError(*error.args)
    )
    copy.__cause__ = error.__cause__
    return copy


def _decode(workflow_id: str, after: int, rows: Sequence[Any]) -> list[AnyEvent]:
    """Decode ``(seq, payload)`` rows, checking each seq follows the one before."""
    events: list[AnyEvent] = []
    expected = after + 1 if after > 0 else None
    for seq, payload in rows:
        if expected is not None and seq != expected:
            raise CorruptLogError(workflow_id, seq, f"seq {expected} is missing")
        try:
            event = decode_event(payload)
        except ValueError as exc:
            raise CorruptLogError(workflow_id, seq, f"event seq {seq} cannot be decoded: {exc}") from exc
        if event.seq != seq:
            raise CorruptLogError(workflow_id, seq, f"row seq {seq} holds an event with seq {event.seq}")
        events.append(event)
        expected = seq + 1
    if events and after <= 0 and events[0].seq != 1:
        raise CorruptLogError(workflow_id, events[0].seq, "seq 1 is missing")
    return events
