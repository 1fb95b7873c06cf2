"""In-memory store for tests: nothing survives the process."""

from __future__ import annotations

from collections.abc import Sequence

from .._events import AnyEvent, Event
from ._base import Store, check_sequence

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps each workflow's events in a list. One instance can serve engines in turn."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._logs: dict[str, list[AnyEvent]] = {}
        self._owners: list[str | None] = []

    async def open(self) -> None:
        self._owners.append(self.owner_id)

    async def close(self) -> None:
        if self.owner_id in self._owners:
            self._owners.remove(self.owner_id)

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        log = self._logs.setdefault(workflow_id, [])
        check_sequence(workflow_id, log[-1].seq if log else 0, events)
        log.extend(events)  # type: ignore[arg-type]

    async def flush(self, workflow_id: str | None = None) -> None:
        return None

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        log = self._logs.get(workflow_id, [])
        return log[after:] if after > 0 else list(log)

    async def list_workflows(self) -> list[str]:
        return list(self._logs)

    async def delete(self, workflow_id: str) -> bool:
        return self._logs.pop(workflow_id, None) is not None

    async def owner_alive(self, owner: str | None) -> bool:
        return owner is not None and owner in self._owners
