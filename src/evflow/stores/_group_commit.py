"""Group commit, written once for the stores that batch their writes (file, PostgreSQL).

Appends queued while the previous batch is being written go out together in the next
one, and every ``flush`` waiting for a batch is woken at once when it is done. A store
keeps a ``GroupCommit``: the batch being filled, the one being written, and the guards of
its closing. Its batches subclass ``Batch`` with what they carry (encoded events, rows).

Who touches what: the event loop appends to ``filling`` and waits; the writer (a task, or
the file store's thread, under the store's own mutex) ``take``s the batch, writes it, sets
``failure`` / ``errors`` and then ``finish``es it, on the event loop (the file store's
thread hands ``finish`` to it through ``loop_notifier``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .._errors import StoreError
from .._signal import Signal, new_signal

__all__ = ["LAZY_COMMIT_SECONDS", "Batch", "GroupCommit"]

#: How long events that nobody flushes (a StepStarted) may wait for company before their
#: batch is committed anyway: a short step then costs one commit, not two.
LAZY_COMMIT_SECONDS = 0.005


class Batch:
    """Appends committed together, how their commit went, and the one-shot latch their
    flushers wait on (made only when somebody waits: a batch is made per commit)."""

    __slots__ = ("_signal", "done", "errors", "failure")

    def __init__(self) -> None:
        self.done = False
        #: The whole batch failed (a write error): every flusher raises it.
        self.failure: StoreError | None = None
        #: Per workflow (a shared store refuses one workflow's events and keeps the others).
        self.errors: dict[str, StoreError] = {}
        self._signal: Signal | None = None

    def finish(self) -> None:
        """The batch is written (or failed): wake its waiters for good. Event loop only."""
        self.done = True
        if self._signal is not None:
            self._signal.set()

    def wake(self) -> None:
        """Wake the waiters without finishing: the writer stopped, they must write it."""
        if self._signal is not None:
            self._signal.set()
            self._signal = None

    async def wait(self) -> None:
        """Wait until finished (returns at once, without yielding, if it is) or woken."""
        if not self.done:
            if self._signal is None:
                self._signal = new_signal()
            await self._signal.wait()

    def error_for(self, workflow_id: str | None) -> StoreError | None:
        """What a flush of ``workflow_id`` (None: of everything) raises: the batch's
        failure, else that workflow's error (None: the first one)."""
        if self.failure is not None:
            return self.failure
        if workflow_id is None:
            return next(iter(self.errors.values()), None)
        return self.errors.get(workflow_id)


B = TypeVar("B", bound=Batch)


class GroupCommit(Generic[B]):
    """The batches of a group-committing store and the guards of its closing.

    Batches are written one at a time, in order: ``filling`` (None while nothing is
    queued) becomes ``writing`` when the writer takes it, and a new one starts filling.
    """

    __slots__ = ("_closed", "closing", "filling", "writing")

    def __init__(self) -> None:
        self.filling: B | None = None
        self.writing: B | None = None
        #: ``close`` has begun: appends are refused from now on.
        self.closing = False
        self._closed: Signal | None = None

    def take(self) -> B | None:
        """The writer takes the batch being filled (None if nothing is queued)."""
        batch = self.filling
        if batch is not None:
            self.filling = None
            self.writing = batch
        return batch

    def written(self) -> None:
        """The batch taken last is written (``finish`` it on the event loop)."""
        self.writing = None

    def flush_target(self) -> B | None:
        """The batch a flush of everything queued so far waits for: the one being filled,
        else the one being written (batches finish in order, so that is enough)."""
        return self.filling if self.filling is not None else self.writing

    def in_order(self) -> list[B]:
        """The batches not yet finished, in the order they are written."""
        return [b for b in (self.writing, self.filling) if b is not None]

    def begin_close(self) -> bool:
        """Start closing; False when a close is already under way (``await closed()``)."""
        if self.closing:
            return False
        self.closing = True
        self._closed = new_signal()
        return True

    def end_close(self) -> None:
        """The close that began is done: wake the other closers."""
        if self._closed is not None:
            self._closed.set()

    async def closed(self) -> None:
        """Wait until the close under way is done."""
        if self._closed is not None:
            await self._closed.wait()
