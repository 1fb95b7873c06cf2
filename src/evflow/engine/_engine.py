"""``evflow.Engine``: the engine's lifecycle and the section 3 API, built on the core."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import anyio

from .. import _context
from .._errors import (
    SequenceConflictError,
    StoreError,
    WorkflowCancellationError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowRunningError,
    WorkflowTimeoutError,
)
from .._events import FORMAT_VERSION, StepSpec, WorkflowCanceled, WorkflowStarted
from .._handle import WorkflowHandle
from .._liveness import is_left_running
from .._projection import StepStatus, WorkflowState, WorkflowStatus
from .._step import Node, validate_metadata, validate_workflow_id
from ..stores import Store
from ..stores._open import open_store
from ._core import EngineCore, is_store_failure
from ._dags import record_dag
from ._history import fork_workflow, prune_workflows
from ._kinds import open_services
from ._messages import MailboxService, send
from ._published import get_event
from ._queues import Queue, QueueRunner, deadline_after
from ._recovery import OwnershipService, scan_interval

__all__ = ["Engine", "StatusFilter", "current_engine", "default_engine"]

log = logging.getLogger("evflow.recovery")

S = TypeVar("S")

StatusFilter = WorkflowStatus | str | Iterable[WorkflowStatus | str] | None

#: While another engine cancels a workflow at this one's request, ask it again this often.
_REMOTE_CANCEL_RECHECK = 0.5
#: A wait for a PENDING workflow on a shared store looks again without a change this often.
_PENDING_RECHECK = 15.0


class Engine:
    """The workflow engine: ``async with evflow.Engine(storage) as engine: ...``.

    ``storage``: a path or ``file://`` URL (embedded file log, the default),
    ``memory://``, ``postgresql://...``, a ``Store``, or None for ``$EVFLOW_STORAGE``
    else ``./.evflow``. ``durability="strict"`` (default) makes each step's output durable
    (fsync, group-committed) before anything depending on it runs; ``"relaxed"`` skips the
    fsync. ``allow_pickle=False`` refuses values msgpack cannot round-trip and treats a
    log as untrusted data: nothing is unpickled and no module a log names is imported.
    ``max_running_workflows`` caps the workflows this engine runs at once (more
    ``run_async`` calls are recorded PENDING and start in order); ``max_pending_workflows``
    caps those waiting (``QueueFullError`` beyond it, nothing written).

    ``recover=True`` resumes the store's RESUMABLE workflows on open and, on a shared
    store (PostgreSQL), keeps taking over the workflows of engines that died, each by one
    live engine, within ``recovery_interval`` seconds of the death (docs/scale-out.md).
    ``engine_id`` names this engine in the log and in ``get_metadata`` (default: host,
    pid and a random part). ``queues``: start the pending workflows of these queues only
    (default: every declared queue); it still enqueues to any.

    Entering opens the store, recovers state from the log and makes this the current
    engine; leaving interrupts running workflows (they report RESUMABLE) and closes it.
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] | Store | None = None,
        *,
        durability: Literal["strict", "relaxed"] = "strict",
        allow_pickle: bool = True,
        max_running_workflows: int | None = None,
        max_pending_workflows: int | None = None,
        recover: bool = False,
        recovery_interval: float = 5.0,
        engine_id: str | None = None,
        queues: Iterable[Queue] | None = None,
    ) -> None:
        if durability not in ("strict", "relaxed"):
            raise ValueError(f"durability must be 'strict' or 'relaxed', not {durability!r}")
        if not isinstance(recover, bool):
            raise TypeError(f"recover must be True or False, not {recover!r}")
        if isinstance(recovery_interval, bool) or not isinstance(recovery_interval, (int, float)):
            raise TypeError(f"recovery_interval must be a number of seconds, not {recovery_interval!r}")
        if not 0.5 <= recovery_interval <= 3600:
            raise ValueError(f"recovery_interval must be 0.5 to 3600 seconds, not {recovery_interval!r}")
        if engine_id is None:
            engine_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        elif not isinstance(engine_id, str):
            raise TypeError(f"engine_id must be a str, not {type(engine_id).__name__}")
        elif not engine_id or len(engine_id) > 200 or not engine_id.isprintable():
            raise ValueError(f"engine_id must be 1 to 200 printable characters, not {engine_id!r}")
        self.store: Store = open_store(storage, durability=durability)
        #: This engine's id, recorded as the ``owner`` of every run it starts.
        self.engine_id = engine_id
        self.store.owner_id = self.engine_id
        #: Another engine may judge this one dead after this long without a renewal: well
        #: inside ``recovery_interval``, so a death is noticed and acted on within it.
        self.store.lease = recovery_interval * 0.6
        self.recover = recover
        self.recovery_interval = float(recovery_interval)
        self.allow_pickle = allow_pickle
        self.durability = durability
        self._core = EngineCore(self, self.store, engine_id=self.engine_id, allow_pickle=allow_pickle)
        self._queues = QueueRunner(
            self._core,
            self,
            max_running=max_running_workflows,
            max_pending=max_pending_workflows,
            serve_only=queues,
        )
        self._context_token: object = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the engine is between enter and exit."""
        return self._core.is_open

    async def __aenter__(self) -> Engine:
        if self._core.is_open:
            raise RuntimeError("this engine is already open")
        await self._core.open()
        if self._queues.wanted():
            self._queues.ensure_started()
        tg = self._core.require_open()
        if self.store.shared:  # other engines post messages for the workflows this one runs
            tg.start_soon(self._core.service(MailboxService).run, name="evflow mailbox")
            ownership = self._core.service(OwnershipService)
            tg.start_soon(ownership.serve_cancels, name="evflow remote cancels")
            tg.start_soon(ownership.serve_lapses, name="evflow lease")
        try:
            if self.recover:  # the RESUMABLE workflows run again before the block begins
                if self.store.shared:
                    await ownership.recover_once(self._take_over)
                    scan = scan_interval(self.recovery_interval)
                    tg.start_soon(ownership.recover, self._take_over, scan, name="evflow recovery")
                else:
                    for wid, _handle in await self.resume_all():
                        log.info("resumed workflow %r", wid)
        except BaseException:
            try:
                await self._core.close()
            finally:
                self._queues.stopped()
            raise
        self._context_token = _context.set_current_engine(self)
        _context.open_engines.append(self)
        for service in open_services():  # schedules
            self._core.service(service).engine_opened(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Interrupt running workflows (they become RESUMABLE) and close the store."""
        if not self._core.is_open:
            return
        if self in _context.open_engines:
            _context.open_engines.remove(self)
        _context.reset_current_engine(self._context_token)
        try:
            await self._core.close()
        finally:
            self._queues.stopped()

    @property
    def loop_token(self) -> Any:
        """The event loop this engine runs on (for calls from step threads)."""
        return self._core.loop_token

    def in_event_loop_thread(self) -> bool:
        """Whether the caller runs on this engine's event loop thread."""
        return self._core.in_event_loop_thread()

    def service(self, cls: Callable[[EngineCore], S]) -> S:
        """This engine's instance of the service ``cls`` (made on first use with the core)."""
        return self._core.service(cls)

    def _state(self, workflow_id: str) -> WorkflowState:
        return self._core.state(workflow_id)

    # -- metadata ----------------------------------------------------------------------------

    def attach_metadata_nowait(self, workflow_id: str, step: str | None, metadata: dict[str, Any]) -> None:
        """Merge validated user metadata into a running step (or the workflow)."""
        self._core.attach_metadata_nowait(workflow_id, step, metadata)

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        node: Node,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any:
        """Run a DAG as a workflow to the end and return its output (see ``Node.run``)."""
        handle = await self.run_async(node, workflow_id, metadata=metadata, timeout=timeout)
        return await handle.result()

    async def run_async(
        self,
        node: Node,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle:
        """Start a DAG as a workflow; return its handle once it is durably recorded.

        An id that exists never starts a second execution: a running workflow is attached
        to, a SUCCESSFUL one gives its stored output, any other is resumed. Raises
        ``WorkflowExecutionError`` (the ``StoreError`` as ``__cause__``) if the store
        cannot record the start. ``timeout``: seconds from now to the workflow's deadline
        (recorded; when it passes the workflow is canceled, ``WorkflowTimeoutError``). With
        ``max_running_workflows`` reached the workflow is recorded PENDING instead.
        """
        if not isinstance(node, Node):
            raise TypeError(f"run_async needs a node from step.step(...), not {type(node).__name__}")
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else uuid.uuid4().hex
        user_metadata = validate_metadata(metadata, f"workflow {wid!r}")
        deadline = deadline_after(timeout)
        core = self._core
        core.require_open()
        if deadline is not None:
            self._queues.ensure_started()
        if self._queues.must_wait():
            return await self._queues.submit(None, node, wid, metadata=metadata, deadline=deadline)
        if self.store.shared:
            async with core.claiming(wid):
                # A new id is appended at once (its seq 1 is refused if it exists: then read
                # it and attach or resume); one this engine has seen is read first.
                if core.knows(wid) and await core.sync_known(wid):
                    return await self._resume_locked(wid)
                specs, output = record_dag(None, node, allow_pickle=self.allow_pickle)
                first = self._first_event(wid, output, specs, user_metadata, deadline)
                try:
                    state = await core.append_then_fold(None, first)
                except StoreError as exc:  # whether it landed is unknown: read it next time
                    raise core.store_failure(wid, exc) from exc
                if state is None:  # another engine created it meanwhile: read it, attach
                    await core.sync_known(wid)
                    return await self._resume_locked(wid)
                core.start_run(state)
                return core.handle(wid)
        if core.knows(wid):
            return await self.resume_async(wid)
        specs, output = record_dag(None, node, allow_pickle=self.allow_pickle)
        try:
            state = core.create(self._first_event(wid, output, specs, user_metadata, deadline))
        except StoreError as exc:  # nothing was queued: the workflow does not exist
            raise core.store_failure(wid, exc) from exc
        core.start_run(state)
        await core.flush_start(wid)
        return core.handle(wid)

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
    ) -> WorkflowHandle:
        """Record the DAG as a PENDING workflow of ``queue`` (see ``Queue.enqueue``)."""
        if not isinstance(queue, Queue):
            raise TypeError(f"enqueue needs an evflow.Queue, not {type(queue).__name__}")
        return await self._queues.submit(
            queue,
            node,
            workflow_id,
            metadata=metadata,
            priority=priority,
            dedup_id=dedup_id,
            deadline=deadline_after(timeout),
        )

    def _first_event(
        self,
        wid: str,
        output: str,
        specs: list[StepSpec],
        user_metadata: dict[str, Any],
        deadline: float | None = None,
    ) -> WorkflowStarted:
        return WorkflowStarted(
            seq=1,
            time=time.time(),
            workflow_id=wid,
            output=output,
            steps=specs,
            user_metadata=user_metadata,
            owner=self.engine_id,
            version=FORMAT_VERSION,
            deadline=deadline,
        )

    # -- queries and management -------------------------------------------------------------

    async def get_status(self, workflow_id: str) -> WorkflowStatus:
        """The workflow's status now; raises ``WorkflowNotFoundError``."""
        core = self._core
        if core.must_read(workflow_id):
            await core.sync_known(workflow_id)
        return core.state(workflow_id).status

    async def get_metadata(self, workflow_id: str, name: str | None = None) -> dict[str, Any]:
        """Metadata of the workflow, or of its step ``name`` (served from memory)."""
        core = self._core
        if core.must_read(workflow_id):
            await core.sync_known(workflow_id)
        return core.state(workflow_id).metadata(name)

    async def list_all(self, status_filter: StatusFilter = None) -> list[tuple[str, WorkflowStatus]]:
        """``[(workflow_id, status)]``, optionally only those with the given status(es)."""
        wanted = _status_set(status_filter)
        core = self._core
        if self.store.shared:
            for wid in await self.store.list_workflows():
                if core.run_of(wid) is None:
                    await core.sync_known(wid)
        out = []
        for wid, state in core.states():
            status = state.status
            if wanted is None or status in wanted:
                out.append((wid, status))
        return out

    async def get_output(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any:
        """Wait for the workflow (or its step ``name``) to end and return its value.

        Raises as ``run`` does; a RESUMABLE workflow raises ``WorkflowNotRunningError``,
        unless this engine's run of it ended because the store failed:
        ``WorkflowExecutionError`` with the ``StoreError`` as ``__cause__``. ``timeout``:
        seconds to wait at most, then ``TimeoutError`` (the workflow goes on).
        """
        if timeout is None:
            return await self._wait_output(workflow_id, name)
        with anyio.fail_after(timeout):
            return await self._wait_output(workflow_id, name)

    async def _wait_output(self, workflow_id: str, name: str | None) -> Any:
        core = self._core
        while True:
            state = await core.sync(workflow_id)
            if name is not None:
                step = state.step(name)
                known, value = core.step_value(state, name)
                if known:
                    return value
                if step.status is StepStatus.FAILED:
                    raise core.failure(state, step)
            status = state.status
            run = core.run_of(workflow_id)
            if status is not WorkflowStatus.RUNNING and run is not None:
                # the end is folded, or the run is letting go of the workflow: answer once
                # the run is done (its end durable, or the store re-read)
                with anyio.CancelScope(shield=True):
                    await run.wait_done()
                continue
            if status is WorkflowStatus.SUCCESSFUL:
                if name is None:
                    return core.output_value(state)
                raise WorkflowExecutionError(
                    workflow_id, name, "the step's output was not checkpointed (checkpoint=False)"
                )
            if status is WorkflowStatus.FAILED:
                raise core.failure(state, None)
            if status is WorkflowStatus.CANCELED:
                if state.timed_out:
                    assert state.deadline is not None
                    raise WorkflowTimeoutError(workflow_id, state.deadline)
                raise WorkflowCancellationError(workflow_id)
            if status is WorkflowStatus.RESUMABLE:
                lost = core.lost_cause(workflow_id)
                if isinstance(lost, StoreError) and is_store_failure(lost):
                    # this engine's run of it ended because the store failed
                    raise core.store_failure(workflow_id, lost) from lost
                raise WorkflowNotRunningError(workflow_id, status.value) from lost
            if self.store.shared and run is None:
                # run by another engine: its events arrive through the store (NOTIFY). A
                # running one is looked at every second too (its engine may die, which
                # appends nothing). A PENDING one has no owner to watch: the queue service
                # follows it through the change feed and reads its claim, by whichever
                # engine, which wakes this wait; so the safety net can be slack (10,000
                # queued waiters would otherwise read the store 10,000 times a second).
                if status is WorkflowStatus.PENDING:
                    self._queues.ensure_started()
                    with anyio.move_on_after(_PENDING_RECHECK):
                        await core.wait_change(workflow_id)
                else:
                    with anyio.move_on_after(1.0):
                        await self.store.wait_for_events(workflow_id, state.last_seq)
            else:
                await core.wait_change(workflow_id)

    async def get_event(self, workflow_id: str, key: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the contract's name; None at the timeout
        """The value the workflow last published under ``key`` (``evflow.set_event``);
        waits for one for at most ``timeout`` seconds, then returns None."""
        return await get_event(self._core, workflow_id, key, timeout)

    async def send(
        self, workflow_id: str, topic: str, payload: Any, *, idempotency_key: str | None = None
    ) -> None:
        """Record a message on ``topic`` in the workflow's log, durably, before returning;
        the oldest unconsumed one of its topic is the value of the next
        ``evflow.wait_for_event(topic)`` step.

        The workflow may be running (here or in another engine on a shared store), waiting
        or RESUMABLE. A message with an ``idempotency_key`` the workflow already received
        is not recorded again. The payload is encoded like a step's arguments and the
        topic checked (``TypeError``/``ValueError``/``UnencodableError``) before anything
        is written. Raises ``WorkflowNotFoundError``, and ``WorkflowNotRunningError`` for
        a finished workflow (SUCCESSFUL, FAILED, CANCELED; an actor only when CANCELED).
        """
        self._core.require_open()
        await send(self._core, workflow_id, topic, payload, idempotency_key)

    async def resume(self, workflow_id: str) -> Any:
        """Re-run what has no checkpointed output and return the output (see ``resume_async``)."""
        handle = await self.resume_async(workflow_id)
        return await handle.result()

    async def resume_async(self, workflow_id: str) -> WorkflowHandle:
        """Resume a FAILED, RESUMABLE or CANCELED workflow; return its handle.

        A SUCCESSFUL one is left as it is (its handle gives the stored output), a running
        one is attached to, never run twice.
        """
        core = self._core
        core.require_open()
        if self.store.shared:
            async with core.claiming(workflow_id):
                await core.sync_known(workflow_id)
                return await self._resume_locked(workflow_id)
        await core.sync(workflow_id)  # re-reads a workflow whose last write failed
        return await self._resume_locked(workflow_id)

    async def _take_over(self, workflow_id: str) -> bool:
        """Run a workflow the store's owner index just gave this engine (recovery): its
        previous owner is gone or let go of it. Whether a run started here."""
        core = self._core
        async with core.claiming(workflow_id):
            if core.run_of(workflow_id) is not None:
                return False
            if not await core.sync_known(workflow_id):
                return False
            state = core.find_state(workflow_id)
            if state is None or not is_left_running(state) or state.status is WorkflowStatus.CANCELED:
                # finished, pending or broken meanwhile: nobody is to run it
                await self.store.disown(workflow_id, orphan=False)
                return False
            state.live = False  # the index says its owner is gone, whatever it last looked like
            await self._resume_locked(workflow_id)
            return core.run_of(workflow_id) is not None

    async def _resume_locked(self, workflow_id: str) -> WorkflowHandle:
        core = self._core
        await core.settle(workflow_id)
        state = core.state(workflow_id)
        service = core.workflow_service(state.kind)
        if service is not None:  # an actor may have calls waiting even when SUCCESSFUL in the log
            return await service.resume(state)
        if core.run_of(workflow_id) is not None or state.status in (
            WorkflowStatus.SUCCESSFUL,
            WorkflowStatus.RUNNING,
            WorkflowStatus.PENDING,
        ):
            # running here or, on a shared store, in another live engine: attach to it
            # (a PENDING one starts when its queue has room)
            return core.handle(workflow_id)
        if self.store.shared:
            claim = WorkflowStarted(
                seq=state.last_seq + 1,
                time=time.time(),
                workflow_id=workflow_id,
                resume=True,
                owner=self.engine_id,
            )
            try:
                claimed = await core.append_then_fold(state, claim)
            except StoreError as exc:  # whether it landed is unknown: read it next time
                core.record_lost(workflow_id, exc)
                raise core.store_failure(workflow_id, exc) from exc
            if claimed is None:
                return core.handle(workflow_id)  # another engine claimed it first: attach to that
        else:
            try:
                core.emit(state, (WorkflowStarted, {"workflow_id": workflow_id, "resume": True}))
            except StoreError as exc:  # nothing was queued nor folded
                core.record_lost(workflow_id, exc)
                raise core.store_failure(workflow_id, exc) from exc
        core.start_run(state)
        await core.flush_start(workflow_id)
        if self.store.shared:  # mail its last owner did not move before it went away
            with contextlib.suppress(StoreError):  # else the mailbox service moves it later
                await core.service(MailboxService).drain([workflow_id])
        return core.handle(workflow_id)

    async def resume_all(self, include_failed: bool = False) -> list[tuple[str, WorkflowHandle]]:
        """Resume every RESUMABLE (and, if asked, FAILED) workflow; never CANCELED ones."""
        wanted = {WorkflowStatus.RESUMABLE} | ({WorkflowStatus.FAILED} if include_failed else set())
        out = []
        for wid, _status in await self.list_all(wanted):
            out.append((wid, await self.resume_async(wid)))
        return out

    async def cancel(self, workflow_id: str) -> None:
        """Stop the workflow's running steps and record it CANCELED.

        RUNNING, RESUMABLE and FAILED become CANCELED; SUCCESSFUL and CANCELED stay.
        """
        core = self._core
        state = await core.sync(workflow_id)
        run = core.run_of(workflow_id)
        if run is not None:
            run.cancel_requested = True
            run.scope.cancel()
            with anyio.CancelScope(shield=True):
                await run.wait_done()
            state = await core.sync(workflow_id)  # the run may have let go of it
        while state.run_status not in (WorkflowStatus.SUCCESSFUL, WorkflowStatus.CANCELED):
            if (
                self.store.shared
                and state.live
                and core.run_of(workflow_id) is None
                and await self.store.request_cancel(workflow_id)
            ):
                # Another live engine runs it: it was asked to cancel its run now (it
                # records WorkflowCanceled); look again until it has, or it went away.
                with anyio.move_on_after(_REMOTE_CANCEL_RECHECK):
                    await self.store.wait_for_events(workflow_id, state.last_seq)
                state = await core.sync(workflow_id)
                continue
            # On a shared store this may still be another engine's running workflow (it
            # appended a claim meanwhile): it lets go at its next append, which fails.
            try:
                core.emit(state, (WorkflowCanceled, {}))
                await self.store.flush(workflow_id)
                return
            except SequenceConflictError:
                # That engine appended first (a StepStarted, its end, a resume's claim):
                # read what the log says now and judge again. Each conflict means the log
                # grew, so this ends once the running engine's next append is refused.
                core.refetch(workflow_id)
            except StoreError:
                core.refetch(workflow_id)  # what was folded may not be in the store
                raise
            state = await core.sync(workflow_id)

    async def delete(self, workflow_id: str) -> None:
        """Remove the workflow and its log; its id can then be used afresh.

        Raises ``WorkflowRunningError`` while it runs, ``WorkflowNotFoundError`` if unknown.
        """
        core = self._core
        validate_workflow_id(workflow_id)
        await core.settle(workflow_id)
        if core.run_of(workflow_id) is not None:
            raise WorkflowRunningError(workflow_id, "cancel it before deleting it")
        if self.store.shared:
            await core.sync_known(workflow_id)
            state = core.find_state(workflow_id)
            if state is not None and state.status is WorkflowStatus.RUNNING:
                raise WorkflowRunningError(workflow_id, "another engine runs it; cancel it first")
        if not core.knows(workflow_id):
            raise WorkflowNotFoundError(workflow_id)
        await self.store.delete(workflow_id)
        core.forget(workflow_id)

    # -- history (SPEC section 11, docs/history.md) --------------------------------------------

    async def fork(
        self,
        workflow_id: str,
        new_workflow_id: str | None = None,
        *,
        from_step: str | None = None,
        as_of: int | None = None,
    ) -> WorkflowHandle:
        """Start a new workflow from the recorded DAG of ``workflow_id`` and the outputs its
        steps checkpointed before ``from_step`` started (or up to event ``as_of``); those
        never run again, the rest runs on the current code. Returns the fork's handle.

        The source is unchanged; ``get_metadata(fork)["forked_from"]`` names it. Raises
        ``WorkflowNotFoundError``, ``StepNotFoundError``, or ``ValueError`` (``as_of``
        outside the log, a virtual actor, an existing ``new_workflow_id``) before writing.
        """
        return await fork_workflow(self._core, workflow_id, new_workflow_id, from_step=from_step, as_of=as_of)

    async def prune(
        self,
        older_than: float,
        statuses: Iterable[WorkflowStatus | str] | WorkflowStatus | str = ("SUCCESSFUL",),
    ) -> int:
        """Delete the finished workflows with one of ``statuses`` (SUCCESSFUL, FAILED,
        CANCELED) that ended more than ``older_than`` seconds ago; return how many.

        Never a running, resumable or pending workflow, nor a virtual actor; each is removed
        as ``delete`` removes it (durably, whole or not at all).
        """
        return len(await prune_workflows(self._core, self.delete, older_than=older_than, statuses=statuses))

    async def get_actor(self, actor_id: str) -> Any:
        """A handle on an existing virtual actor; raises ``WorkflowNotFoundError``, or
        ``TypeError`` when the workflow is not an actor."""
        state = self._core.state(actor_id)
        service = self._core.workflow_service("actor")
        if state.kind != "actor" or service is None:
            raise TypeError(f"workflow {actor_id!r} is not a virtual actor")
        return await service.open_handle(actor_id)


def _status_set(status_filter: StatusFilter) -> set[WorkflowStatus] | None:
    if status_filter is None:
        return None
    if isinstance(status_filter, str):
        items: Iterable[WorkflowStatus | str] = [status_filter]
    else:
        items = status_filter
    out = set()
    for item in items:
        try:
            out.add(WorkflowStatus(item.upper() if isinstance(item, str) else item))
        except ValueError:
            raise ValueError(
                f"unknown status {item!r}; expected one of {[s.value for s in WorkflowStatus]}"
            ) from None
    return out


def current_engine() -> Engine:
    """The engine of the enclosing ``async with Engine(...)`` block (see
    ``_context.current_runner``); raises ``NoEngineError`` when there is none."""
    engine = _context.current_runner()
    return engine if type(engine) is Engine else _checked(engine)


def _checked(engine: object) -> Engine:
    assert isinstance(engine, Engine)  # only an Engine installs itself as current
    return engine


@contextmanager
def default_engine(engine: Engine) -> Iterator[Engine]:
    """Make ``engine`` the default engine while the block runs.

    Module-level calls whose context carries no engine of its own (the request handlers of
    a web app: a server runs them in tasks that never saw the block that opened the engine)
    resolve to it, even when other engines are open too. The enclosing ``async with
    Engine(...)`` block of a caller still comes first. Nested defaults: the innermost wins.
    """
    _context.default_engines.append(engine)
    try:
        yield engine
    finally:
        _context.default_engines.remove(engine)
