"""LISTEN/NOTIFY for the PostgreSQL store: how a follower hears of other engines' commits.

Each committed batch sends ``NOTIFY`` on a per-schema *commit channel* with a JSON array
of workflow ids (``"*"`` when it would not fit, see ``note``); ``Listener`` LISTENs on a
dedicated connection and wakes whoever waits for one of those workflows. Mail posted to
the mailbox sends ``"@"`` followed by that array (``mail_note``): it wakes whoever waits
for mail (``wait_mail``). A cancel asked of the engine that runs a workflow sends ``"^"``
followed by that array (``cancel_note``): the engines' cancel waiters hear it
(``wait_cancels``). Mail and cancels go on a second, *control channel*, which every
writing engine hears; the commit channel is LISTENed to only from the first follower or
change feed on, so that an engine that follows nobody else's workflows does not receive
the NOTIFY of each of its own commits. Notifications are not durable: whoever sends one
also checks again.

``NotifyFeed`` is the store's ``ChangeFeed``: the ids of every batch it hears, and a
*fence* for an answer that misses nothing: PostgreSQL delivers the notifications of
different transactions in the order they committed, so once a ``"!<token>"`` this feed
sent itself comes back, every batch committed before it has been heard. Whatever may have
been missed (before the first LISTEN, a lost connection, a ``"*"``) makes the next answer
name every workflow, from one query.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from ..._errors import StoreError
from .._base import ChangeFeed

__all__ = ["LISTEN_RECHECK", "Listener", "NotifyFeed", "cancel_note", "mail_note", "note"]

#: NOTIFY payloads are limited to 8000 bytes; a longer id list is replaced by "*".
_NOTIFY_LIMIT = 7900
#: Safety net while listening: re-check even without a notification this often (seconds).
LISTEN_RECHECK = 5.0
#: Seconds a LISTEN connection may take to open.
_CONNECT_TIMEOUT = 10.0
#: Seconds a fence may take to come back before the feed answers with every workflow.
_FENCE_TIMEOUT = 10.0
#: How often a feed that cannot listen may have something new (it then lists every time).
_UNHEARD_POLL = 1.0
#: A fence: a NOTIFY that carries nothing to keep, so its commit need not wait for the disk.
_FENCE = "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)"


def note(workflow_ids: Sequence[str]) -> str:
    """The NOTIFY payload naming these workflows, or ``"*"`` when too long."""
    text = json.dumps(workflow_ids, ensure_ascii=False, separators=(",", ":"))
    return "*" if len(text.encode()) > _NOTIFY_LIMIT else text


def notes(workflow_ids: Sequence[str]) -> list[str]:
    """The NOTIFY payloads of a batch: its workflow ids in as many arrays as fit the limit
    (a large batch would otherwise say ``"*"``, and every follower would list the store)."""
    out: list[str] = []
    chunk: list[str] = []
    size = 2  # the brackets
    for workflow_id in workflow_ids:
        cost = len(json.dumps(workflow_id, ensure_ascii=False).encode()) + 1
        if chunk and size + cost > _NOTIFY_LIMIT:
            out.append(note(chunk))
            chunk, size = [], 2
        chunk.append(workflow_id)
        size += cost
    if chunk:
        out.append(note(chunk))  # "*" only for an id that alone is too long
    return out


def mail_note(workflow_id: str) -> str:
    """The NOTIFY payload of mail posted for the workflow."""
    return "@" + note([workflow_id])


def cancel_note(workflow_id: str) -> str:
    """The NOTIFY payload asking the engine that runs the workflow to cancel it."""
    return "^" + note([workflow_id])


class Listener:
    """The LISTEN connection of a store (made on first use) and who waits for what."""

    def __init__(self, asyncpg: Any, dsn: str, channel: str, control: str) -> None:
        self._asyncpg = asyncpg
        self._dsn = dsn
        #: Where commits are announced, and where mail and cancel requests are.
        self.channel = channel
        self.control = control
        self._conn: Any = None
        #: Whether ``_conn`` LISTENs on ``channel`` too (from the first follower on).
        self._hearing_commits = False
        self._lock: anyio.Lock | None = None
        self._open = False
        #: Workflow id -> the events its waiters sleep on.
        self.waiters: dict[str, set[anyio.Event]] = {}
        #: Mail notifications heard so far, and the events mail waiters sleep on.
        self.mail_count = 0
        self.mail_waiters: set[anyio.Event] = set()
        #: Workflows whose cancel was asked since ``wait_cancels`` last returned.
        self.cancel_requests: set[str] = set()
        self._cancel_heard: anyio.Event | None = None
        #: The change feeds that hear every batch, and the fences on their way back.
        self.feeds: set[NotifyFeed] = set()
        self._fences: dict[str, anyio.Event] = {}

    def open(self) -> None:
        self._lock = anyio.Lock()
        self._open = True

    async def close(self) -> None:
        """Drop the connection and wake every waiter (they find the store closed)."""
        self._open = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close()
            except Exception:  # a dead connection is as good as closed
                conn.terminate()
        self._wake_all()

    async def wait(
        self, workflow_id: str, has_events: Callable[[], Awaitable[bool]], poll_interval: float
    ) -> None:
        """Return once ``has_events()`` is true, checking it again whenever a NOTIFY names
        the workflow; polls every ``poll_interval`` seconds while it cannot listen."""
        while True:
            listening = await self._listen(commits=True)
            woken = anyio.Event()
            self.waiters.setdefault(workflow_id, set()).add(woken)
            try:
                if await has_events():
                    return
                with anyio.move_on_after(LISTEN_RECHECK if listening else poll_interval):
                    await woken.wait()
            finally:
                waiters = self.waiters.get(workflow_id)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self.waiters[workflow_id]

    async def wait_mail(self, seen: int, recheck: float, poll_interval: float) -> int:
        """Return ``mail_count`` once it is past ``seen``, or after ``recheck`` seconds
        (``poll_interval`` while it cannot listen); at once for ``seen=-1`` once listening."""
        listening = await self._listen()
        if self.mail_count > seen:
            return self.mail_count
        woken = anyio.Event()
        self.mail_waiters.add(woken)
        try:
            with anyio.move_on_after(recheck if listening else poll_interval):
                await woken.wait()
        finally:
            self.mail_waiters.discard(woken)
        return self.mail_count

    async def wait_cancels(self, recheck: float) -> set[str]:
        """The workflows whose cancel was asked since the last call (empty after
        ``recheck`` seconds without any)."""
        await self._listen()
        if not self.cancel_requests:
            heard = self._cancel_heard = anyio.Event()
            with anyio.move_on_after(recheck):
                await heard.wait()
        requests, self.cancel_requests = self.cancel_requests, set()
        return requests

    async def _listen(self, *, commits: bool = False) -> bool:
        """Make sure the LISTEN connection is up, hearing the control channel and, with
        ``commits``, the commit channel too; False if it cannot be."""
        conn = self._conn
        if conn is not None and not conn.is_closed() and (self._hearing_commits or not commits):
            return True
        pg = self._asyncpg
        if self._lock is None or not self._open:
            return False
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                conn = await self._connect()
                if conn is None:
                    return False
            if commits and not self._hearing_commits:
                with anyio.CancelScope(shield=True):  # as in _connect
                    try:
                        await conn.add_listener(self.channel, self._on_notify)
                    except (OSError, pg.PostgresError, pg.InterfaceError):
                        return False
                self._hearing_commits = True
                for feed in self.feeds:  # what was committed before this LISTEN went unheard
                    feed.missed()
            return True

    async def _connect(self) -> Any:
        """A new LISTEN connection on the control channel (None if it cannot be made)."""
        pg = self._asyncpg
        # Shielded: a connection cancelled while it opens is leaked by asyncpg (an engine
        # closing while its mailbox service starts to listen); a close meanwhile is seen
        # below, and the connect has a time limit.
        with anyio.CancelScope(shield=True):
            try:
                conn = await pg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
            except (OSError, TimeoutError, pg.PostgresError, pg.InterfaceError):
                return None
            try:
                await conn.add_listener(self.control, self._on_notify)
            except (OSError, pg.PostgresError, pg.InterfaceError):
                conn.terminate()
                return None
        if not self._open:  # closed meanwhile
            conn.terminate()
            return None
        conn.add_termination_listener(self._on_lost)
        self._conn = conn
        self._hearing_commits = False
        return conn

    async def fence(self, pool: Callable[[], Any]) -> bool:
        """Send a fence on a connection of ``pool()`` and wait for it to come back: True
        once every batch committed before it has been heard (on this connection)."""
        if not await self._listen(commits=True):
            return False
        pg = self._asyncpg
        token = "!" + uuid.uuid4().hex
        back = self._fences[token] = anyio.Event()
        try:
            try:
                async with pool().acquire() as conn:
                    await conn.execute(_FENCE, self.channel, token)
            except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
                raise StoreError(f"cannot send a NOTIFY on {self.channel!r}: {exc}") from exc
            with anyio.move_on_after(_FENCE_TIMEOUT):
                await back.wait()
            return back.is_set()
        finally:
            self._fences.pop(token, None)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("!"):
            back = self._fences.get(payload)
            if back is not None:
                back.set()
            return
        if payload.startswith("@"):
            self.mail_count += 1
            for event in self.mail_waiters:
                event.set()
            return
        if payload.startswith("^"):
            try:
                ids = json.loads(payload[1:])
            except ValueError:
                return
            if isinstance(ids, list):
                self.cancel_requests.update(i for i in ids if isinstance(i, str))
                if self._cancel_heard is not None:
                    self._cancel_heard.set()
            return
        if payload.startswith("["):
            try:
                ids = json.loads(payload)
            except ValueError:
                ids = None
            if isinstance(ids, list):
                for feed in self.feeds:
                    feed.hear(ids)
                for workflow_id in ids:
                    for event in self.waiters.get(workflow_id, ()):
                        event.set()
                return
        self._wake_all()

    def _on_lost(self, conn: Any) -> None:
        self._wake_all()  # waiters re-check, then reconnect or poll

    def _wake_all(self) -> None:
        if self._cancel_heard is not None:
            self._cancel_heard.set()
        for feed in self.feeds:
            feed.missed()
        for back in self._fences.values():
            back.set()  # the fence's sender finds its feed told to list everything
        for event in self.mail_waiters:
            event.set()
        for events in self.waiters.values():
            for event in events:
                event.set()


class NotifyFeed(ChangeFeed):
    """``ChangeFeed`` of the PostgreSQL store: the ids its listener hears, their last seqs
    read in one query (``last_seqs``, ids as ``$1``; ``all_seqs`` for every workflow)."""

    def __init__(self, listener: Listener, pool: Callable[[], Any], last_seqs: str, all_seqs: str) -> None:
        self._listener = listener
        self._pool = pool
        self._last_seqs = last_seqs
        self._all_seqs = all_seqs
        self._heard: set[str] = set()
        #: Whether something may have gone unheard: the next answer names every workflow.
        self._missed = True
        self._woken = anyio.Event()
        listener.feeds.add(self)

    def hear(self, workflow_ids: Sequence[Any]) -> None:
        self._heard.update(w for w in workflow_ids if isinstance(w, str))
        self._woken.set()

    def missed(self) -> None:
        self._missed = True
        self._woken.set()

    async def changes(
        self, *, fence: bool = True, skip: Callable[[str], bool] | None = None
    ) -> dict[str, int] | None:
        """The changes heard (fenced: and all committed before the call), with their last
        seqs; every workflow after a gap in what was heard."""
        listener = self._listener
        if not (await listener.fence(self._pool) if fence else await listener._listen(commits=True)):
            self._missed = True  # cannot tell what was committed meanwhile
        missed, heard = self._missed, self._heard
        self._missed, self._heard = False, set()
        if self._woken.is_set():
            # Only a set event is replaced: an unset one may be what a ``wait`` of another
            # task awaits now (the queue service's watcher while a claim asks), and a new
            # one would leave that waiter deaf to every later change.
            self._woken = anyio.Event()
        if skip is not None and heard:  # no round trip for what the caller knows better
            heard = {w for w in heard if not skip(w)}
        if not missed and not heard:
            return {}
        pg = listener._asyncpg
        try:
            async with self._pool().acquire() as conn:
                if missed:
                    return dict(await conn.fetch(self._all_seqs))
                found = dict.fromkeys(heard, 0)  # no row: the log is gone
                found.update(await conn.fetch(self._last_seqs, list(heard)))
                return found
        except pg.UndefinedTableError:
            return {}
        except (OSError, pg.PostgresError, pg.InterfaceError) as exc:
            self._missed = True
            raise StoreError(f"cannot read which workflows changed: {exc}") from exc

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a recheck period
        if self._missed or self._heard:
            return
        if not await self._listener._listen(commits=True):
            timeout = min(timeout, _UNHEARD_POLL)
            self._missed = True
        with anyio.move_on_after(timeout):
            await self._woken.wait()

    def close(self) -> None:
        self._listener.feeds.discard(self)
