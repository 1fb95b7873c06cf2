"""Queues, engine limits and deadlines (SPEC section 9): ``Queue`` and the ``QueueRunner``.

A queued workflow is recorded ``PENDING``: its first event is a ``WorkflowStarted`` with
``pending=True`` that carries the DAG, its queue, priority, dedup id and deadline. It
starts with an ordinary ``WorkflowStarted(resume=True)`` (the *claim*) once its queue,
its engine and the rate limit have room. The ``QueueRunner`` of each engine (one task,
woken by the events its engine records and by its runs' ends) makes those claims.

Global limits on a shared store (PostgreSQL): an engine claims a queue's workflows only
while it holds the store's lock of that queue (``Store.lock``), having first learned of
every change other engines made durable before (a fenced ``ChangeFeed.changes``: the
workflows that changed, read again only if they concern a queue or are new). Every
engine claims in the same order (priority, then the time it was recorded, then id) and a
claim is an append at the next ``seq``, so a workflow another engine claimed first makes
the claim conflict: the engine reads it, counts it as running, and goes on with the next
one. An ``enqueue`` with a ``dedup_id`` checks it under the same lock, after the same
catch-up; one without needs neither (its append at seq 1 is the only check an id needs).

Between rounds the runner's watcher follows the feed (the store's NOTIFYs on
PostgreSQL), which wakes the runner when another engine's workflow of a queue ends or a
new one waits, and every ``SHARED_RECHECK`` seconds it reads again the workflows other
engines run: an engine that stops or dies tells no one. Nothing here lists the store,
except a feed that cannot tell (``None``: the store is listed instead).
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio

from .. import _context
from .._errors import DuplicateWorkflowError, EvflowError, QueueFullError, StoreError
from .._events import (
    FORMAT_VERSION,
    Event,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from .._handle import WorkflowHandle
from .._projection import WorkflowState, WorkflowStatus
from .._step import Node, validate_metadata, validate_workflow_id
from ..stores import ChangeFeed
from ._dags import record_dag

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["Queue", "QueueHost", "QueueRunner", "deadline_after", "declared_queues"]

#: How often, on a shared store, the workflows of queues that other engines run are read
#: again (ends are heard of at once; an engine that stopped or died tells no one).
SHARED_RECHECK = 2.0

_queues: dict[str, Queue] = {}
_ENDS = (WorkflowFinished, WorkflowFailed, WorkflowCanceled)
_WAITING_OR_RUNNING = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING)


def declared_queues() -> list[Queue]:
    """Every queue declared in this process."""
    return list(_queues.values())


def deadline_after(timeout: float | None) -> float | None:
    """The absolute deadline ``timeout`` seconds from now (None: none)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return time.time() + timeout


def _limit(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, not {value!r}")
    return value


class QueueHost(Protocol):
    """What a queue asks of the current engine (``Engine`` is one)."""

    async def enqueue(
        self,
        queue: Queue,
        node: Node,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        priority: int = 0,
        dedup_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle: ...

    async def resume_async(self, workflow_id: str) -> WorkflowHandle: ...

    async def cancel(self, workflow_id: str) -> None: ...


class Queue:
    """A named queue of workflows, declared at import time like a step.

    ``concurrency`` caps its RUNNING workflows across every engine on the store,
    ``worker_concurrency`` those of one engine; ``rate_limit=(n, seconds)`` allows at most
    ``n`` starts in any window of that many seconds; with ``priority``, lower numbers
    start first. FIFO otherwise, and within a priority.
    """

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        priority: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a queue's name must be a non-empty str, not {name!r}")
        self.name = name
        self.concurrency = _limit("concurrency", concurrency)
        self.worker_concurrency = _limit("worker_concurrency", worker_concurrency)
        if rate_limit is not None:
            try:
                count, per = rate_limit
            except (TypeError, ValueError):
                raise ValueError(f"rate_limit must be (n, seconds), not {rate_limit!r}") from None
            _limit("rate_limit's n", count)
            if isinstance(per, bool) or not isinstance(per, int | float) or not per > 0:
                raise ValueError(f"rate_limit's seconds must be a positive number, not {per!r}")
            rate_limit = (count, float(per))
        self.rate_limit = rate_limit
        self.priority = bool(priority)
        _queues[name] = self  # a reloaded module declares it again

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"

    async def enqueue(
        self,
        node: Node,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        priority: int = 0,
        dedup_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle:
        """Record the DAG as a PENDING workflow of this queue; its handle once durable.

        Raises ``DuplicateWorkflowError`` when a PENDING or RUNNING workflow of the queue
        holds ``dedup_id``, ``QueueFullError`` beyond the engine's ``max_pending_workflows``
        (nothing is written then). An id that exists is attached to, as ``run_async`` does.
        """
        host = cast(QueueHost, _context.current_runner())
        return await host.enqueue(
            self, node, workflow_id, metadata=metadata, priority=priority, dedup_id=dedup_id, timeout=timeout
        )


class _Lane:
    """One queue's workflows as this engine knows them (``queue`` None: the engine's own
    limit, for ``run_async`` beyond ``max_running_workflows``)."""

    __slots__ = ("counted", "dedup", "heap", "here", "name", "pending", "running", "starts")

    def __init__(self, name: str | None) -> None:
        self.name = name
        #: (priority, recorded time, id) of PENDING workflows; entries may be stale.
        self.heap: list[tuple[int, float, str]] = []
        self.pending: set[str] = set()
        #: RUNNING anywhere, as far as this engine knows; ``here``: run by this engine.
        self.running: set[str] = set()
        self.here: set[str] = set()
        #: Start times within the rate window (sorted) and the workflows they belong to.
        self.starts: list[tuple[float, str]] = []
        self.counted: set[str] = set()
        self.dedup: dict[str, str] = {}

    @property
    def queue(self) -> Queue | None:
        return _queues.get(self.name) if self.name is not None else None


class QueueRunner:
    """An engine's queues, limits and deadlines: what is waiting, what runs, what to start.

    The engine makes one (``Engine`` holds it); it is the core's event listener while it
    runs, and its task lives in the core's task group.
    """

    def __init__(
        self,
        core: EngineCore,
        host: QueueHost,
        *,
        max_running: int | None = None,
        max_pending: int | None = None,
        serve_only: Iterable[Queue] | None = None,
    ) -> None:
        self.core = core
        self.host = host
        #: The names of the queues whose pending workflows this engine starts (None: all).
        self.serve_only: set[str] | None = None
        if serve_only is not None:
            self.serve_only = set()
            for queue in serve_only:
                if not isinstance(queue, Queue) or queue.name is None:
                    raise TypeError(f"queues must be declared evflow.Queue objects, not {queue!r}")
                self.serve_only.add(queue.name)
        self.max_running = _limit("max_running_workflows", max_running)
        if max_pending is not None and (
            isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 0
        ):
            raise ValueError(f"max_pending_workflows must be an int >= 0 or None, not {max_pending!r}")
        self.max_pending = max_pending
        self._started = False
        self._lanes: dict[str | None, _Lane] = {}
        #: Ordinary workflows this engine runs (``max_running_workflows`` counts them).
        self._here: set[str] = set()
        self._deadlines: list[tuple[float, str]] = []
        self._deadline_ids: set[str] = set()
        self._wake = anyio.Event()
        #: What other engines change (shared stores; made on first need), and held while
        #: what it tells is taken and learned, so a round never misses what is in flight.
        self._feed: ChangeFeed | None = None
        self._catching_up = anyio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def wanted(self) -> bool:
        """Whether this engine needs the runner from its open on: queues are declared,
        limits set, or the store holds pending workflows or deadlines."""
        if _queues or self.max_running is not None or self.max_pending is not None:
            return True
        return any(
            state.run_status in _WAITING_OR_RUNNING
            and (state.queued_time is not None or state.deadline is not None)
            for _wid, state in self.core.states()
        )

    def ensure_started(self) -> None:
        """Start the runner (idempotent): learn every state, listen, start the task."""
        if self._started:
            return
        tg = self.core.require_open()
        self._started = True
        self._lanes[None] = _Lane(None)
        for name in _queues:
            self._lanes[name] = _Lane(name)
        self.core.add_event_listener(self)
        self._learn_all(state for _wid, state in self.core.states())
        if self.core.store.shared:  # an idle worker hears of what other engines enqueue
            self._changes()
        tg.start_soon(self._serve, name="evflow queues")

    def stopped(self) -> None:
        """The engine closed (the task is gone with its task group): forget everything."""
        if self._started:
            self._started = False
            self.core.remove_event_listener(self)
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._lanes.clear()
        self._here.clear()
        self._deadlines.clear()
        self._deadline_ids.clear()

    def _learn_all(self, states: Iterable[WorkflowState]) -> None:
        for state in states:
            if state.run_status in _WAITING_OR_RUNNING or state.queued_time is not None:
                self._learn(state)

    def _lane(self, name: str | None) -> _Lane | None:
        lane = self._lanes.get(name)
        if lane is None and name is not None and name in _queues:
            # declared after the runner started: learn its workflows once
            lane = self._lanes[name] = _Lane(name)
            self._learn_all(s for _w, s in self.core.states() if s.queue == name)
        return lane

    # -- what the core tells -------------------------------------------------------------------

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        cls = type(event)
        if cls is WorkflowStarted:
            started = cast(WorkflowStarted, event)
            if state.kind == "workflow" and not started.pending:
                self._here.add(state.workflow_id)  # this engine records only its own runs
            self._learn(state, runs_here=not started.pending)
        elif cls in _ENDS:
            self._learn(state)
        else:
            return
        self._wake.set()

    def run_closed(self, workflow_id: str) -> None:
        self._here.discard(workflow_id)
        for lane in self._lanes.values():
            lane.here.discard(workflow_id)
        state = self.core.find_state(workflow_id)
        if state is not None:
            self._learn(state)
        else:
            for lane in self._lanes.values():
                lane.running.discard(workflow_id)
        self._wake.set()

    def _learn(self, state: WorkflowState, *, runs_here: bool = False) -> None:
        """Bring what this runner knows of the workflow in line with its state."""
        wid = state.workflow_id
        status = (
            WorkflowStatus.RUNNING
            if runs_here and state.run_status is WorkflowStatus.RUNNING
            else state.status
        )
        # RESUMABLE ones too: a deadline passes whether or not an engine runs the workflow
        if (
            state.deadline is not None
            and state.run_status in _WAITING_OR_RUNNING
            and wid not in self._deadline_ids
        ):
            self._deadline_ids.add(wid)
            heapq.heappush(self._deadlines, (state.deadline, wid))
            self._wake.set()
        if state.queued_time is None:
            return
        lane = self._lane(state.queue)
        if lane is None:  # a queue this process does not declare: its limits are unknown
            return
        if status is WorkflowStatus.PENDING:
            if wid not in lane.pending:
                lane.pending.add(wid)
                prio = state.priority if (lane.queue is not None and lane.queue.priority) else 0
                heapq.heappush(lane.heap, (prio, state.queued_time, wid))
            lane.running.discard(wid)
        else:
            lane.pending.discard(wid)
            if status is WorkflowStatus.RUNNING:
                lane.running.add(wid)
            else:
                lane.running.discard(wid)
                lane.here.discard(wid)
            if state.start_time is not None and wid not in lane.counted:
                self._count_start(lane, state.start_time, wid)
        if state.dedup_id is not None:
            if status in _WAITING_OR_RUNNING:
                lane.dedup[state.dedup_id] = wid
            elif lane.dedup.get(state.dedup_id) == wid:
                del lane.dedup[state.dedup_id]

    def _count_start(self, lane: _Lane, at: float, wid: str) -> None:
        queue = lane.queue
        if queue is None or queue.rate_limit is None or at <= time.time() - queue.rate_limit[1]:
            return
        lane.counted.add(wid)
        bisect.insort(lane.starts, (at, wid))

    # -- limits ----------------------------------------------------------------------------------

    def pending_count(self) -> int:
        """Workflows this engine knows to be waiting (of its lanes)."""
        return sum(len(lane.pending) for lane in self._lanes.values())

    def must_wait(self) -> bool:
        """Whether a new ``run_async`` must be recorded PENDING: the engine runs
        ``max_running_workflows`` already, or earlier ones wait (they start first)."""
        if self.max_running is None:
            return False
        self.ensure_started()
        lane = self._lanes[None]
        return len(self._here) >= self.max_running or bool(lane.pending)

    def _room(self, lane: _Lane, now: float) -> tuple[int, float]:
        """How many of the lane's workflows may start now, and when more may (rate)."""
        room = math.inf
        if self.max_running is not None:
            room = self.max_running - len(self._here)
        queue = lane.queue
        next_at = math.inf
        if queue is not None:
            if queue.concurrency is not None:
                room = min(room, queue.concurrency - len(lane.running))
            if queue.worker_concurrency is not None:
                room = min(room, queue.worker_concurrency - len(lane.here))
            if queue.rate_limit is not None:
                count, per = queue.rate_limit
                cut = bisect.bisect_right(lane.starts, (now - per, "\U0010ffff"))
                for _at, wid in lane.starts[:cut]:
                    lane.counted.discard(wid)
                del lane.starts[:cut]
                room = min(room, count - len(lane.starts))
                if len(lane.starts) >= count:
                    next_at = lane.starts[len(lane.starts) - count][0] + per
        return (int(room) if room != math.inf else 1 << 30), next_at

    # -- the task ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            self._wake = anyio.Event()
            try:
                next_at = await self._round()
            except StoreError:
                next_at = time.time() + 1.0  # the store fails: try again in a while
            delay = next_at - time.time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()

    async def _round(self) -> float:
        now = time.time()
        next_at = math.inf
        while self._deadlines and self._deadlines[0][0] <= now:
            _at, wid = heapq.heappop(self._deadlines)
            self._deadline_ids.discard(wid)
            state = self.core.find_state(wid)
            if state is not None and state.deadline is not None and state.run_status in _WAITING_OR_RUNNING:
                self.core.require_open().start_soon(self._expire, wid)
        if self._deadlines:
            next_at = self._deadlines[0][0]
        shared = self.core.store.shared
        for lane in list(self._lanes.values()):
            if not lane.pending:
                continue
            if self.serve_only is not None and lane.name is not None and lane.name not in self.serve_only:
                continue  # another worker's queue (``Engine(queues=...)``)
            if shared and lane.name is not None:
                room, at = self._room(lane, time.time())
                if room <= 0:  # until one ends (which wakes this runner) or the rate allows
                    next_at = min(next_at, at)
                    continue
                async with self.core.store.lock(_lock_name(lane.name)):
                    await self._catch_up(fence=True)
                    at = await self._start(lane)
            else:
                at = await self._start(lane)
            next_at = min(next_at, at)
        return next_at

    async def _expire(self, workflow_id: str) -> None:
        """The workflow's deadline passed: cancel it (``WorkflowTimeoutError`` for waiters)."""
        try:
            await self.host.cancel(workflow_id)
        except EvflowError:  # deleted meanwhile, or the store fails: the next open tries again
            pass

    # -- other engines (shared stores) ---------------------------------------------------------

    def _changes(self) -> ChangeFeed:
        """The store's feed of changes, and the watcher that follows it (from the first need)."""
        if self._feed is None:
            self._feed = self.core.store.change_feed()
            self.core.require_open().start_soon(self._watch, self._feed, name="evflow queue changes")
        return self._feed

    async def _watch(self, feed: ChangeFeed) -> None:
        """Learn what other engines change as the feed tells it, waking the runner when it
        matters; read again what they run every ``SHARED_RECHECK`` seconds."""
        recheck_at = time.time() + SHARED_RECHECK
        while True:
            await feed.wait(max(0.0, recheck_at - time.time()))
            try:
                learned = await self._catch_up(fence=False)
                if time.time() >= recheck_at:
                    recheck_at = time.time() + SHARED_RECHECK
                    learned = await self._recheck() or learned
            except StoreError:  # the store fails: the rounds see it too; try again in a while
                await anyio.sleep(1.0)
                continue
            if learned:
                self._wake.set()

    def _runs_here(self, workflow_id: str) -> bool:
        """Whether the workflow runs in this engine (memory is ahead of the store then)."""
        return self.core.run_of(workflow_id) is not None

    async def _catch_up(self, *, fence: bool) -> bool:
        """Learn what the feed tells (``fence``: and every change made durable before):
        new workflows, and those of queues or with deadlines, waiting or running, that
        moved on. Whether anything was learned."""
        core = self.core
        feed = self._changes()
        async with self._catching_up:
            changes = await feed.changes(fence=fence, skip=self._runs_here)
            if changes is None:  # the feed cannot tell: list the store, read what others run
                changes = dict.fromkeys(
                    (w for w in await core.store.list_workflows() if not core.knows(w)), -1
                )
                for lane in self._lanes.values():
                    changes.update(dict.fromkeys(lane.running - lane.here, -1))
            learned = False
            for wid, last in changes.items():
                if core.run_of(wid) is not None:  # runs here: memory is ahead of the store
                    continue
                state = core.find_state(wid)
                if state is None:
                    if last == 0 or core.knows(wid):  # gone, or a log that does not load
                        continue
                elif (0 < last <= state.last_seq) or not _followed(state):
                    continue
                await self._read(wid)
                learned = True
            return learned

    async def _recheck(self) -> bool:
        """Read again the workflows of queues that other engines run; whether one stopped."""
        async with self._catching_up:
            others = {wid for lane in self._lanes.values() for wid in lane.running - lane.here}
            for wid in others:
                if self.core.run_of(wid) is None:
                    await self._read(wid)
            return any(wid not in lane.running for lane in self._lanes.values() for wid in others)

    async def _read(self, wid: str) -> None:
        """Bring the workflow up to date with the store, and what the lanes know of it."""
        await self.core.sync_known(wid)
        state = self.core.find_state(wid)
        if state is not None:
            self._learn(state)
            return
        for lane in self._lanes.values():  # deleted (or broken): nothing of it waits or runs
            lane.pending.discard(wid)  # its heap entry is dropped when it comes up
            lane.running.discard(wid)
            lane.here.discard(wid)
            for dedup_id in [d for d, holder in lane.dedup.items() if holder == wid]:
                del lane.dedup[dedup_id]

    async def _start(self, lane: _Lane) -> float:
        """Claim and start the lane's first workflows as far as there is room; when more
        may start (a rate limit's next slot), else infinity."""
        core = self.core
        started: list[str] = []
        next_at = math.inf
        try:
            while lane.heap:
                room, next_at = self._room(lane, time.time())
                if room <= 0:
                    break
                _prio, _at, wid = lane.heap[0]
                state = core.find_state(wid)
                if wid not in lane.pending or state is None or state.run_status is not WorkflowStatus.PENDING:
                    heapq.heappop(lane.heap)
                    lane.pending.discard(wid)
                    if state is not None:
                        self._learn(state)
                    continue
                heapq.heappop(lane.heap)
                lane.pending.discard(wid)
                if await self._claim(state):
                    lane.here.add(wid)
                    self._learn(state, runs_here=True)
                    started.append(wid)
                else:
                    fresh = core.find_state(wid)
                    if fresh is not None:
                        self._learn(fresh)
                    if not core.is_open or wid in lane.pending:
                        break  # closing, or the store failed: the next round tries again
        finally:
            if not core.store.shared:
                for wid in started:
                    try:
                        await core.flush_start(wid)
                    except EvflowError:  # the run let go of it (RESUMABLE), cause recorded
                        pass
        return next_at

    async def _claim(self, state: WorkflowState) -> bool:
        """Record the workflow's start and run it here; False if another engine was first."""
        core = self.core
        wid = state.workflow_id
        if not core.is_open:  # closing: leave it PENDING for the next engine
            return False
        if core.store.shared:
            claim = WorkflowStarted(
                seq=state.last_seq + 1, time=time.time(), workflow_id=wid, resume=True, owner=core.engine_id
            )
            try:
                claimed = await core.append_then_fold(state, claim)
            except StoreError as exc:  # whether it landed is unknown: read it afresh next time
                core.record_lost(wid, exc)
                return False
            if claimed is None:
                await core.sync_known(wid)
                return False
            if not core.is_open:  # closed meanwhile: the claim stands, it is RESUMABLE now
                return False
        else:
            core.emit(state, (WorkflowStarted, {"workflow_id": wid, "resume": True}))
        core.start_run(state)
        return True

    # -- recording pending workflows ---------------------------------------------------------

    async def submit(
        self,
        queue: Queue | None,
        node: Node,
        workflow_id: str | None,
        *,
        metadata: dict[str, Any] | None,
        priority: int = 0,
        dedup_id: str | None = None,
        deadline: float | None = None,
    ) -> WorkflowHandle:
        """Record the DAG as a PENDING workflow of ``queue`` (None: of the engine's limit)."""
        if not isinstance(node, Node):
            raise TypeError(f"enqueue needs a node from step.step(...), not {type(node).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if dedup_id is not None and not isinstance(dedup_id, str):
            raise TypeError(f"dedup_id must be a str, not {type(dedup_id).__name__}")
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else uuid.uuid4().hex
        user_metadata = validate_metadata(metadata, f"workflow {wid!r}")
        core = self.core
        core.require_open()
        self.ensure_started()
        lane = self._lanes[None] if queue is None else self._lane(queue.name)
        assert lane is not None
        if core.store.shared and queue is not None and dedup_id is not None:
            # the dedup id's holders, as of every enqueue made before (they hold this lock)
            async with core.store.lock(_lock_name(queue.name)):
                await self._catch_up(fence=True)
                first = await self._first(lane, queue, node, wid, user_metadata, priority, dedup_id, deadline)
                if first is not None:
                    return await self._record(first)
        else:
            first = await self._first(lane, queue, node, wid, user_metadata, priority, dedup_id, deadline)
            if first is not None:
                return await self._record(first)
        return await self.host.resume_async(wid)  # the id exists: attach (or resume) as run does

    async def _first(
        self,
        lane: _Lane,
        queue: Queue | None,
        node: Node,
        wid: str,
        user_metadata: dict[str, Any],
        priority: int,
        dedup_id: str | None,
        deadline: float | None,
    ) -> WorkflowStarted | None:
        """The first event of the new pending workflow, after the checks (None: it exists)."""
        core = self.core
        if await core.sync_known(wid) if core.store.shared else core.knows(wid):
            return None
        if dedup_id is not None and queue is not None:
            holder = lane.dedup.get(dedup_id)
            if holder is not None:
                state = await core.sync(holder) if core.knows(holder) else None
                if state is not None and state.status in _WAITING_OR_RUNNING and state.dedup_id == dedup_id:
                    raise DuplicateWorkflowError(queue.name, dedup_id, holder)
                if lane.dedup.get(dedup_id) == holder:
                    del lane.dedup[dedup_id]
        if self.max_pending is not None and self.pending_count() >= self.max_pending:
            raise QueueFullError(wid, self.max_pending)
        specs, output = record_dag(None, node, allow_pickle=core.allow_pickle)
        return WorkflowStarted(
            seq=1,
            time=time.time(),
            workflow_id=wid,
            output=output,
            steps=specs,
            user_metadata=user_metadata,
            owner=core.engine_id,
            version=FORMAT_VERSION,
            pending=True,
            queue=queue.name if queue is not None else None,
            priority=priority,
            dedup_id=dedup_id,
            deadline=deadline,
        )

    async def _record(self, first: WorkflowStarted) -> WorkflowHandle:
        core = self.core
        wid = first.workflow_id
        try:
            if core.store.shared:
                if await core.append_then_fold(None, first) is None:  # another engine created it
                    await core.sync_known(wid)
                    return await self.host.resume_async(wid)
            else:
                core.create(first)
                await core.store.flush(wid)
        except StoreError as exc:
            core.refetch(wid)
            raise core.store_failure(wid, exc) from exc
        return core.handle(wid)


def _followed(state: WorkflowState) -> bool:
    """Whether the runner follows the workflow: waiting or running, of a queue or with a
    deadline."""
    return state.run_status in _WAITING_OR_RUNNING and (
        state.queued_time is not None or state.deadline is not None
    )


def _lock_name(queue: str) -> str:
    return f"evflow-queue:{queue}"
