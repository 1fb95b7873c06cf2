"""Reading a workflow's log without an engine: read-only, safe while an engine writes.

``read_events`` opens the store with ``read_only=True`` (it never takes the file store's
writer lock), so it works on a store a live engine is writing. The events can be folded
with ``evflow.replay`` (``_projection.py``) to recompute any past or present metadata.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType

import anyio

from ._errors import LogFoldError, WorkflowNotFoundError
from ._events import AnyEvent, Event
from ._liveness import owner_is_live
from ._projection import WorkflowState, WorkflowStatus
from ._projection import fold as fold_events
from ._step import validate_workflow_id
from .stores import Store
from .stores._open import open_store

__all__ = [
    "EventStream",
    "LogFoldError",
    "Storage",
    "fold",
    "load_events",
    "open_reader",
    "read_events",
]

Storage = str | os.PathLike[str] | Store | None

#: While following, how often (seconds) to re-check that the workflow still exists and that a
#: writer is still alive when no new event arrived.
FOLLOW_RECHECK = 1.0


@asynccontextmanager
async def open_reader(storage: Storage) -> AsyncIterator[Store]:
    """The store named by ``storage``, opened read-only (a ``Store`` instance is used as
    it is: its owner opens and closes it)."""
    if isinstance(storage, Store):
        yield storage
        return
    store = open_store(storage, read_only=True)
    await store.open()
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def load_events(store: Store, workflow_id: str, after: int = 0) -> list[AnyEvent]:
    """The workflow's events with ``seq > after``.

    Raises ``WorkflowNotFoundError`` for an unknown id, ``CorruptLogError`` for a damaged log.
    """
    events = await store.read(workflow_id, after)
    if not events and (after == 0 or workflow_id not in await store.list_workflows()):
        raise WorkflowNotFoundError(workflow_id)
    return events


def fold(workflow_id: str, events: list[AnyEvent], as_of: int | None = None, *, live: bool) -> WorkflowState:
    """``replay`` that reports a log which does not fold as ``LogFoldError`` (a
    ``CorruptLogError`` naming the offending event's seq)."""
    state = fold_events(None, events, as_of, on_error=_fold_error(workflow_id))
    if state is None:
        what = f"no events with seq <= {as_of}" if as_of is not None else "empty log"
        raise LogFoldError(workflow_id, 0, what)
    state.live = live
    return state


def _fold_error(workflow_id: str) -> Callable[[Event, Exception], Exception]:
    def error(event: Event, exc: Exception) -> Exception:
        return LogFoldError(workflow_id, event.seq, f"{type(event).__name__}: {exc}")

    return error


class EventStream:
    """Async iterator over a workflow's events (see ``read_events``).

    Use ``async with`` (or ``contextlib.aclosing``) when you may stop before the end of a
    followed stream, so the store it holds open is closed at once.
    """

    def __init__(self, storage: Storage, workflow_id: str, *, after: int, follow: bool) -> None:
        validate_workflow_id(workflow_id)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        self.workflow_id = workflow_id
        self._storage = storage
        self._after = after
        self._follow = follow
        self._store: Store | None = None
        self._owns_store = not isinstance(storage, Store)
        self._buffer: deque[AnyEvent] = deque()
        self._state: WorkflowState | None = None
        self._on_error = _fold_error(workflow_id)
        self._started = False
        self._done = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> AnyEvent:
        try:
            while not self._buffer:
                if self._done:
                    raise StopAsyncIteration
                if not self._started:
                    await self._start()
                else:
                    await self._wait_more()
        except BaseException:
            await self.aclose()
            raise
        return self._buffer.popleft()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop iterating and close the store if this stream opened it."""
        self._done = True
        self._buffer.clear()
        await self._close_store()

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None and self._owns_store:
            with anyio.CancelScope(shield=True):
                await store.close()

    async def _start(self) -> None:
        self._started = True
        if isinstance(self._storage, Store):
            store = self._storage
        else:
            store = open_store(self._storage, read_only=True)
            await store.open()
        self._store = store
        if not self._follow:
            self._buffer.extend(await load_events(store, self.workflow_id, self._after))
            self._done = True
            await self._close_store()  # everything is read: hold nothing while the caller iterates
            return
        # Following needs the whole log folded to tell when the run ends.
        self._take(await load_events(store, self.workflow_id, 0))
        await self._check_end(store)

    def _take(self, events: list[AnyEvent]) -> None:
        self._state = fold_events(self._state, events, on_error=self._on_error)
        after = self._after
        self._buffer.extend(event for event in events if event.seq > after)

    async def _check_end(self, store: Store) -> None:
        """The stream ends with the run, or when the log says running but the engine that
        runs it is gone (the workflow is RESUMABLE: nothing comes until it is resumed)."""
        assert self._state is not None
        # The fold's live status (an actor with queued calls counts as running).
        self._state.live = True
        if self._state.status is WorkflowStatus.RUNNING:
            if await owner_is_live(store, self._state):
                return
            # The owner may have appended more before it stopped: take them, then end.
            self._take(await store.read(self.workflow_id, self._state.last_seq))
        self._done = True
        await self._close_store()

    async def _wait_more(self) -> None:
        store = self._store
        assert store is not None and self._state is not None
        last = self._state.last_seq
        with anyio.move_on_after(FOLLOW_RECHECK):
            await store.wait_for_events(self.workflow_id, last)
        events = await store.read(self.workflow_id, last)
        if events:
            self._take(events)
            await self._check_end(store)
        elif self.workflow_id not in await store.list_workflows():
            self._done = True  # deleted while we followed it
            await self._close_store()
        else:
            await self._check_end(store)


def read_events(storage: Storage, workflow_id: str, *, after: int = 0, follow: bool = False) -> EventStream:
    """The workflow's events with ``seq > after``, in order: ``async for event in ...``.

    ``storage`` is as for ``Engine`` (a path, URL, ``Store`` or None); the store is opened
    read-only, so this works while an engine writes it, and never takes its lock. A
    ``Store`` instance is used as it is (its owner opens and closes it).

    With ``follow=True`` the stream keeps yielding new events until the workflow's run
    ends (its status is no longer RUNNING), or until the log says running but the engine
    that runs it is gone (RESUMABLE: nothing would come), or the workflow is deleted.

    Raises (while iterating) ``WorkflowNotFoundError`` for an unknown id and
    ``CorruptLogError`` for a damaged log; ``ValueError``/``TypeError`` at once for a bad id.
    """
    return EventStream(storage, workflow_id, after=after, follow=follow)
