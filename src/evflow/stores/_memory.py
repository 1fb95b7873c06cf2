"""In-memory store for tests: nothing survives the process."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from .._events import AnyEvent, Event
from ._base import ChangeFeed, Store, check_sequence

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps each workflow's events in a list. One instance can serve engines in turn."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._logs: dict[str, list[AnyEvent]] = {}
        self._owners: list[str | None] = []
        self._feeds: set[_MemoryFeed] = set()

    async def open(self) -> None:
        self._owners.append(self.owner_id)

    async def close(self) -> None:
        if self.owner_id in self._owners:
            self._owners.remove(self.owner_id)

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        log = self._logs.setdefault(workflow_id, [])
        check_sequence(workflow_id, log[-1].seq if log else 0, events)
        log.extend(events)  # type: ignore[arg-type]
        self._changed(workflow_id)

    async def flush(self, workflow_id: str | None = None) -> None:
        return None

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        log = self._logs.get(workflow_id, [])
        return log[after:] if after > 0 else list(log)

    async def list_workflows(self) -> list[str]:
        return list(self._logs)

    async def delete(self, workflow_id: str) -> bool:
        found = self._logs.pop(workflow_id, None) is not None
        self._changed(workflow_id)
        return found

    async def owner_alive(self, owner: str | None) -> bool:
        return owner is not None and owner in self._owners

    def change_feed(self) -> ChangeFeed:
        """Every append and delete, as it happens (appends are durable at once here)."""
        feed = _MemoryFeed(self)
        self._feeds.add(feed)
        return feed

    def _changed(self, workflow_id: str) -> None:
        for feed in self._feeds:
            feed.heard.add(workflow_id)
            feed.woken.set()


class _MemoryFeed(ChangeFeed):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.heard: set[str] = set()
        #: Until the first answer, which names every workflow.
        self._first = True
        self.woken = anyio.Event()

    async def changes(
        self, *, fence: bool = True, skip: Callable[[str], bool] | None = None
    ) -> dict[str, int] | None:
        logs = self._store._logs
        ids = list(logs) if self._first else self.heard
        self._first = False
        self.heard = set()
        if self.woken.is_set():  # an unset one may have a waiter (see NotifyFeed.changes)
            self.woken = anyio.Event()
        return {wid: log[-1].seq if (log := logs.get(wid)) else 0 for wid in ids}

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        if self._first or self.heard:
            return
        with anyio.move_on_after(timeout):
            await self.woken.wait()

    def close(self) -> None:
        self._store._feeds.discard(self)
