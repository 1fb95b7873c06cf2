"""The store contract: where event logs live. Only stores do I/O.

A store keeps one append-only log per workflow. The engine is the only writer of a
workflow's log and hands the store events that already carry their sequence numbers;
the store refuses any event whose ``seq`` does not follow the stored log with
``SequenceConflictError`` (never an overwrite), which is what lets several engines share
a PostgreSQL store safely.

Writes are split so that ordering never depends on scheduling: ``append_nowait`` is a
plain function that queues events in order (and checks their sequence numbers against
what it knows), and ``await flush()`` returns once everything queued before the call is
durable. ``append`` is both. Stores with background work (group commit) do it in
``run``, which the engine starts in its own task group after ``open``.

A shared store tells what other engines change through a ``ChangeFeed``
(``change_feed``): which logs changed since the last look, with their last seq, so that an
engine keeps up with the store without listing it.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from .._errors import CorruptLogError, SequenceConflictError
from .._events import AnyEvent, Event

__all__ = ["ChangeFeed", "Store", "check_sequence"]


def check_sequence(workflow_id: str, last_seq: int, events: Sequence[Event]) -> int:
    """Check that ``events`` continue a log ending at ``last_seq``; return the new last seq."""
    expected = last_seq + 1
    for event in events:
        if event.seq != expected:
            raise SequenceConflictError(workflow_id, event.seq, expected - 1)
        expected += 1
    return expected - 1


class ChangeFeed:
    """The logs a store's writers changed since the last look, for one reader (made by
    ``Store.change_feed``; single-consumer).

    This base class knows nothing: ``changes`` answers None (list the store), which is
    right for any store, and ``wait`` sleeps. Shared stores that can tell do better.
    """

    async def changes(
        self, *, fence: bool = True, skip: Callable[[str], bool] | None = None
    ) -> dict[str, int] | None:
        """Workflows whose logs changed since the last call, each with the last seq its log
        has now (0: it has none now; a delete may also go untold), or None when this feed
        cannot tell: read ``list_workflows`` instead.

        With ``fence``, every change made durable before the call is in the answer (or in
        an earlier one); without it, only those already heard of (no round trip). The
        first answer may name every workflow of the store. ``skip``: ids the caller needs
        no answer for (its own runs): a feed may leave them out, and then never looks them
        up. Raises ``StoreError`` when the store cannot be read.
        """
        return None

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a recheck period, not a deadline
        """Return once ``changes`` may have something new, or after ``timeout`` seconds."""
        await anyio.sleep(timeout)

    def close(self) -> None:
        """Stop hearing of changes (idempotent)."""


class Store(abc.ABC):
    """Contract every store implements (memory, file, PostgreSQL)."""

    #: Human-readable location, used in messages.
    url: str = ""
    #: Whether other engines may write this store at the same time (PostgreSQL). An engine
    #: then re-reads a workflow it does not run itself before answering about it.
    shared: bool = False
    #: The id of the engine using this store, set by the engine before ``open``; stores
    #: that are ``shared`` advertise it so that ``owner_alive`` works from elsewhere.
    owner_id: str | None = None
    #: Seconds an engine of a ``shared`` store stays live without renewing its lease (set
    #: by the engine before ``open``; see ``lease_ok``).
    lease: float = 3.0
    #: The process-local locks of ``lock`` by name (made on first use).
    _named_locks: dict[str, anyio.Lock]

    async def open(self) -> None:
        """Acquire what the store needs (locks, connections, recovery of a torn tail).

        Raises ``StoreLockedError`` when another live writer holds an exclusive store.
        """

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Background work (group commit); runs until ``close`` or cancellation.

        The engine starts it with ``await task_group.start(store.run)`` after ``open``.
        """
        task_status.started()

    async def close(self) -> None:
        """Make everything queued durable, stop ``run`` and release resources."""

    @abc.abstractmethod
    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events for the workflow's log, in order; never blocks.

        The first event of a new workflow has ``seq == 1``. Raises
        ``SequenceConflictError`` when the store can tell at once that a seq is taken or
        skipped; otherwise the conflict is raised by ``flush``.
        """

    @abc.abstractmethod
    async def flush(self, workflow_id: str | None = None) -> None:
        """Return once everything queued before this call is durable (or raise why not).

        With ``workflow_id``, only an error about that workflow's events is raised (a shared
        store may refuse one workflow's events and keep the others).
        """

    async def append(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events and wait until they are durable."""
        self.append_nowait(workflow_id, events)
        await self.flush(workflow_id)

    @abc.abstractmethod
    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        """Events of the workflow with ``seq > after``, in order ([] for an unknown id).

        Raises ``CorruptLogError`` (with the position) when the log is damaged before its
        end; a torn last record is not damage, it was never acknowledged.
        """

    @abc.abstractmethod
    async def list_workflows(self) -> list[str]:
        """Ids of every workflow with a log, in no particular order."""

    async def read_all(self) -> dict[str, list[AnyEvent] | CorruptLogError]:
        """Every workflow's events (or why its log cannot be read), for recovery."""
        out: dict[str, list[AnyEvent] | CorruptLogError] = {}
        for workflow_id in await self.list_workflows():
            try:
                out[workflow_id] = await self.read(workflow_id)
            except CorruptLogError as exc:
                out[workflow_id] = exc
        return out

    @abc.abstractmethod
    async def delete(self, workflow_id: str) -> bool:
        """Remove the workflow's log; return False if there was none. The id is then free."""

    async def wait_for_events(self, workflow_id: str, after: int, poll_interval: float = 0.05) -> None:
        """Return once the workflow has an event with ``seq > after`` (polls by default)."""
        while True:
            if await self.read(workflow_id, after):
                return
            await anyio.sleep(poll_interval)

    def change_feed(self) -> ChangeFeed:
        """A new feed of the logs that change in this store, for an engine that keeps up
        with other engines' writes (``shared`` stores; the queues). The default tells
        nothing (every look lists the store); a store that is not ``shared`` never needs
        more, as its one engine records every change itself. Close it when done."""
        return ChangeFeed()

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold the store-wide mutex ``name`` (queues use it to claim workflows) across
        every engine that uses this store; released when the block ends (or the holder
        dies). By default a lock of this process, which is every engine of a store that is
        not ``shared``."""
        locks: dict[str, anyio.Lock] | None = getattr(self, "_named_locks", None)
        if locks is None:
            locks = self._named_locks = {}
        held = locks.get(name)
        if held is None:
            held = locks[name] = anyio.Lock()
        async with held:
            yield

    # -- the mailbox: messages for a workflow another live engine runs (shared stores) -------

    async def post_message(self, workflow_id: str, message: bytes) -> int:
        """Keep an encoded message for the engine that runs the workflow, durably, and
        notify the engines; return its mailbox id (unique, increasing).

        Only shared stores have a mailbox: in any other the engine that sends is the
        workflow's one writer and appends the message itself (``NotImplementedError``).
        """
        raise NotImplementedError(f"{type(self).__name__} is not shared: it has no mailbox")

    async def read_mailbox(self, workflow_ids: Sequence[str]) -> list[tuple[int, str, bytes]]:
        """The mail of these workflows, ``(mailbox id, workflow id, message)``, oldest first."""
        return []

    async def delete_from_mailbox(self, mailbox_ids: Sequence[int]) -> None:
        """Forget mail moved into its workflow's log (unknown ids are ignored)."""

    async def wait_for_mail(self, seen: int, recheck: float) -> int:
        """Return a mail counter once it is past ``seen`` (mail was posted since), or after
        ``recheck`` seconds; the first call (``seen=-1``) returns as soon as the store
        listens. A store without a mailbox never has mail: it waits forever."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- ownership across engines (shared stores; the defaults suit a single writer) --------

    def lease_ok(self) -> bool:
        """Whether no other engine can have judged this one dead (its lease holds)."""
        return True

    async def wait_lapse(self) -> None:
        """Return when this engine finds its lease had run out (a shared store's engine
        paused or cut off): it must check which of its workflows are still its own, and
        the store refuses appends until it says so with ``lapse_checked``."""
        await anyio.sleep_forever()

    def lapse_checked(self) -> None:
        """The engine has stopped its runs of the workflows taken over during the lapse
        ``wait_lapse`` reported: appends may be accepted again."""

    async def claim_orphans(self, limit: int) -> list[tuple[str, str]]:
        """Make this engine the owner of up to ``limit`` workflows whose logs leave them
        going but that no live engine runs; ``(workflow id, previous owner)`` of each, and
        never the same one to two engines. None in a single-writer store: its engine
        finds them in its own state."""
        return []

    async def disown(self, workflow_id: str, *, orphan: bool) -> None:
        """This engine does not run the workflow although it was its owner: ``orphan``
        offers it to any engine's recovery (it let go of it), else nobody runs it."""

    async def not_owned(self, workflow_ids: Sequence[str]) -> list[str]:
        """Those of ``workflow_ids`` another engine has taken over from this one."""
        return []

    async def request_cancel(self, workflow_id: str) -> bool:
        """Ask whichever engine runs the workflow to cancel it now (best effort: the
        caller also records the cancel itself when that engine goes away); False when
        the store has no way to ask (the caller then appends the cancel itself)."""
        return False

    async def wait_cancel_requests(self, recheck: float) -> set[str]:
        """The workflows whose cancel was requested since the last call, or an empty set
        after ``recheck`` seconds."""
        await anyio.sleep(recheck)
        return set()

    async def owner_alive(self, owner: str | None) -> bool:
        """Whether the engine with id ``owner`` is alive and using this store.

        A workflow whose log says RUNNING is RESUMABLE unless its owner (the engine that
        recorded its latest ``WorkflowStarted``) is alive. By default only this store's own
        engine counts, which is right for single-writer stores.
        """
        return owner is not None and owner == self.owner_id
