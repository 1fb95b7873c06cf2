"""PostgreSQL store: one log shared by several engines (processes, machines).

Layout (schema ``evflow`` by default, created on ``open``)::

    workflows(workflow_id text PRIMARY KEY, last_seq bigint)      one row per log
    events(workflow_id text, seq bigint, time float8, type text, payload bytea,
           PRIMARY KEY (workflow_id, seq))                         payload = encode_event

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

Liveness: every writing store holds ``pg_advisory_lock_shared(_WRITER_LOCK, <schema key>)``
on a dedicated connection while open; the session lock goes away with the connection, so a
crashed engine never looks alive. ``writer_alive`` looks for that lock in ``pg_locks``
(rather than taking it exclusively) so readers never race each other or block an engine.

Each committed batch sends ``NOTIFY`` on a per-schema channel with a JSON array of workflow
ids (``"*"`` when it would not fit), which ``wait_for_events`` listens for.

asyncpg runs on asyncio only; this store refuses to open under trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
from anyio.abc import TaskStatus

from .._codec import decode_event, encode_event
from .._errors import CorruptLogError, SequenceConflictError, StoreError
from .._events import AnyEvent, Event
from ._base import Store, check_sequence

__all__ = ["PostgresStore"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: First key of the two-int advisory locks ("EVFW" / "EVFD"); the second is the schema's key.
_WRITER_LOCK = 0x45564657
_DDL_LOCK = 0x45564644
#: First key of an engine's own advisory lock ("EVOW"); the second is its id's crc32.
_OWNER_LOCK = 0x45564F57
#: NOTIFY payloads are limited to 8000 bytes; a longer id list is replaced by "*".
_NOTIFY_LIMIT = 7900
#: How long a started batch write may run on after cancellation before it is abandoned.
_COMMIT_TIMEOUT = 30.0
#: Safety net while listening: re-check even without a notification this often (seconds).
_LISTEN_RECHECK = 5.0
_DEADLOCK_RETRIES = 5
#: Batches with this many events are COPYed (measured crossover, see ``_insert``).
_COPY_FROM = 128


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


def _pop_schema(dsn: str) -> tuple[str, str | None]:
    """Split the evflow-only ``schema`` query parameter (asyncpg would refuse it) off a URI."""
    if "://" not in dsn:
        return dsn, None
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if not schemas:
        return dsn, None
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return _unsplit(parts.scheme, parts.netloc, parts.path, rest, parts.fragment), schemas[-1]


def _redact(dsn: str, schema: str) -> str:
    """The dsn without its password, naming the schema unless it is the default."""
    if "://" not in dsn:  # libpq key=value form
        dsn = re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", "", dsn)
        return dsn if schema == "evflow" else f"{dsn} schema={schema}"
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hosts}" if at else hosts
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
    if schema != "evflow":
        query.append(("schema", schema))
    return _unsplit(parts.scheme, netloc, parts.path, urlencode(query), parts.fragment)


def _unsplit(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    # urlunsplit would drop the empty authority of "postgresql:///db?host=/socket".
    return (
        f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
    )


class _Run:
    """A workflow's contiguous events within one batch, encoded."""

    __slots__ = ("first", "rows")

    def __init__(self, first: int) -> None:
        self.first = first
        self.rows: list[tuple[int, float, str, bytes]] = []

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1


class _Batch:
    """Everything queued between two commits, and how its commit went."""

    __slots__ = ("_event", "done", "errors", "failure", "runs")

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self.errors: dict[str, StoreError] = {}
        self.failure: StoreError | None = None
        self.done = False
        self._event: anyio.Event | None = None

    def finish(self) -> None:
        self.done = True
        if self._event is not None:
            self._event.set()

    def poke(self) -> None:
        """Wake the waiters without finishing (``run`` stopped: they must write it)."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        """Wait until finished or poked."""
        if not self.done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

    def error_for(self, workflow_id: str | None) -> StoreError | None:
        if self.failure is not None:
            return self.failure
        if workflow_id is None:
            return next(iter(self.errors.values()), None)
        return self.errors.get(workflow_id)


class PostgresStore(Store):
    """Event logs in PostgreSQL tables, shared safely by several engines (asyncio only).

    ``dsn`` is a libpq URI (``postgresql://user:password@host:port/db``), optionally with
    ``?schema=NAME`` (default ``evflow``; or pass ``schema``); ``url`` repeats it without
    the password. ``read_only`` stores (the CLI, replay tools) neither create the schema
    nor count as a live writer, and refuse appends and deletes.
    """

    shared = True

    def __init__(self, dsn: str, *, schema: str | None = None, read_only: bool = False) -> None:
        dsn, url_schema = _pop_schema(dsn)
        if schema is None:
            schema = url_schema or "evflow"
        elif url_schema is not None and url_schema != schema:
            raise ValueError(f"schema {schema!r} contradicts schema={url_schema!r} in the storage URL")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"invalid PostgreSQL schema name {schema!r}: use letters, digits and '_', "
                "not starting with a digit, at most 63 characters"
            )
        self._asyncpg = _import_asyncpg()
        self._dsn = dsn
        self.url = _redact(dsn, schema)
        self.schema = schema
        self.read_only = read_only
        self._key = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        self._channel = f"evflow.{schema}"[:63]
        self._sql = _Sql(f'"{schema}"')
        self._pool: Any = None
        self._lock_conn: Any = None
        self._listen_conn: Any = None
        self._listen_lock: anyio.Lock | None = None
        self._listeners: dict[str, set[anyio.Event]] = {}
        self._write_lock: anyio.Lock | None = None
        # What this instance knows of each log: the last seq queued, and the workflows
        # whose last append failed, until a caller is told (the actual last seq, or why
        # it is unknown).
        self._last: dict[str, int] = {}
        self._stale: dict[str, int | str] = {}
        self._pending: _Batch | None = None
        self._in_flight: _Batch | None = None
        self._running = False
        self._closing = False
        self._wakeup: anyio.Event | None = None
        self._run_exited: anyio.Event | None = None

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
        self._write_lock = anyio.Lock()
        self._listen_lock = anyio.Lock()
        self._closing = False
        try:
            self._pool = await pg.create_pool(self._dsn, min_size=1, max_size=4, reset=_keep_session)
            if not self.read_only:
                await self._create_schema()
                self._lock_conn = await pg.connect(self._dsn)
                await self._lock_conn.execute(
                    "SELECT pg_advisory_lock_shared($1, $2)", _WRITER_LOCK, self._key
                )
                if self.owner_id is not None:
                    # held for the engine's life: owner_alive() finds it in pg_locks
                    await self._lock_conn.execute(
                        "SELECT pg_advisory_lock($1, $2)", _OWNER_LOCK, _owner_key(self.owner_id)
                    )
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            await self._release()
            raise StoreError(f"cannot open PostgreSQL store {self.url}: {exc}") from exc
        except BaseException:
            await self._release()
            raise

    async def _create_schema(self) -> None:
        async with self._pool.acquire() as conn:
            # Skip the DDL when everything exists, so engines need no CREATE privilege.
            if await conn.fetchval(self._sql.tables_exist):
                return
            async with conn.transaction():
                # IF NOT EXISTS alone races between two engines opening at once.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _DDL_LOCK, self._key)
                await conn.execute(self._sql.create)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Group commit: write everything queued in one transaction, repeatedly, until closed."""
        if self._pool is None:
            raise StoreError(f"{self.url}: open the store before running it")
        self._running = True
        self._run_exited = anyio.Event()
        task_status.started()
        try:
            while True:
                if self._pending is None:
                    if self._closing:
                        break
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
                    continue
                await self._write_next()
        finally:
            self._running = False
            self._wakeup = None
            self._run_exited.set()
            if self._pending is not None:
                self._pending.poke()

    async def close(self) -> None:
        """Write everything queued, stop ``run`` and disconnect. Safe to call twice.

        Append errors are reported to the callers of ``flush``/``append``, not here.
        """
        if self._pool is None or self._closing:
            return
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        try:
            with contextlib.suppress(StoreError):  # reported to the flush/append callers
                await self.flush()
            if self._running and self._run_exited is not None:
                await self._run_exited.wait()
        finally:
            with anyio.move_on_after(_COMMIT_TIMEOUT, shield=True):
                await self._release()

    async def _release(self) -> None:
        for conn in (self._listen_conn, self._lock_conn):
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close()
                except Exception:  # a dead connection is as good as closed
                    conn.terminate()
        self._listen_conn = self._lock_conn = None
        for events in self._listeners.values():
            for event in events:
                event.set()
        pool, self._pool = self._pool, None
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
        if self._pool is None or self._closing:
            raise StoreError(f"{self.url}: store is not open")
        if not events:
            return
        if "\x00" in workflow_id:
            raise ValueError(f"workflow id {workflow_id!r} contains NUL, which PostgreSQL text cannot hold")
        first = events[0].seq
        stale = self._stale.get(workflow_id)
        if stale is not None:
            if isinstance(stale, int):
                raise SequenceConflictError(workflow_id, first, stale)
            raise StoreError(stale)
        last = self._last.get(workflow_id)
        if last is None:
            if first < 1:
                raise SequenceConflictError(workflow_id, first, 0)
            last = first - 1
        new_last = check_sequence(workflow_id, last, events)
        batch = self._pending
        if batch is None:
            batch = self._pending = _Batch()
        run = batch.runs.get(workflow_id)
        if run is None:
            run = batch.runs[workflow_id] = _Run(first)
        run.rows.extend((e.seq, e.time, type(e).__name__, encode_event(e)) for e in events)
        self._last[workflow_id] = new_last
        if self._wakeup is not None:
            self._wakeup.set()

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
            for b in (self._in_flight, self._pending)
            if b is not None and (workflow_id is None or workflow_id in b.runs or workflow_id in b.errors)
        ]
        for batch in batches:
            while not batch.done:
                if self._running:
                    await batch.wait()
                else:
                    await self._write_next()
        for batch in batches:
            error = batch.error_for(workflow_id)
            if error is not None:
                # The caller knows now: the workflow's appends are judged afresh.
                if workflow_id is not None:
                    self._stale.pop(workflow_id, None)
                elif isinstance(error, SequenceConflictError):
                    self._stale.pop(error.workflow_id, None)
                else:
                    for reported in batch.runs:
                        self._stale.pop(reported, None)
                raise _copy(error)  # one exception object per waiter: tracebacks stay apart

    async def _write_next(self) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            batch = self._pending
            if batch is None:
                return
            self._pending = None
            self._in_flight = batch
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
                self._in_flight = None
                batch.finish()

    async def _commit(self, batch: _Batch) -> None:
        if not batch.runs:
            return
        pg = self._asyncpg
        ids = sorted(batch.runs)  # one lock order for every engine: no deadlocks in practice
        try:
            accepted = await self._insert_retrying(ids, batch.runs)
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            self._fail(batch, f"{self.url}: writing events failed: {exc!r}", exc)
            return
        rejected = [w for w in ids if w not in accepted]
        if not rejected:
            return
        try:  # the others are committed: only the rejected ones wait on this
            async with self._pool.acquire() as conn:
                found = dict(await conn.fetch(self._sql.last_seqs, rejected))
                missing = [w for w in rejected if w not in found]
                if missing:
                    found.update(await conn.fetch(self._sql.max_seqs, missing))
        except (OSError, pg.PostgresError, pg.InterfaceError):
            found = {}  # still a conflict, only its actual last seq is unknown (shown as 0)
        for workflow_id in rejected:
            self._conflict(batch, workflow_id, found.get(workflow_id) or 0)

    async def _insert_retrying(self, ids: list[str], runs: dict[str, _Run]) -> set[str]:
        pg = self._asyncpg
        for _ in range(_DEADLOCK_RETRIES - 1):
            try:
                return await self._insert(ids, runs)
            except pg.DeadlockDetectedError:
                continue
            except pg.UniqueViolationError:
                # The events table holds rows its workflows row does not account for
                # (edited by hand?): write workflow by workflow so the others land.
                accepted: set[str] = set()
                for workflow_id in ids:
                    with contextlib.suppress(pg.UniqueViolationError):
                        accepted |= await self._insert([workflow_id], runs)
                return accepted
        return await self._insert(ids, runs)

    async def _insert(self, ids: list[str], runs: dict[str, _Run]) -> set[str]:
        """Write the runs of ``ids`` atomically; return the ids whose seqs fitted.

        Small batches go in one statement (one round trip); from ``_COPY_FROM`` events on,
        claiming the seqs and then COPYing the events is faster despite the extra trips.
        """
        firsts = [runs[w].first for w in ids]
        lasts = [runs[w].last for w in ids]
        note = json.dumps(ids, ensure_ascii=False, separators=(",", ":"))
        if len(note.encode()) > _NOTIFY_LIMIT:
            note = "*"
        async with self._pool.acquire() as conn:
            if sum(len(runs[w].rows) for w in ids) >= _COPY_FROM:
                async with conn.transaction():
                    accepted = set(
                        await conn.fetchval(self._sql.claim, ids, firsts, lasts, self._channel, note)
                    )
                    await conn.copy_records_to_table(
                        "events",
                        schema_name=self.schema,
                        columns=("workflow_id", "seq", "time", "type", "payload"),
                        records=[(w, *row) for w in ids if w in accepted for row in runs[w].rows],
                    )
                return accepted
            columns: tuple[list[Any], ...] = ([], [], [], [], [])
            for workflow_id in ids:
                for row in runs[workflow_id].rows:
                    columns[0].append(workflow_id)
                    for column, value in zip(columns[1:], row, strict=True):
                        column.append(value)
            accepted_ids = await conn.fetchval(
                self._sql.append, ids, firsts, lasts, *columns, self._channel, note
            )
            return set(accepted_ids)

    def _conflict(self, batch: _Batch, workflow_id: str, actual: int) -> None:
        batch.errors[workflow_id] = SequenceConflictError(workflow_id, batch.runs[workflow_id].first, actual)
        self._stale[workflow_id] = actual
        # Events queued since follow the rejected ones: they must not land on the winner's.
        later = self._pending
        if later is not None and workflow_id in later.runs:
            run = later.runs.pop(workflow_id)
            later.errors[workflow_id] = SequenceConflictError(workflow_id, run.first, actual)
        if actual:
            self._last[workflow_id] = actual
        else:
            self._last.pop(workflow_id, None)

    def _fail(self, batch: _Batch, message: str, cause: BaseException | None = None) -> None:
        batch.failure = StoreError(message)
        batch.failure.__cause__ = cause
        for workflow_id in batch.runs:
            # Whether the batch landed is unknown: the database judges the next append.
            self._stale[workflow_id] = (
                f"workflow {workflow_id!r}: an earlier append failed ({message}); "
                "read the workflow again before appending"
            )
            if self._pending is None or workflow_id not in self._pending.runs:
                self._last.pop(workflow_id, None)

    # -- reading ---------------------------------------------------------------------------

    def _learn(self, workflow_id: str, last: int) -> None:
        """Record a log's last committed seq (0: unknown), unless appends are on the way."""
        for batch in (self._pending, self._in_flight):
            if batch is not None and workflow_id in batch.runs:
                return
        self._stale.pop(workflow_id, None)
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
        while True:
            listening = await self._listen()
            pool = self._pool_or_raise()  # raises once the store is closed
            woken = anyio.Event()
            self._listeners.setdefault(workflow_id, set()).add(woken)
            try:
                try:
                    async with pool.acquire() as conn:
                        if await conn.fetchval(self._sql.has_events, workflow_id, after):
                            return
                except self._asyncpg.UndefinedTableError:
                    pass
                with anyio.move_on_after(_LISTEN_RECHECK if listening else poll_interval):
                    await woken.wait()
            finally:
                waiters = self._listeners.get(workflow_id)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self._listeners[workflow_id]

    async def _listen(self) -> bool:
        """Make sure the LISTEN connection is up; False if it cannot be."""
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return True
        pg = self._asyncpg
        if self._listen_lock is None or self._pool is None:
            return False
        async with self._listen_lock:
            if self._listen_conn is not None and not self._listen_conn.is_closed():
                return True
            try:
                conn = await pg.connect(self._dsn)
            except (OSError, pg.PostgresError, pg.InterfaceError):
                return False
            try:
                await conn.add_listener(self._channel, self._on_notify)
            except (OSError, pg.PostgresError, pg.InterfaceError):
                conn.terminate()
                return False
            if self._pool is None:  # closed meanwhile
                conn.terminate()
                return False
            conn.add_termination_listener(self._on_listener_lost)
            self._listen_conn = conn
            return True

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("["):
            try:
                ids = json.loads(payload)
            except ValueError:
                ids = None
            if isinstance(ids, list):
                for workflow_id in ids:
                    for event in self._listeners.get(workflow_id, ()):
                        event.set()
                return
        self._wake_all()

    def _on_listener_lost(self, conn: Any) -> None:
        self._wake_all()  # waiters re-check, then reconnect or poll

    def _wake_all(self) -> None:
        for events in self._listeners.values():
            for event in events:
                event.set()

    async def writer_alive(self) -> bool:
        """Whether a live (not read-only) store holds this schema's writer lock."""
        pool = self._pool_or_raise()
        async with pool.acquire() as conn:
            return bool(await conn.fetchval(self._sql.writer_alive, _WRITER_LOCK, self._key))

    async def owner_alive(self, owner: str | None) -> bool:
        """Whether the engine ``owner`` is connected: it holds its own advisory lock."""
        if owner is None:
            return False
        if owner == self.owner_id and self._lock_conn is not None:
            return True
        pool = self._pool_or_raise()
        async with pool.acquire() as conn:
            return bool(await conn.fetchval(self._sql.writer_alive, _OWNER_LOCK, _owner_key(owner)))


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


class _Sql:
    """The statements, for one (validated, quoted) schema name."""

    def __init__(self, s: str) -> None:
        self.tables_exist = (
            f"SELECT to_regclass('{s}.workflows') IS NOT NULL AND to_regclass('{s}.events') IS NOT NULL"
        )
        self.create = f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.workflows (
                workflow_id text PRIMARY KEY,
                last_seq bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {s}.events (
                workflow_id text NOT NULL,
                seq bigint NOT NULL,
                time double precision NOT NULL,
                type text NOT NULL,
                payload bytea NOT NULL,
                PRIMARY KEY (workflow_id, seq)
            );
        """
        # Move each workflow's last_seq from first_seq - 1 (row-locked: a concurrent append
        # to it waits, then misses) or create it at seq 1; ``accepted`` is who succeeded.
        claim = f"""
            WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                    AS b(workflow_id, first_seq, last_seq)
            ), moved AS (
                UPDATE {s}.workflows AS w SET last_seq = batch.last_seq
                FROM batch
                WHERE batch.first_seq > 1 AND w.workflow_id = batch.workflow_id
                    AND w.last_seq = batch.first_seq - 1
                RETURNING w.workflow_id
            ), created AS (
                INSERT INTO {s}.workflows (workflow_id, last_seq)
                SELECT workflow_id, last_seq FROM batch WHERE first_seq = 1
                ON CONFLICT (workflow_id) DO NOTHING
                RETURNING workflow_id
            ), accepted AS (
                SELECT workflow_id FROM moved UNION ALL SELECT workflow_id FROM created
            )"""
        notify = """
            SELECT ids, CASE WHEN cardinality(ids) > 0 THEN pg_notify(${0}, ${1}) END
            FROM (SELECT array(SELECT workflow_id FROM accepted) AS ids) AS a"""
        # The claim alone (the events follow by COPY in the same transaction) ...
        self.claim = claim + notify.format(4, 5)
        # ... or with the accepted workflows' events, in one statement and round trip.
        self.append = (
            claim
            + f""", inserted AS (
                INSERT INTO {s}.events (workflow_id, seq, time, type, payload)
                SELECT e.workflow_id, e.seq, e.time, e.type, e.payload
                FROM unnest($4::text[], $5::bigint[], $6::float8[], $7::text[], $8::bytea[])
                    AS e(workflow_id, seq, time, type, payload)
                WHERE e.workflow_id IN (SELECT workflow_id FROM accepted)
            )"""
            + notify.format(9, 10)
        )
        self.last_seqs = (
            f"SELECT workflow_id, last_seq FROM {s}.workflows WHERE workflow_id = ANY($1::text[])"
        )
        self.max_seqs = (
            f"SELECT workflow_id, max(seq) FROM {s}.events WHERE workflow_id = ANY($1::text[]) "
            "GROUP BY workflow_id"
        )
        self.read = f"SELECT seq, payload FROM {s}.events WHERE workflow_id = $1 AND seq > $2 ORDER BY seq"
        self.read_all = f"SELECT workflow_id, seq, payload FROM {s}.events ORDER BY workflow_id, seq"
        self.list = f"SELECT workflow_id FROM {s}.workflows"
        self.has_events = f"SELECT EXISTS (SELECT 1 FROM {s}.events WHERE workflow_id = $1 AND seq > $2)"
        self.delete_workflow = f"DELETE FROM {s}.workflows WHERE workflow_id = $1 RETURNING 1"
        self.delete_events = f"DELETE FROM {s}.events WHERE workflow_id = $1"
        self.writer_alive = """
            SELECT EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND objsubid = 2
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND classid = $1::int4::oid AND objid = $2::int4::oid
            )
        """
