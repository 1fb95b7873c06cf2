"""The engine core: the one place a workflow's state changes, and the interface every
step kind and service uses.

Every state change goes through the core: ``emit`` queues events in the store (in order,
with their sequence numbers) and folds them into the in-memory projection with
``_projection.apply``, the one place status is computed; ``create`` does the same for a
new workflow's first event, and ``append_then_fold`` for an event that must be durable
before it counts (claiming a workflow on a shared store). Every task lives in the
core's task group; cancellation uses cancel scopes.

The core never imports a step kind or a service: they register themselves
(``_kinds.register_step_kind``, ``_kinds.register_workflow_kind``) and the core makes
one of each per engine on first use (``step_kind``, ``service``). Observers (tracing)
hear of each event it records through ``add_event_listener``, without the core knowing them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio

from .._codec import decode_value, encode_value, error_info, exception_from_info
from .._errors import (
    CorruptLogError,
    LeaseExpiredError,
    SequenceConflictError,
    StoreError,
    UnencodableError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
)
from .._events import (
    ErrorInfo,
    Event,
    EventPublished,
    MetadataAttached,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from .._handle import WorkflowControl, WorkflowHandle
from .._liveness import owner_is_live
from .._projection import StepState, WorkflowState, WorkflowStatus, apply, fold, replay
from .._signal import Signal, new_signal
from .._step import validate_workflow_id
from ._execution import Execution
from ._kinds import StepKind, WorkflowKindService, step_kind_factory, workflow_kind_service
from ._run import LiveRun

if TYPE_CHECKING:
    from ..stores import Store


#: Takeovers are told on the recovery logger (the one ``evflow worker`` prints).
log = logging.getLogger("evflow.recovery")
__all__ = ["EngineCore", "EventListener", "is_store_failure"]

S = TypeVar("S")

_EXECUTE_TASK_NAME = "evflow workflow"


class EventListener(Protocol):
    """What observes the events a core records (``EngineCore.add_event_listener``).

    Both methods are called on the event loop, synchronously: they must not block and
    must not raise (an exception propagates out of the ``emit`` that recorded the event,
    into the step or run that emitted it).
    """

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        """``event`` was queued in the store and folded; ``state`` is the workflow's state
        after every event of the same ``emit`` (in order: one call per event)."""

    def run_closed(self, workflow_id: str) -> None:
        """A live run of the workflow in this engine ended, however it ended (also when
        it was interrupted, which records no event)."""


class _ClaimLock:
    """A workflow's claim lock and how many tasks hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


class EngineCore:
    """What runs workflows: their states, their live runs, the events, the task group.

    ``owner`` is the public engine (handles ask it for outputs); ``store`` is opened and
    closed by ``open``/``close``.
    """

    def __init__(self, owner: WorkflowControl, store: Store, *, engine_id: str, allow_pickle: bool) -> None:
        self.owner = owner
        self.store = store
        #: This engine's id, recorded as the ``owner`` of every run it starts.
        self.engine_id = engine_id
        self.allow_pickle = allow_pickle
        self._states: dict[str, WorkflowState] = {}
        self._broken: dict[str, Exception] = {}
        self._runs: dict[str, LiveRun] = {}
        self._changed: dict[str, Signal] = {}
        #: The exception a workflow failed with in this process (a better cause than the record).
        self._exceptions: dict[str, BaseException] = {}
        #: Why this engine let go of a workflow mid-run (a store error), by id.
        self._lost: dict[str, Exception] = {}
        #: Workflows whose in-memory state may be ahead of the store (events it refused or
        #: never made durable): the next look reads them afresh from the store.
        self._refetch: set[str] = set()
        #: Workflows this engine is appending a claim to (``append_then_fold``): reading
        #: them meanwhile would fold the claim before it is this engine's run.
        self._claiming: set[str] = set()
        self._kinds: dict[str, StepKind] = {}
        self._services: dict[object, object] = {}
        self._listeners: list[EventListener] = []
        #: Per workflow, held while a run/resume on a shared store decides whether to claim
        #: it; dropped when nobody holds or waits for it.
        self._claim_locks: dict[str, _ClaimLock] = {}
        self._wtg: anyio.abc.TaskGroup | None = None
        #: Whether the core is between ``open`` and ``close`` (an attribute: every
        #: module-level call asks it, through ``current_engine``).
        self.is_open = False
        self._service_task: Any = None
        self._stop: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._service_error: BaseException | None = None
        self._loop_token: Any = None
        self._loop_thread = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store, fold every workflow's log, and start the task group."""
        await self.store.open()
        try:
            await self._recover()
            self._stop = anyio.Event()
            self._stopped = anyio.Event()
            ready = anyio.Event()
            self._spawn_service(ready)
            await ready.wait()
            if self._service_error is not None:
                raise self._service_error
        except BaseException:
            await self.store.close()
            raise
        self._loop_token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self.is_open = True

    async def close(self) -> None:
        """Interrupt running workflows (they become RESUMABLE) and close the store."""
        if not self.is_open:
            return
        self.is_open = False
        assert self._stop is not None and self._stopped is not None
        self._stop.set()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()
        for wid in list(self._changed):
            self.notify(wid)
        if self._service_error is not None:
            raise self._service_error

    async def _recover(self) -> None:
        logs = await self.store.read_all()
        # Folding a whole store allocates many objects that all stay alive: the cyclic
        # garbage collector would scan them again and again for nothing (~30 % of a cold
        # open of 10,000 workflows, see docs/performance.md).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for wid, events in logs.items():
                if isinstance(events, Exception):
                    self._broken[wid] = events
                    continue
                if not events:
                    continue
                try:
                    self._states[wid] = replay(events, live=False)
                except (ValueError, LookupError) as exc:
                    self._broken[wid] = CorruptLogError(wid, 0, f"events do not fold: {exc}")
        finally:
            if collecting:
                gc.enable()

    def _spawn_service(self, ready: anyio.Event) -> None:
        # The engine may be left in another task than it was entered in (pytest-asyncio
        # fixtures), so its task group lives in a service task of its own, spawned with the
        # backend's primitive; every workflow task is a child of that group.
        if sniffio.current_async_library() == "trio":
            import trio

            trio.lowlevel.spawn_system_task(self._serve, ready)
        else:
            import asyncio

            self._service_task = asyncio.get_running_loop().create_task(self._serve(ready))

    async def _serve(self, ready: anyio.Event) -> None:
        assert self._stop is not None and self._stopped is not None
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.store.run)
                async with anyio.create_task_group() as wtg:
                    self._wtg = wtg
                    ready.set()
                    await self._stop.wait()
                    wtg.cancel_scope.cancel()
                self._wtg = None
                with anyio.CancelScope(shield=True):
                    await self.store.close()
                tg.cancel_scope.cancel()
        except BaseException as exc:  # a service task must never crash the event loop
            self._service_error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for state in self._states.values():
                state.live = False
            ready.set()
            self._stopped.set()

    @property
    def loop_token(self) -> Any:
        """The event loop this engine runs on (for calls from step threads)."""
        return self._loop_token

    def in_event_loop_thread(self) -> bool:
        """Whether the caller runs on this engine's event loop thread."""
        return threading.get_ident() == self._loop_thread

    def require_open(self) -> anyio.abc.TaskGroup:
        """The task group that workflow tasks and services start their tasks in;
        ``RuntimeError`` when the engine is not open."""
        if not self.is_open or self._wtg is None:
            raise RuntimeError("the engine is not open; use `async with evflow.Engine(...)`")
        return self._wtg

    # -- what plugs in -------------------------------------------------------------------------

    def service(self, cls: Callable[[EngineCore], S]) -> S:
        """This engine's instance of service ``cls`` (``cls(core)``, made on first use)."""
        service = self._services.get(cls)
        if service is None:
            service = self._services[cls] = cls(self)
        return cast(S, service)

    def add_event_listener(self, listener: EventListener) -> None:
        """Tell ``listener`` of every event this engine records from now on, and of every
        live run's end. Events other engines append to a shared store are not told."""
        self._listeners.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        """Stop telling ``listener``; ``ValueError`` if it was not added."""
        self._listeners.remove(listener)

    def _tell(self, state: WorkflowState, events: list[Event]) -> None:
        for listener in list(self._listeners):
            for event in events:
                listener.event_folded(state, event)

    def step_kind(self, step_type: str) -> StepKind:
        """This engine's kind for steps of ``step_type``; ``LookupError`` if none is registered."""
        kind = self._kinds.get(step_type)
        if kind is None:
            kind = self._kinds[step_type] = step_kind_factory(step_type)(self)
        return kind

    def workflow_service(self, kind: str) -> WorkflowKindService | None:
        """The service of workflow kind ``kind`` (None for an ordinary DAG workflow)."""
        cls = workflow_kind_service(kind)
        return self.service(cls) if cls is not None else None

    # -- reading state -------------------------------------------------------------------------

    def state(self, workflow_id: str) -> WorkflowState:
        """The workflow's folded state as this engine knows it.

        Raises ``WorkflowNotFoundError``, or the ``CorruptLogError`` of a log that does not load.
        """
        validate_workflow_id(workflow_id)
        state = self._states.get(workflow_id)
        if state is None:
            broken = self._broken.get(workflow_id)
            if broken is not None:
                raise broken
            raise WorkflowNotFoundError(workflow_id)
        return state

    def find_state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's state, or None if this engine knows no such workflow."""
        return self._states.get(workflow_id)

    @contextlib.asynccontextmanager
    async def claiming(self, workflow_id: str) -> AsyncIterator[None]:
        """Hold the workflow's claim lock: one look-then-claim at a time per workflow on a
        shared store (a run of a new id, a resume, a takeover), others go on meanwhile."""
        entry = self._claim_locks.get(workflow_id)
        if entry is None:
            entry = self._claim_locks[workflow_id] = _ClaimLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._claim_locks[workflow_id]

    def knows(self, workflow_id: str) -> bool:
        """Whether the workflow exists as far as this engine knows (a broken log counts)."""
        return workflow_id in self._states or workflow_id in self._broken

    def states(self) -> list[tuple[str, WorkflowState]]:
        """Every known workflow's state (a copy of the list: safe across awaits)."""
        return list(self._states.items())

    async def sync(self, workflow_id: str) -> WorkflowState:
        """The workflow's state, first brought up to date with a shared store (or with any
        store whose write of it failed), unless this engine runs it, when memory is ahead
        of the store."""
        if self.must_read(workflow_id):
            await self.sync_known(workflow_id)
        return self.state(workflow_id)

    def must_read(self, workflow_id: str) -> bool:
        """Whether ``sync`` reads the store for the workflow (the reads' fast path asks
        this, not ``sync``: a coroutine costs more than the whole answer from memory)."""
        return (self.store.shared or workflow_id in self._refetch) and workflow_id not in self._runs

    async def sync_known(self, workflow_id: str) -> bool:
        """Read what other engines appended to the workflow (shared stores); whether it exists.

        Only the new events are read and folded, so the cost does not grow with the log.
        """
        validate_workflow_id(workflow_id)  # before the store sees it
        known = state = self._states.get(workflow_id)
        if workflow_id in self._claiming:  # memory is about to be ahead of what a read gives
            return state is not None
        before = (state.last_seq, state.live) if state is not None else None
        fresh = None
        try:
            if state is None or workflow_id in self._refetch:
                events = await self.store.read(workflow_id)
                self._refetch.discard(workflow_id)
                if not events:
                    self._states.pop(workflow_id, None)
                    return False
                state = fresh = replay(events, live=False)
            else:
                # re-read the last known event too: none back means another engine deleted it
                events = await self.store.read(workflow_id, state.last_seq - 1)
                if not events:
                    self._states.pop(workflow_id, None)
                    return False
                # Another read of this workflow may have folded some of them during the
                # await (a waiting caller and the queue service both look): only what is new.
                last = state.last_seq
                fold(state, [event for event in events if event.seq > last])
        except CorruptLogError as exc:
            self._broken[workflow_id] = exc
            self._states.pop(workflow_id, None)
            return True
        except (ValueError, LookupError) as exc:
            self._broken[workflow_id] = CorruptLogError(workflow_id, 0, f"events do not fold: {exc}")
            self._states.pop(workflow_id, None)
            return True
        self._broken.pop(workflow_id, None)
        live = await owner_is_live(
            self.store, state, engine_id=self.engine_id, runs_here=workflow_id in self._runs
        )
        if fresh is None:
            state.live = live
        elif self._states.get(workflow_id) is known:
            # A state read afresh is shown only once its live flag is known: two looks at
            # once (a caller and the queue service) would otherwise let one of them see a
            # running workflow as RESUMABLE, and resume it.
            fresh.live = live
            self._states[workflow_id] = fresh
        else:  # another look (or a claim) put a state in place meanwhile: that one stands
            return True
        if before != (state.last_seq, state.live):
            self.notify(workflow_id)  # what another engine did: wake who waits for it here
        return True

    def refetch(self, workflow_id: str) -> None:
        """The store refused this engine's events for the workflow (another engine wrote
        it): read it afresh from the store at the next look."""
        self._refetch.add(workflow_id)

    def forget(self, workflow_id: str) -> None:
        """Drop everything known about a deleted workflow (its id can be used afresh)."""
        self._states.pop(workflow_id, None)
        self._broken.pop(workflow_id, None)
        self._exceptions.pop(workflow_id, None)
        self._lost.pop(workflow_id, None)
        self.notify(workflow_id)

    def lost_cause(self, workflow_id: str) -> Exception | None:
        """Why this engine let go of the workflow mid-run (a store error), if it did."""
        return self._lost.get(workflow_id)

    def lost_to_lapses(self) -> list[str]:
        """The workflows this engine let go of because its lease had run out (the store
        refused their appends): another engine may have taken them over meanwhile."""
        return [wid for wid, cause in self._lost.items() if isinstance(cause, LeaseExpiredError)]

    def record_lost(self, workflow_id: str, exc: StoreError) -> None:
        """A resume of the workflow could not be recorded: ``exc`` is why it is not
        running (``get_output`` raises ``store_failure`` for it)."""
        self._lost[workflow_id] = exc

    def store_failure(self, workflow_id: str, exc: StoreError) -> WorkflowExecutionError:
        """The error a caller waiting for a run gets when the store failed to record it
        (raise it ``from exc``)."""
        return WorkflowExecutionError(
            workflow_id,
            None,
            f"the store could not record it ({exc}); once the store works again, "
            f"evflow.resume({workflow_id!r}) continues it from what was recorded "
            "(run it again if nothing was)",
        )

    # -- changing state: events ----------------------------------------------------------------

    def emit(self, state: WorkflowState, *events: tuple[type[Event], dict[str, Any]]) -> None:
        """Queue events (class, fields) in the store and fold them into ``state``; never
        blocks. Each gets the next ``seq`` and the time now; a ``WorkflowStarted`` gets
        this engine as its ``owner``."""
        now = time.time()
        seq = state.last_seq
        built = [
            cls(seq=seq + i, time=now, **fields, owner=self.engine_id)
            if cls is WorkflowStarted
            else cls(seq=seq + i, time=now, **fields)
            for i, (cls, fields) in enumerate(events, 1)
        ]
        self.store.append_nowait(state.workflow_id, built)
        for event in built:
            apply(state, event)
        if self._listeners:  # the one cost of the hook when nobody listens
            self._tell(state, built)
        self.notify(state.workflow_id)

    def create(self, first: WorkflowStarted) -> WorkflowState:
        """Queue a new workflow's first event and fold its state (never blocks; the
        caller flushes). The workflow must not exist yet."""
        wid = first.workflow_id
        self.store.append_nowait(wid, [first])
        state = self._states[wid] = apply(None, first)
        if self._listeners:
            self._tell(state, [first])
        self.notify(wid)
        return state

    async def append_then_fold(self, state: WorkflowState | None, event: Event) -> WorkflowState | None:
        """Append ``event`` durably, then fold it (into ``state``, or a new workflow's
        state: then a ``WorkflowStarted``): how an engine claims a workflow on a shared
        store, or records a message for one nobody runs. Returns None, and
        marks the workflow to be read afresh, when another engine appended first. Any
        other ``StoreError`` is raised (the workflow is then read afresh too: whether the
        event landed is unknown)."""
        if state is None:
            assert isinstance(event, WorkflowStarted), "a new workflow begins with WorkflowStarted"
            wid = event.workflow_id
        else:
            wid = state.workflow_id
        self._claiming.add(wid)
        try:
            await self.store.append(wid, [event])
        except SequenceConflictError:
            self._refetch.add(wid)
            return None
        except StoreError:
            self._refetch.add(wid)
            raise
        finally:
            self._claiming.discard(wid)
        if state is None:
            state = self._states[wid] = apply(None, event)
        else:
            apply(state, event)
        if self._listeners:
            self._tell(state, [event])
        self.notify(wid)
        return state

    def notify(self, workflow_id: str) -> None:
        """Wake whoever waits in ``wait_change`` for this workflow."""
        event = self._changed.pop(workflow_id, None)
        if event is not None:
            event.set()

    async def wait_change(self, workflow_id: str) -> None:
        """Return at the workflow's next change in this engine (an event, a run's end)."""
        event = self._changed.get(workflow_id)
        if event is None:
            event = self._changed[workflow_id] = new_signal()
        await event.wait()

    def attach_metadata_nowait(self, workflow_id: str, step: str | None, metadata: dict[str, Any]) -> None:
        """Merge validated user metadata into a running step (or the workflow)."""
        self.emit(self.state(workflow_id), (MetadataAttached, {"metadata": metadata, "step": step}))

    def publish_nowait(self, workflow_id: str, step: str | None, key: str, value: bytes) -> None:
        """Record an encoded value a running step published under ``key`` (``set_event``)."""
        self.emit(self.state(workflow_id), (EventPublished, {"key": key, "value": value, "step": step}))

    # -- runs ------------------------------------------------------------------------------------

    def run_of(self, workflow_id: str) -> LiveRun | None:
        """The workflow's live run in this engine, if it runs here."""
        return self._runs.get(workflow_id)

    def open_run(self, state: WorkflowState) -> LiveRun:
        """Register a new live run of the workflow here (never blocks); the caller records
        its ``WorkflowStarted`` and runs it with ``execute`` in the task group."""
        wid = state.workflow_id
        run = self._runs[wid] = LiveRun(wid)
        state.live = True
        self._exceptions.pop(wid, None)
        return run

    def start_run(self, state: WorkflowState) -> None:
        """Open a run of the workflow and execute its DAG in the task group (never blocks)."""
        wtg = self.require_open()
        run = self.open_run(state)
        # A constant name: anyio would otherwise build the same string anew for every task.
        wtg.start_soon(self.execute, state, run, name=_EXECUTE_TASK_NAME)

    async def flush_start(self, workflow_id: str) -> None:
        """Wait until a started run's ``WorkflowStarted`` is durable. If it cannot be
        written, the run lets go of the workflow before ``store_failure`` is raised (the
        ``StoreError`` as its ``__cause__``)."""
        try:
            await self.store.flush(workflow_id)
        except StoreError as exc:
            run = self._runs.get(workflow_id)
            if run is not None:
                run.lost = exc
                run.scope.cancel()
                with anyio.CancelScope(shield=True):
                    await run.wait_done()
            raise self.store_failure(workflow_id, exc) from exc

    async def execute(self, state: WorkflowState, run: LiveRun) -> None:
        """Run the workflow's DAG to its end and record it (WorkflowFinished, WorkflowFailed,
        or WorkflowCanceled when ``run`` was cancelled); then close the run.

        A store error lets go of the workflow (it reports RESUMABLE), never raises: what
        was queued is written (or refused), the workflow is read afresh from the store, and
        only then is the run closed, so that nobody resumes it meanwhile (they attach to
        this run and hear how it ended).
        """
        wid = state.workflow_id
        self._lost.pop(wid, None)
        let_go = False
        try:
            if run.lost is not None:  # flush_start failed before this task began
                raise run.lost
            with run.scope:
                execution = Execution(self, state, run)
                await execution.run_to_end()
                if execution.failure is None:
                    try:
                        fields = self._finished_fields(state, run)
                    except UnencodableError as unencodable:
                        info = self.error_info(unencodable)
                        execution.failure = (state.output or "", unencodable, info)
                    else:
                        self.emit(state, (WorkflowFinished, fields))
                if execution.failure is not None:
                    name, cause, info = execution.failure
                    self._exceptions[wid] = cause
                    self.emit(state, (WorkflowFailed, {"error": info, "step": name}))
                await self.store.flush(wid)
            if run.lost is not None:  # the scope was cancelled by flush_start
                raise run.lost
            if run.cancel_requested and state.run_status is WorkflowStatus.RUNNING:
                self.emit(state, (WorkflowCanceled, {}))
                with anyio.CancelScope(shield=True):
                    await self.store.flush(wid)
        except Exception as exc:
            # The store failed (disk full, another engine appended to this workflow) or
            # a bug: this engine lets go of the workflow, which reports RESUMABLE.
            self._lost[wid] = cause = run.lost if run.lost is not None else _why_lost(exc)
            if run.lost is None and self.store.shared and isinstance(cause, SequenceConflictError):
                # (a lapse of this engine's lease found it first when run.lost is set: said there)
                log.warning(
                    "workflow %r was taken over by another engine, or written by one, while this "
                    "one ran it (%s): this engine lets go of it",
                    wid,
                    cause,
                )
            # What was folded may be ahead of the store (events whose write failed, an end
            # folded but not written): a shared store is re-read at the next question, any
            # other right below, so that only what the store holds is reported (a run that
            # ended only in memory is RESUMABLE, not SUCCESSFUL). Both by sync_known.
            self._refetch.add(wid)
            let_go = True
        finally:
            state.live = False
            try:
                if let_go:
                    # The run stays in _runs until this is done, so that nobody resumes the
                    # workflow meanwhile (they attach to this run and hear how it ended).
                    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                        # events queued before the failure are written (or refused) first,
                        # so that the store and what is read back agree
                        await self.store.flush(wid)
                    if not self.store.shared:
                        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                            await self.sync_known(wid)  # else _lost keeps the cause
                    elif is_store_failure(self._lost.get(wid)):
                        # nobody took it from us: offer it to any engine's recovery
                        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                            await self.store.disown(wid, orphan=True)
            finally:
                self._runs.pop(wid, None)
                reread = self._states.get(wid)
                if reread is not None:
                    reread.live = False
                run.set_done()
                self.notify(wid)
                for listener in list(self._listeners):
                    listener.run_closed(wid)

    def _finished_fields(self, state: WorkflowState, run: LiveRun) -> dict[str, Any]:
        assert state.output is not None
        src = state.value_source(state.output)
        if src is None or src.output is not None:
            return {}
        return {
            "output": encode_value(
                run.values[src.name],
                allow_pickle=self.allow_pickle,
                what=f"the output of workflow {state.workflow_id!r}",
            )
        }

    async def settle(self, workflow_id: str) -> None:
        """Wait for a run whose end is folded but maybe not yet durable to finish recording."""
        run = self._runs.get(workflow_id)
        state = self._states.get(workflow_id)
        if run is not None and state is not None and state.run_status is not WorkflowStatus.RUNNING:
            with anyio.CancelScope(shield=True):
                await run.wait_done()

    # -- steps -----------------------------------------------------------------------------------

    def error_info(self, exc: BaseException) -> ErrorInfo:
        """The recorded form of a step's exception."""
        return error_info(exc, allow_pickle=self.allow_pickle)

    # -- outcomes --------------------------------------------------------------------------------

    def output_value(self, state: WorkflowState) -> Any:
        """The value of a SUCCESSFUL workflow (None for an actor never called)."""
        if state.output is None:  # an actor with no writer call yet
            return None
        src = state.value_source(state.output)
        if src is not None and src.output is not None:
            return decode_value(src.output, allow_pickle=self.allow_pickle)
        if state.final_output is not None:
            return decode_value(state.final_output, allow_pickle=self.allow_pickle)
        raise WorkflowExecutionError(state.workflow_id, None, "its output was not recorded")

    def step_value(self, state: WorkflowState, name: str) -> tuple[bool, Any]:
        """``(True, value)`` once step ``name``'s value is known (recorded, or kept by the
        live run when not checkpointed), else ``(False, None)``."""
        src = state.value_source(name)
        if src is None:
            return False, None
        if src.output is not None:
            return True, decode_value(src.output, allow_pickle=self.allow_pickle)
        run = self._runs.get(state.workflow_id)
        if run is not None and src.name in run.values:
            return True, run.values[src.name]
        return False, None

    def failure(self, state: WorkflowState, step: StepState | None) -> WorkflowExecutionError:
        """The error ``run`` raises for the failed workflow (or failed ``step``), with the
        step's exception as ``__cause__`` (the live one when it failed in this process)."""
        wid = state.workflow_id
        info = step.error if step is not None else state.error
        where = step.name if step is not None else state.failed_step
        cause = self._exceptions.get(wid) if (step is None or where == state.failed_step) else None
        if cause is None and info is not None:
            cause = exception_from_info(info, allow_pickle=self.allow_pickle)
        message = f"{info.type.rpartition(':')[2]}: {info.message}" if info is not None else ""
        error = WorkflowExecutionError(wid, where, message)
        error.__cause__ = cause
        return error

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle on the workflow, served by the public engine."""
        return WorkflowHandle(workflow_id, self.owner)


def is_store_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the store failing to write (not another engine's append)."""
    return isinstance(exc, StoreError) and not isinstance(exc, SequenceConflictError)


def _why_lost(exc: Exception) -> Exception:
    """What a run that let go of its workflow reports: from concurrent steps' errors, a
    store failure if there is one (several steps may hit the same full disk)."""
    while isinstance(exc, ExceptionGroup):
        failed, _ = exc.split(is_store_failure)
        if failed is not None:
            exc = failed.exceptions[0]
        elif len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        else:
            break
    return exc
