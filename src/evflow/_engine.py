"""The engine: records DAGs, runs steps, appends events, owns every task.

Only the engine runs user code. Every state change goes through ``_emit``: the events
are queued in the store (in order, with their sequence numbers) and folded into the
in-memory projection by ``_projection.apply``, the one place status is computed.
Every task lives in the engine's task group; cancellation uses cancel scopes.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio

from . import _context
from ._codec import (
    UnencodableError,
    decode_value,
    encode_value,
    error_info,
    exception_from_info,
)
from ._errors import (
    CorruptLogError,
    SequenceConflictError,
    StoreError,
    WorkflowCancellationError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowRunningError,
)
from ._events import (
    FORMAT_VERSION,
    ErrorInfo,
    Event,
    StepFailed,
    StepFinished,
    StepOptions,
    StepSpec,
    StepStarted,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from ._projection import StepState, StepStatus, WorkflowState, WorkflowStatus, allocate_names, apply, replay
from ._signal import Signal, new_signal
from ._step import Node, iter_nodes, resolve_step_function, validate_metadata, validate_workflow_id
from ._threads import run_in_daemon_thread
from .stores import Store
from .stores._open import open_store

if TYPE_CHECKING:
    from ._api import WorkflowHandle

__all__ = ["MAX_RETRY_DELAY", "Engine"]

#: Cap, in seconds, of the doubling delay between retries.
MAX_RETRY_DELAY = 60.0

StatusFilter = WorkflowStatus | str | Iterable[WorkflowStatus | str] | None

_EXECUTE_TASK_NAME = "evflow workflow"


class _Run:
    """One live execution of a workflow in this engine."""

    __slots__ = ("_done", "cancel_requested", "finished", "lost", "scope", "values", "workflow_id")

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.scope = anyio.CancelScope()
        self.cancel_requested = False
        #: Why the run must let go of the workflow at once (its start could not be written).
        self.lost: Exception | None = None
        self.finished = False
        # Made only when someone waits: thousands of runs in flight stay small.
        self._done: Signal | None = None
        #: Values of steps run in this execution whose output is not checkpointed.
        self.values: dict[str, Any] = {}

    async def wait_done(self) -> None:
        """Return once the run has ended and recorded its end."""
        if not self.finished:
            if self._done is None:
                self._done = new_signal()
            await self._done.wait()

    def set_done(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()


class _Execution:
    """Schedules one execution of a workflow's DAG: demand-driven and iterative (no
    recursion, so a 500-deep DAG or a 10,000-long continuation chain is no problem).

    Steps run in the workflow's ``_execute`` task, one after the other, while only one is
    runnable at a time (a single step, a chain); ``tg``, a task group of that task, is
    opened only while several steps may run at once, for the time they do.
    """

    __slots__ = (
        "cont_parents",
        "demanded",
        "dependents",
        "engine",
        "failure",
        "run",
        "state",
        "tg",
        "waiting",
    )

    def __init__(self, engine: Engine, state: WorkflowState, run: _Run) -> None:
        self.engine = engine
        self.state = state
        self.run = run
        self.tg: anyio.abc.TaskGroup | None = None
        self.demanded: set[str] = set()
        self.waiting: dict[str, int] = {}
        self.dependents: dict[str, list[str]] = {}
        self.cont_parents: dict[str, list[str]] = {}
        self.failure: tuple[str, BaseException, ErrorInfo] | None = None

    def value_known(self, name: str) -> bool:
        src = self.state.value_source(name)
        return src is not None and (src.output is not None or src.name in self.run.values)

    def value(self, name: str) -> Any:
        src = self.state.value_source(name)
        assert src is not None
        if src.output is not None:
            return decode_value(src.output, allow_pickle=self.engine.allow_pickle)
        return self.run.values[src.name]

    def demand(self, root: str) -> list[str]:
        """Make sure step ``root``'s value gets known; return the steps to start now."""
        steps = self.state.steps
        runnable: list[str] = []
        work = [root]
        while work:
            name = work.pop()
            if name in self.demanded:
                continue
            self.demanded.add(name)
            if self.value_known(name):
                continue
            step = steps[name]
            if step.finished and step.continuation_output is not None:
                self.cont_parents.setdefault(step.continuation_output, []).append(name)
                work.append(step.continuation_output)
                continue
            missing = 0
            for dep in step.spec.deps:
                if not self.value_known(dep):
                    missing += 1
                    self.dependents.setdefault(dep, []).append(name)
                    work.append(dep)
            if missing:
                self.waiting[name] = missing
            else:
                runnable.append(name)
        return runnable

    async def run_concurrently(self, names: list[str]) -> None:
        """Run steps ``names`` and all the steps they make runnable, in a task group of
        this task; return when none is left (or one failed, which cancels the others)."""
        try:
            async with anyio.create_task_group() as self.tg:
                self.start(names[1:])
                await self.run_chain(names[0])
        finally:
            self.tg = None

    async def run_chain(self, name: str) -> None:
        """Run step ``name``, then go on in this same task with the first step it made
        runnable (a chain needs no new task per step); others get tasks of their own."""
        next_name: str | None = name
        while next_name is not None:
            runnable = await self.engine._run_step(self, next_name)
            if not runnable:
                return
            self.start(runnable[1:])
            next_name = runnable[0]

    def start(self, names: list[str]) -> None:
        if names:
            assert self.tg is not None
            for name in names:
                self.tg.start_soon(self.run_chain, name)

    def finished(self, name: str) -> list[str]:
        """Step ``name`` recorded its StepFinished; return the steps to start now."""
        step = self.state.steps[name]
        child = step.continuation_output
        if child is not None and not self.value_known(name):
            self.cont_parents.setdefault(child, []).append(name)
            return self.demand(child)
        return self.ready(name)

    def ready(self, root: str) -> list[str]:
        runnable: list[str] = []
        work = [root]
        while work:
            name = work.pop()
            work.extend(self.cont_parents.pop(name, ()))
            for dependent in self.dependents.pop(name, ()):
                left = self.waiting[dependent] - 1
                if left:
                    self.waiting[dependent] = left
                else:
                    del self.waiting[dependent]
                    runnable.append(dependent)
        return runnable

    def fail(self, name: str, exc: BaseException, info: ErrorInfo) -> None:
        if self.failure is None:
            self.failure = (name, exc, info)
        if self.tg is not None:  # else no other step runs
            self.tg.cancel_scope.cancel()


class Engine:
    """The workflow engine: ``async with evflow.Engine(storage) as engine: ...``.

    ``storage``: a path or ``file://`` URL (embedded file log, the default),
    ``memory://``, ``postgresql://...``, a ``Store``, or None for ``$EVFLOW_STORAGE``
    else ``./.evflow``. ``durability="strict"`` (default) makes each step's output durable
    (fsync, group-committed) before anything depending on it runs; ``"relaxed"`` skips the
    fsync. ``allow_pickle=False`` refuses values msgpack cannot round-trip.

    Entering opens the store, recovers state from the log and makes this the current
    engine; leaving interrupts running workflows (they report RESUMABLE) and closes it.
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] | Store | None = None,
        *,
        durability: Literal["strict", "relaxed"] = "strict",
        allow_pickle: bool = True,
    ) -> None:
        if durability not in ("strict", "relaxed"):
            raise ValueError(f"durability must be 'strict' or 'relaxed', not {durability!r}")
        self.store: Store = open_store(storage, durability=durability)
        #: This engine's id, recorded as the ``owner`` of every run it starts.
        self.engine_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.store.owner_id = self.engine_id
        self.allow_pickle = allow_pickle
        self.durability = durability
        self._states: dict[str, WorkflowState] = {}
        self._broken: dict[str, Exception] = {}
        self._runs: dict[str, _Run] = {}
        self._changed: dict[str, Signal] = {}
        self._exceptions: dict[str, BaseException] = {}
        #: Why this engine let go of a workflow mid-run (a store error), by id.
        self._lost: dict[str, Exception] = {}
        #: Workflows whose in-memory state may hold events the shared store refused.
        self._stale: set[str] = set()
        self._claim_lock = anyio.Lock()
        self._is_async: dict[str, bool] = {}
        self._wtg: anyio.abc.TaskGroup | None = None
        self._context_token: object = None
        self._open = False
        self._service: Any = None
        self._stop: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._service_error: BaseException | None = None
        self._loop_token: Any = None
        self._loop_thread = 0
        self._actors: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the engine is between enter and exit."""
        return self._open

    async def __aenter__(self) -> Engine:
        if self._open:
            raise RuntimeError("this engine is already open")
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
        self._open = True
        self._context_token = _context.set_current_engine(self)
        _context.open_engines.append(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Interrupt running workflows (they become RESUMABLE) and close the store."""
        if not self._open:
            return
        self._open = False
        if self in _context.open_engines:
            _context.open_engines.remove(self)
        _context.reset_current_engine(self._context_token)
        assert self._stop is not None and self._stopped is not None
        self._stop.set()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()
        for wid in list(self._changed):
            self._notify(wid)
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

            self._service = asyncio.get_running_loop().create_task(self._serve(ready))

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

    def _require_open(self) -> anyio.abc.TaskGroup:
        if not self._open or self._wtg is None:
            raise RuntimeError("the engine is not open; use `async with evflow.Engine(...)`")
        return self._wtg

    # -- events ----------------------------------------------------------------------------

    def _emit(self, state: WorkflowState, *events: tuple[type[Event], dict[str, Any]]) -> None:
        """Queue events in the store and fold them into the projection (never blocks)."""
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
        self._notify(state.workflow_id)

    def _notify(self, workflow_id: str) -> None:
        event = self._changed.pop(workflow_id, None)
        if event is not None:
            event.set()

    async def _wait_change(self, workflow_id: str) -> None:
        event = self._changed.get(workflow_id)
        if event is None:
            event = self._changed[workflow_id] = new_signal()
        await event.wait()

    def _state(self, workflow_id: str) -> WorkflowState:
        validate_workflow_id(workflow_id)
        state = self._states.get(workflow_id)
        if state is None:
            broken = self._broken.get(workflow_id)
            if broken is not None:
                raise broken
            raise WorkflowNotFoundError(workflow_id)
        return state

    # -- recording DAGs ----------------------------------------------------------------------

    def _record_dag(self, state: WorkflowState | None, root: Node) -> tuple[list[StepSpec], str]:
        """Specs for the DAG under ``root``, named breadth-first from it (validates and
        encodes everything first; raises before anything is recorded)."""
        order = [root]
        seen = {id(root)}
        queue = deque([root])
        while queue:
            node = queue.popleft()
            for child in (*iter_nodes(node.args), *iter_nodes(node.kwargs)):
                if id(child) not in seen:
                    seen.add(id(child))
                    order.append(child)
                    queue.append(child)
        names = allocate_names(state, [node.function.name for node in order])
        name_of = {id(node): name for node, name in zip(order, names, strict=True)}

        def refs(value: Any) -> str | None:
            return name_of.get(id(value)) if isinstance(value, Node) else None

        specs = []
        for node, name in zip(order, names, strict=True):
            args = encode_value(
                (list(node.args), node.kwargs),
                allow_pickle=self.allow_pickle,
                refs=refs,
                what=f"the arguments of step {name!r}",
            )
            deps = list(
                dict.fromkeys(name_of[id(c)] for c in (*iter_nodes(node.args), *iter_nodes(node.kwargs)))
            )
            specs.append(_spec(node, name, args, deps))
        return specs, names[0]

    # -- running -------------------------------------------------------------------------------

    async def run(
        self, node: Node, workflow_id: str | None = None, *, metadata: dict[str, Any] | None = None
    ) -> Any:
        """Run a DAG as a workflow to the end and return its output (see ``Node.run``)."""
        handle = await self.run_async(node, workflow_id, metadata=metadata)
        return await handle.result()

    async def run_async(
        self, node: Node, workflow_id: str | None = None, *, metadata: dict[str, Any] | None = None
    ) -> WorkflowHandle:
        """Start a DAG as a workflow; return its handle once it is durably recorded.

        An id that exists never starts a second execution: a running workflow is attached
        to, a SUCCESSFUL one gives its stored output, any other is resumed. Raises
        ``WorkflowExecutionError`` (the ``StoreError`` as ``__cause__``) if the store
        cannot record the start.
        """
        if not isinstance(node, Node):
            raise TypeError(f"run_async needs a node from step.step(...), not {type(node).__name__}")
        wid = validate_workflow_id(workflow_id) if workflow_id is not None else uuid.uuid4().hex
        user_metadata = validate_metadata(metadata, f"workflow {wid!r}")
        self._require_open()
        if self.store.shared:
            async with self._claim_lock:
                if await self._sync_known(wid):
                    return await self._resume_locked(wid)
                specs, output = self._record_dag(None, node)
                first = self._first_event(wid, output, specs, user_metadata)
                try:
                    await self.store.append(wid, [first])
                except SequenceConflictError:  # another engine created it meanwhile
                    self._stale.add(wid)
                    await self._sync_known(wid)
                    return await self._resume_locked(wid)
                except StoreError as exc:  # whether it landed is unknown: read it next time
                    self._stale.add(wid)
                    raise self._store_failure(wid, exc) from exc
                state = self._states[wid] = apply(None, first)
                self._start(state)
                return self._handle(wid)
        if wid in self._states or wid in self._broken:
            return await self.resume_async(wid)
        specs, output = self._record_dag(None, node)
        first = self._first_event(wid, output, specs, user_metadata)
        try:
            self.store.append_nowait(wid, [first])
        except StoreError as exc:  # nothing was queued: the workflow does not exist
            raise self._store_failure(wid, exc) from exc
        state = self._states[wid] = apply(None, first)
        self._start(state)
        await self._flush_start(wid)
        return self._handle(wid)

    def _first_event(
        self, wid: str, output: str, specs: list[StepSpec], user_metadata: dict[str, Any]
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
        )

    async def _flush_start(self, workflow_id: str) -> None:
        """Wait until a started run's WorkflowStarted is durable. If it cannot be written,
        the run lets go of the workflow before it raises ``WorkflowExecutionError``."""
        try:
            await self.store.flush(workflow_id)
        except StoreError as exc:
            run = self._runs.get(workflow_id)
            if run is not None:
                run.lost = exc
                run.scope.cancel()
                with anyio.CancelScope(shield=True):
                    await run.wait_done()
            raise self._store_failure(workflow_id, exc) from exc

    def _store_failure(self, workflow_id: str, exc: StoreError) -> WorkflowExecutionError:
        """The error a caller waiting for a run gets when the store failed to record it."""
        return WorkflowExecutionError(
            workflow_id,
            None,
            f"the store could not record it ({exc}); once the store works again, "
            f"evflow.resume({workflow_id!r}) continues it from what was recorded "
            "(run it again if nothing was)",
        )

    def _handle(self, workflow_id: str) -> WorkflowHandle:
        from ._api import WorkflowHandle

        return WorkflowHandle(workflow_id, self)

    def _start(self, state: WorkflowState) -> None:
        wtg = self._require_open()
        run = self._runs[state.workflow_id] = _Run(state.workflow_id)
        state.live = True
        # A constant name: anyio would otherwise build the same string anew for every task.
        wtg.start_soon(self._execute, state, run, name=_EXECUTE_TASK_NAME)

    async def _execute(self, state: WorkflowState, run: _Run) -> None:
        wid = state.workflow_id
        self._lost.pop(wid, None)
        let_go = False
        try:
            if run.lost is not None:
                raise run.lost
            with run.scope:
                execution = _Execution(self, state, run)
                assert state.output is not None
                runnable = execution.demand(state.output)
                while len(runnable) == 1:  # one step at a time: in this task, no other
                    runnable = await self._run_step(execution, runnable[0])
                if runnable:
                    await execution.run_concurrently(runnable)
                if execution.failure is None:
                    try:
                        fields = self._finished_fields(state, run)
                    except UnencodableError as unencodable:
                        info = error_info(unencodable, allow_pickle=self.allow_pickle)
                        execution.failure = (state.output or "", unencodable, info)
                    else:
                        self._emit(state, (WorkflowFinished, fields))
                if execution.failure is not None:
                    name, cause, info = execution.failure
                    self._exceptions[wid] = cause
                    self._emit(state, (WorkflowFailed, {"error": info, "step": name}))
                await self.store.flush(wid)
            if run.lost is not None:  # the scope was cancelled by _flush_start
                raise run.lost
            if run.cancel_requested and state.run_status is WorkflowStatus.RUNNING:
                self._emit(state, (WorkflowCanceled, {}))
                with anyio.CancelScope(shield=True):
                    await self.store.flush(wid)
        except Exception as exc:
            # The store failed (disk full, another engine appended to this workflow) or
            # a bug: this engine lets go of the workflow, which reports RESUMABLE.
            self._lost[wid] = run.lost if run.lost is not None else _why_lost(exc)
            # What was folded may be ahead of the store (events whose write failed, an end
            # folded but not written): a shared store is re-read at the next question, any
            # other right below, so that only what the store holds is reported (a run that
            # ended only in memory is RESUMABLE, not SUCCESSFUL). Both by _sync_known.
            self._stale.add(wid)
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
                            await self._sync_known(wid)  # else _lost keeps the cause
            finally:
                self._runs.pop(wid, None)
                reread = self._states.get(wid)
                if reread is not None:
                    reread.live = False
                run.set_done()
                self._notify(wid)

    def _finished_fields(self, state: WorkflowState, run: _Run) -> dict[str, Any]:
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

    async def _run_step(self, execution: _Execution, name: str) -> list[str]:
        state = execution.state
        spec = state.steps[name].spec
        opts = spec.options
        if opts.step_type == "ACTOR_METHOD":
            runnable: list[str] = await self._actor_support().run_step(execution, name)
            return runnable
        try:
            func = resolve_step_function(spec.func)
            args, kwargs = _substitute(
                decode_value(spec.args, allow_pickle=self.allow_pickle), execution.value
            )
        except Exception as exc:
            # The step could not even be called: its one attempt starts and fails at once.
            info = error_info(exc, allow_pickle=self.allow_pickle)
            self._emit(
                state,
                (StepStarted, {"name": name, "attempt": 1}),
                (StepFailed, {"name": name, "attempt": 1, "will_retry": False, "error": info}),
            )
            execution.fail(name, exc, info)
            return []
        is_async = self._is_async.get(spec.func)
        if is_async is None:
            is_async = self._is_async[spec.func] = inspect.iscoroutinefunction(func)
        _context.current_step.set(_context.StepContext(self, state.workflow_id, name))
        attempt = 0
        while True:
            attempt += 1
            self._emit(state, (StepStarted, {"name": name, "attempt": attempt}))
            try:
                result = await _call(func, is_async, args, kwargs, name, opts.timeout)
                if opts.catch_exceptions:
                    result = (result, None)
                fields = self._finish_step(execution, name, opts, result)
                break
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                will_retry = opts.max_retries == -1 or attempt <= opts.max_retries
                if not will_retry and opts.catch_exceptions:
                    try:
                        fields = self._finish_step(execution, name, opts, (None, exc))
                        break
                    except Exception as exc2:
                        exc = exc2
                info = error_info(exc, allow_pickle=self.allow_pickle)
                self._emit(
                    state,
                    (StepFailed, {"name": name, "attempt": attempt, "will_retry": will_retry, "error": info}),
                )
                if not will_retry:
                    execution.fail(name, exc, info)
                    return []
                delay = min(opts.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
                if delay > 0:
                    await anyio.sleep(delay)
        self._emit(state, (StepFinished, fields))
        assert state.output is not None
        source = state.value_source(state.output)
        if source is None or source.name != name:
            await self.store.flush(state.workflow_id)
        # else: the workflow's output step. Nothing runs after it: its StepFinished becomes
        # durable with the WorkflowFinished that _execute appends next, in one flush (and
        # should that flush fail, _execute re-folds the workflow from the store).
        return execution.finished(name)

    def _finish_step(
        self, execution: _Execution, name: str, opts: StepOptions, result: Any
    ) -> dict[str, Any]:
        """The StepFinished fields for a step's result (records a continuation's DAG)."""
        if isinstance(result, Node):
            specs, output = self._record_dag(execution.state, result)
            return {"name": name, "continuation": specs, "continuation_output": output}
        if not opts.checkpoint:
            execution.run.values[name] = result
            return {"name": name}
        return {
            "name": name,
            "output": encode_value(
                result, allow_pickle=self.allow_pickle, what=f"the output of step {name!r}"
            ),
        }

    # -- metadata ----------------------------------------------------------------------------

    def attach_metadata_nowait(self, workflow_id: str, step: str | None, metadata: dict[str, Any]) -> None:
        """Merge validated user metadata into a running step (or the workflow)."""
        from ._events import MetadataAttached

        state = self._state(workflow_id)
        self._emit(state, (MetadataAttached, {"metadata": metadata, "step": step}))

    # -- queries and management -------------------------------------------------------------

    async def _sync(self, workflow_id: str) -> WorkflowState:
        """The workflow's state, first brought up to date with a shared store (or with any
        store whose write of it failed)."""
        if (self.store.shared or workflow_id in self._stale) and workflow_id not in self._runs:
            await self._sync_known(workflow_id)
        return self._state(workflow_id)

    async def _sync_known(self, workflow_id: str) -> bool:
        """Read what other engines appended to the workflow (shared stores); whether it exists.

        Only the new events are read and folded, so the cost does not grow with the log.
        """
        state = self._states.get(workflow_id)
        try:
            if state is None or workflow_id in self._stale:
                events = await self.store.read(workflow_id)
                self._stale.discard(workflow_id)
                if not events:
                    self._states.pop(workflow_id, None)
                    return False
                state = self._states[workflow_id] = replay(events, live=False)
            else:
                # re-read the last known event too: none back means another engine deleted it
                events = await self.store.read(workflow_id, state.last_seq - 1)
                if not events:
                    self._states.pop(workflow_id, None)
                    return False
                for event in events:
                    if event.seq > state.last_seq:
                        apply(state, event)
        except CorruptLogError as exc:
            self._broken[workflow_id] = exc
            self._states.pop(workflow_id, None)
            return True
        except (ValueError, LookupError) as exc:
            self._broken[workflow_id] = CorruptLogError(workflow_id, 0, f"events do not fold: {exc}")
            self._states.pop(workflow_id, None)
            return True
        self._broken.pop(workflow_id, None)
        if state.run_status is WorkflowStatus.RUNNING or state.actor_calls:
            state.live = (
                workflow_id in self._runs
                if state.owner == self.engine_id
                else await self.store.owner_alive(state.owner)
            )
        return True

    async def _settle(self, workflow_id: str) -> None:
        """Wait for a run whose end is folded but maybe not yet durable to finish recording."""
        run = self._runs.get(workflow_id)
        state = self._states.get(workflow_id)
        if run is not None and state is not None and state.run_status is not WorkflowStatus.RUNNING:
            with anyio.CancelScope(shield=True):
                await run.wait_done()

    async def get_status(self, workflow_id: str) -> WorkflowStatus:
        """The workflow's status now; raises ``WorkflowNotFoundError``."""
        return (await self._sync(workflow_id)).status

    async def get_metadata(self, workflow_id: str, name: str | None = None) -> dict[str, Any]:
        """Metadata of the workflow, or of its step ``name`` (served from memory)."""
        return (await self._sync(workflow_id)).metadata(name)

    async def list_all(self, status_filter: StatusFilter = None) -> list[tuple[str, WorkflowStatus]]:
        """``[(workflow_id, status)]``, optionally only those with the given status(es)."""
        wanted = _status_set(status_filter)
        if self.store.shared:
            for wid in await self.store.list_workflows():
                if wid not in self._runs:
                    await self._sync_known(wid)
        out = []
        for wid, state in list(self._states.items()):
            status = state.status
            if wanted is None or status in wanted:
                out.append((wid, status))
        return out

    async def get_output(self, workflow_id: str, *, name: str | None = None) -> Any:
        """Wait for the workflow (or its step ``name``) to end and return its value.

        Raises as ``run`` does; a RESUMABLE workflow raises ``WorkflowNotRunningError``,
        unless this engine's run of it ended because the store failed:
        ``WorkflowExecutionError`` with the ``StoreError`` as ``__cause__``.
        """
        while True:
            state = await self._sync(workflow_id)
            if name is not None:
                step = state.step(name)
                src = state.value_source(name)
                if src is not None and src.output is not None:
                    return decode_value(src.output, allow_pickle=self.allow_pickle)
                run = self._runs.get(workflow_id)
                if src is not None and run is not None and src.name in run.values:
                    return run.values[src.name]
                if step.status is StepStatus.FAILED:
                    raise self._failure(state, step)
            status = state.status
            run = self._runs.get(workflow_id)
            if status is not WorkflowStatus.RUNNING and run is not None:
                # the end is folded, or the run is letting go of the workflow: answer once
                # the run is done (its end durable, or the store re-read)
                with anyio.CancelScope(shield=True):
                    await run.wait_done()
                continue
            if status is WorkflowStatus.SUCCESSFUL:
                if name is None:
                    return self._output_value(state)
                raise WorkflowExecutionError(
                    workflow_id, name, "the step's output was not checkpointed (checkpoint=False)"
                )
            if status is WorkflowStatus.FAILED:
                raise self._failure(state, None)
            if status is WorkflowStatus.CANCELED:
                raise WorkflowCancellationError(workflow_id)
            if status is WorkflowStatus.RESUMABLE:
                lost = self._lost.get(workflow_id)
                if isinstance(lost, StoreError) and _store_failed(lost):
                    # this engine's run of it ended because the store failed
                    raise self._store_failure(workflow_id, lost) from lost
                raise WorkflowNotRunningError(workflow_id, status.value) from lost
            if self.store.shared and workflow_id not in self._runs:
                # run by another engine: its events arrive through the store
                with anyio.move_on_after(1.0):
                    await self.store.wait_for_events(workflow_id, state.last_seq)
            else:
                await self._wait_change(workflow_id)

    def _output_value(self, state: WorkflowState) -> Any:
        if state.output is None:  # an actor with no writer call yet
            return None
        src = state.value_source(state.output)
        if src is not None and src.output is not None:
            return decode_value(src.output, allow_pickle=self.allow_pickle)
        if state.final_output is not None:
            return decode_value(state.final_output, allow_pickle=self.allow_pickle)
        raise WorkflowExecutionError(state.workflow_id, None, "its output was not recorded")

    def _failure(self, state: WorkflowState, step: StepState | None) -> WorkflowExecutionError:
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

    async def resume(self, workflow_id: str) -> Any:
        """Re-run what has no checkpointed output and return the output (see ``resume_async``)."""
        handle = await self.resume_async(workflow_id)
        return await handle.result()

    async def resume_async(self, workflow_id: str) -> WorkflowHandle:
        """Resume a FAILED, RESUMABLE or CANCELED workflow; return its handle.

        A SUCCESSFUL one is left as it is (its handle gives the stored output), a running
        one is attached to, never run twice.
        """
        self._require_open()
        if self.store.shared:
            async with self._claim_lock:
                await self._sync_known(workflow_id)
                return await self._resume_locked(workflow_id)
        await self._sync(workflow_id)  # re-reads a workflow whose last write failed
        return await self._resume_locked(workflow_id)

    async def _resume_locked(self, workflow_id: str) -> WorkflowHandle:
        await self._settle(workflow_id)
        state = self._state(workflow_id)
        if state.kind == "actor":  # may have calls waiting even when SUCCESSFUL in the log
            handle: WorkflowHandle = await self._actor_support().resume_actor(state)
            return handle
        if workflow_id in self._runs or state.status in (WorkflowStatus.SUCCESSFUL, WorkflowStatus.RUNNING):
            # running here or, on a shared store, in another live engine: attach to it
            return self._handle(workflow_id)
        if self.store.shared:
            claim = WorkflowStarted(
                seq=state.last_seq + 1,
                time=time.time(),
                workflow_id=workflow_id,
                resume=True,
                owner=self.engine_id,
            )
            try:
                await self.store.append(workflow_id, [claim])
            except SequenceConflictError:  # another engine claimed it first: attach to that
                self._stale.add(workflow_id)
                return self._handle(workflow_id)
            except StoreError as exc:  # whether it landed is unknown: read it next time
                self._stale.add(workflow_id)
                self._lost[workflow_id] = exc
                raise self._store_failure(workflow_id, exc) from exc
            apply(state, claim)
            self._notify(workflow_id)
        else:
            try:
                self._emit(state, (WorkflowStarted, {"workflow_id": workflow_id, "resume": True}))
            except StoreError as exc:  # nothing was queued nor folded
                self._lost[workflow_id] = exc
                raise self._store_failure(workflow_id, exc) from exc
        self._exceptions.pop(workflow_id, None)
        self._start(state)
        await self._flush_start(workflow_id)
        return self._handle(workflow_id)

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
        state = await self._sync(workflow_id)
        run = self._runs.get(workflow_id)
        if run is not None:
            run.cancel_requested = True
            run.scope.cancel()
            with anyio.CancelScope(shield=True):
                await run.wait_done()
            state = await self._sync(workflow_id)  # the run may have let go of it
        while state.run_status not in (WorkflowStatus.SUCCESSFUL, WorkflowStatus.CANCELED):
            # On a shared store this may be another engine's running workflow: that engine
            # lets go of it at its next append, which the store refuses.
            try:
                self._emit(state, (WorkflowCanceled, {}))
                await self.store.flush(workflow_id)
                return
            except SequenceConflictError:
                # That engine appended first (a StepStarted, its end, a resume's claim):
                # read what the log says now and judge again. Each conflict means the log
                # grew, so this ends once the running engine's next append is refused.
                self._stale.add(workflow_id)
            except StoreError:
                self._stale.add(workflow_id)  # what was folded may not be in the store
                raise
            state = await self._sync(workflow_id)

    async def delete(self, workflow_id: str) -> None:
        """Remove the workflow and its log; its id can then be used afresh.

        Raises ``WorkflowRunningError`` while it runs, ``WorkflowNotFoundError`` if unknown.
        """
        validate_workflow_id(workflow_id)
        await self._settle(workflow_id)
        if workflow_id in self._runs:
            raise WorkflowRunningError(workflow_id, "cancel it before deleting it")
        if self.store.shared:
            await self._sync_known(workflow_id)
            state = self._states.get(workflow_id)
            if state is not None and state.status is WorkflowStatus.RUNNING:
                raise WorkflowRunningError(workflow_id, "another engine runs it; cancel it first")
        if workflow_id not in self._states and workflow_id not in self._broken:
            raise WorkflowNotFoundError(workflow_id)
        await self.store.delete(workflow_id)
        self._states.pop(workflow_id, None)
        self._broken.pop(workflow_id, None)
        self._exceptions.pop(workflow_id, None)
        self._lost.pop(workflow_id, None)
        self._notify(workflow_id)

    # -- actors (see _actor.py) ------------------------------------------------------------------

    def _actor_support(self) -> Any:
        if self._actors is None:
            from ._actor import ActorSupport

            self._actors = ActorSupport(self)
        return self._actors

    async def get_actor(self, actor_id: str) -> Any:
        """A handle on an existing virtual actor; raises ``WorkflowNotFoundError``."""
        return await self._actor_support().get_actor(actor_id)


def _spec(node: Node, name: str, args: bytes, deps: list[str]) -> StepSpec:
    opts = node.function.effective_options()
    return StepSpec(
        name=name,
        func=node.function.path,
        args=args,
        deps=deps,
        user_metadata=opts["metadata"],
        options=StepOptions(
            name=opts["name"],
            step_type=opts.get("step_type", "FUNCTION"),
            max_retries=opts["max_retries"],
            retry_delay=opts["retry_delay"],
            catch_exceptions=opts["catch_exceptions"],
            timeout=opts["timeout"],
            checkpoint=opts["checkpoint"],
        ),
    )


def _substitute(decoded: Any, values: Callable[[str], Any]) -> tuple[list[Any], dict[str, Any]]:
    from ._codec import substitute_refs

    args, kwargs = decoded
    return substitute_refs(args, values), substitute_refs(kwargs, values)


def _call(
    func: Callable[..., Any],
    is_async: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    name: str,
    time_limit: float | None,
) -> Awaitable[Any]:
    """One attempt of step ``name``, to await, limited to ``time_limit`` seconds (the step's
    ``timeout`` option); a timeout is a ``TimeoutError`` that names the step.

    With no limit this is the step's own coroutine: a waiting step adds no frame of ours.
    """
    if time_limit is not None:
        return _call_limited(func, is_async, args, kwargs, name, time_limit)
    if is_async:
        return func(*args, **kwargs)  # type: ignore[no-any-return]
    return run_in_daemon_thread(func, args, kwargs, name)


async def _call_limited(
    func: Callable[..., Any],
    is_async: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    name: str,
    time_limit: float,
) -> Any:
    try:
        with anyio.fail_after(time_limit):
            return await _call(func, is_async, args, kwargs, name, None)
    except TimeoutError:
        raise TimeoutError(f"step {name!r} timed out after {time_limit:g} s") from None


def _store_failed(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) and not isinstance(exc, SequenceConflictError)


def _why_lost(exc: Exception) -> Exception:
    """What a run that let go of its workflow reports: from concurrent steps' errors, a
    store failure if there is one (several steps may hit the same full disk)."""
    while isinstance(exc, ExceptionGroup):
        failed, _ = exc.split(_store_failed)
        if failed is not None:
            exc = failed.exceptions[0]
        elif len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        else:
            break
    return exc


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
