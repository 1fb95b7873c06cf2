"""LISTEN/NOTIFY for the PostgreSQL store: how a follower hears of other engines' commits.

Each committed batch sends ``NOTIFY`` on a per-schema channel with a JSON array of
workflow ids (``"*"`` when it would not fit, see ``note``); ``Listener`` LISTENs on a
dedicated connection and wakes whoever waits for one of those workflows.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

__all__ = ["LISTEN_RECHECK", "Listener", "note"]

#: NOTIFY payloads are limited to 8000 bytes; a longer id list is replaced by "*".
_NOTIFY_LIMIT = 7900
#: Safety net while listening: re-check even without a notification this often (seconds).
LISTEN_RECHECK = 5.0


def note(workflow_ids: Sequence[str]) -> str:
    """The NOTIFY payload of a batch: its workflow ids, or ``"*"`` when too long."""
    text = json.dumps(workflow_ids, ensure_ascii=False, separators=(",", ":"))
    return "*" if len(text.encode()) > _NOTIFY_LIMIT else text


class Listener:
    """The LISTEN connection of a store (made on first use) and who waits for what."""

    def __init__(self, asyncpg: Any, dsn: str, channel: str) -> None:
        self._asyncpg = asyncpg
        self._dsn = dsn
        self.channel = channel
        self._conn: Any = None
        self._lock: anyio.Lock | None = None
        self._open = False
        #: Workflow id -> the events its waiters sleep on.
        self.waiters: dict[str, set[anyio.Event]] = {}

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
            listening = await self._listen()
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

    async def _listen(self) -> bool:
        """Make sure the LISTEN connection is up; False if it cannot be."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        pg = self._asyncpg
        if self._lock is None or not self._open:
            return False
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return True
            try:
                conn = await pg.connect(self._dsn)
            except (OSError, pg.PostgresError, pg.InterfaceError):
                return False
            try:
                await conn.add_listener(self.channel, self._on_notify)
            except (OSError, pg.PostgresError, pg.InterfaceError):
                conn.terminate()
                return False
            if not self._open:  # closed meanwhile
                conn.terminate()
                return False
            conn.add_termination_listener(self._on_lost)
            self._conn = conn
            return True

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload.startswith("["):
            try:
                ids = json.loads(payload)
            except ValueError:
                ids = None
            if isinstance(ids, list):
                for workflow_id in ids:
                    for event in self.waiters.get(workflow_id, ()):
                        event.set()
                return
        self._wake_all()

    def _on_lost(self, conn: Any) -> None:
        self._wake_all()  # waiters re-check, then reconnect or poll

    def _wake_all(self) -> None:
        for events in self.waiters.values():
            for event in events:
                event.set()
