"""The engine side of virtual actors: one ``ActorService`` per engine (``core.service``).

How a call maps onto the engine (docs/actors.md has the user-facing story):

- The actor is a workflow of kind ``"actor"`` whose first event records the class path and
  the initial state. A writer call is recorded when submitted (``ActorCallSubmitted``) and
  is a step of that workflow (``step_type="ACTOR_METHOD"``, run by ``_kind.py``).
- One worker task per busy actor, in the engine's task group, runs the calls in submission
  order. Each call is a run: ``WorkflowStarted(resume=True)``, the call's DAG run by the
  core's ``execute`` (so chained calls are continuations), then ``WorkflowFinished``
  or ``WorkflowFailed``. The fold makes the head call the run's ``output``.
- Readonly calls run on a fresh instance rebuilt from the recorded state and record nothing.
- A write the store fails (creating the actor, submitting a call, a call's run) raises
  ``WorkflowExecutionError`` with the ``StoreError`` as ``__cause__``, as a workflow's run
  does (docs/storage.md): the run lets go of the actor, which is read back from the store,
  and every call waiting for an outcome hears the same error.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio

from .._codec import encode_value
from .._errors import (
    EvflowError,
    StoreError,
    WorkflowCancellationError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from .._events import FORMAT_VERSION, ActorCallSubmitted, WorkflowFinished, WorkflowStarted
from .._latch import Latch
from .._projection import WorkflowState, WorkflowStatus, allocate_names
from .._step import DEFAULT_OPTIONS, Node, iter_nodes, step_spec, validate_workflow_id
from ..engine import EngineCore, LiveRun, WorkflowHandle, call, is_store_failure, register_workflow_kind
from ._handles import ActorCallHandle, ActorHandle
from ._methods import ActorMethod, class_info, resolve_actor_class
from ._runtime import ActorRuntime, encode_instance, restore_instance

__all__ = ["ActorService"]


class ActorService:
    """The engine's virtual-actor machinery (one per engine, made on first use)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._runtimes: dict[str, ActorRuntime] = {}

    # -- lookup ----------------------------------------------------------------------------------

    def actor_state(self, actor_id: str) -> WorkflowState:
        """The actor's state; ``WorkflowNotFoundError``, ``TypeError`` if not an actor."""
        state = self.core.state(actor_id)
        if state.kind != "actor":
            raise TypeError(f"workflow {actor_id!r} is not a virtual actor")
        return state

    def runtime(self, state: WorkflowState) -> ActorRuntime:
        """The in-memory side of the actor (its class resolved from the recorded path)."""
        runtime = self._runtimes.get(state.workflow_id)
        if runtime is None or runtime.state is not state:
            assert state.actor_class is not None
            allow_pickle = self.core.allow_pickle
            cls = resolve_actor_class(state.actor_class, allow_import=allow_pickle)
            new = ActorRuntime(state, cls, allow_pickle)
            if runtime is not None:  # the state was read afresh: its callers still wait
                new.outcomes = runtime.outcomes
            runtime = self._runtimes[state.workflow_id] = new
        return runtime

    async def open_handle(self, workflow_id: str) -> ActorHandle:
        """A handle on an existing actor; ``WorkflowNotFoundError`` if absent, ``TypeError``
        if the workflow is not an actor."""
        state = self.actor_state(workflow_id)
        return ActorHandle(self, workflow_id, self.runtime(state).cls)

    async def get_or_create(
        self, cls: type[Any], actor_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorHandle:
        """The actor ``actor_id``, first recorded with ``cls(*args, **kwargs)``'s state."""
        core = self.core
        info = class_info(cls)
        validate_workflow_id(actor_id)
        core.require_open()
        try:
            state = core.state(actor_id)
        except WorkflowNotFoundError:
            pass
        else:
            if state.kind != "actor":
                raise TypeError(f"workflow {actor_id!r} exists and is not a virtual actor")
            if state.actor_class != info.path:
                raise TypeError(f"actor {actor_id!r} is a {state.actor_class}, not a {info.path}")
            return ActorHandle(self, actor_id, cls)
        # No await from the check above until the state is registered: a concurrent
        # get_or_create of the same id finds it.
        instance = cls(*args, **kwargs)
        encoded = encode_instance(
            instance,
            info.custom_state,
            allow_pickle=core.allow_pickle,
            what=f"the state of actor {actor_id!r}",
        )
        first = WorkflowStarted(
            seq=1,
            time=time.time(),
            workflow_id=actor_id,
            kind="actor",
            actor_class=info.path,
            actor_state=encoded,
            version=FORMAT_VERSION,
            owner=core.engine_id,
        )
        try:
            core.create(first)
        except StoreError as exc:  # nothing was queued: the actor does not exist
            raise core.store_failure(actor_id, exc) from exc
        try:
            await core.store.flush(actor_id)
        except StoreError as exc:
            raise await self._store_failed(actor_id, exc) from exc
        return ActorHandle(self, actor_id, cls)

    async def _store_failed(self, actor_id: str, exc: StoreError) -> EvflowError:
        """A write of the actor failed with no run to let go of it: read it back from the
        store (what is not there did not happen) and return the error to raise."""
        core = self.core
        core.refetch(actor_id)
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await core.sync_known(actor_id)
        self._fail_waiting(actor_id, exc)
        return core.store_failure(actor_id, exc)

    def _fail_waiting(self, actor_id: str, lost: Exception) -> None:
        """The actor's run let go of it (``lost`` says why): every call waited on fails."""
        runtime = self._runtimes.get(actor_id)
        if runtime is None:
            return
        outcomes, runtime.outcomes = runtime.outcomes, {}
        for outcome in outcomes.values():
            error: EvflowError
            if isinstance(lost, StoreError) and is_store_failure(lost):
                error = self.core.store_failure(actor_id, lost)
            else:
                error = WorkflowNotRunningError(actor_id, WorkflowStatus.RESUMABLE.value)
            error.__cause__ = lost
            outcome.fail(error)

    # -- writer calls ------------------------------------------------------------------------------

    async def submit(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle:
        """Record a writer call and queue it; returns once the submission is durable."""
        core = self.core
        core.require_open()
        state = self.actor_state(actor_id)
        runtime = self.runtime(state)
        where = f"actor {actor_id!r} call {method.default_name}"
        method.check_args(args, kwargs, where)
        if next(iter_nodes((args, kwargs)), None) is not None:
            raise TypeError(f"{where}: arguments of an actor call cannot be nodes; pass values")
        base = options.get("name") or method.default_name
        name = allocate_names(state, [base])[0]
        encoded = encode_value(
            (list(args), kwargs), allow_pickle=core.allow_pickle, what=f"the arguments of step {name!r}"
        )
        effective = {**DEFAULT_OPTIONS, **options, "name": base, "step_type": "ACTOR_METHOD"}
        spec = step_spec(name, method.path, encoded, effective, [])
        try:
            core.emit(state, (ActorCallSubmitted, {"step": spec}))
        except StoreError as exc:  # nothing was queued nor folded
            raise core.store_failure(actor_id, exc) from exc
        outcome = runtime.outcomes[name] = Latch[Any]()
        await self._start_and_flush(state)
        return ActorCallHandle(actor_id, core.owner, name, outcome)

    async def _start_and_flush(self, state: WorkflowState) -> None:
        """Start the actor's worker unless it runs, and wait until what was queued is
        durable; if it cannot be written, the run lets go of the actor first."""
        core = self.core
        wid = state.workflow_id
        try:
            if core.run_of(wid) is None:
                self._start_worker(state)
        except StoreError as exc:  # its WorkflowStarted could not be queued
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await core.store.flush(wid)  # what was queued before is written or refused
            raise await self._store_failed(wid, exc) from exc
        await core.flush_start(wid)  # WorkflowExecutionError once the run let go

    def _open_run(self, state: WorkflowState) -> LiveRun:
        # queued first: if the store refuses it, no run is left registered
        self.core.emit(state, (WorkflowStarted, {"workflow_id": state.workflow_id, "resume": True}))
        return self.core.open_run(state)

    def _start_worker(self, state: WorkflowState) -> None:
        """Open a run for the head call and start the actor's worker (never blocks)."""
        wtg = self.core.require_open()
        run = self._open_run(state)
        wtg.start_soon(self._work, state, run)

    async def _work(self, state: WorkflowState, run: LiveRun) -> None:
        """Run the actor's calls one per run, in submission order, until none is left."""
        core = self.core
        wid = state.workflow_id
        try:
            while True:
                head = state.output
                await core.execute(state, run)
                lost = core.lost_cause(wid)
                if lost is not None:  # the run let go of the actor (read back from the store)
                    self._fail_waiting(wid, lost)
                    break
                if head is not None:
                    self._settle(state, head)
                if (
                    run.cancel_requested
                    or state.run_status is WorkflowStatus.RUNNING  # interrupted, or the store failed
                    or not state.actor_calls
                    or not core.is_open
                ):
                    break
                # The next call opens its own run at once (no await since the last one
                # ended), so nothing can see the actor idle while calls wait.
                try:
                    run = self._open_run(state)
                except StoreError as exc:  # no run was opened
                    await self._store_failed(wid, exc)
                    break
        finally:
            runtime = self._runtimes.get(wid)
            if runtime is not None and runtime.outcomes and core.run_of(wid) is None:
                self._settle_rest(state, runtime)

    def _settle(self, state: WorkflowState, name: str) -> None:
        runtime = self._runtimes.get(state.workflow_id)
        outcome = runtime.outcomes.pop(name, None) if runtime is not None else None
        if outcome is None:
            return
        status = state.run_status
        if status is WorkflowStatus.SUCCESSFUL:
            try:
                outcome.set(self.core.output_value(state))
            except Exception as exc:  # an undecodable output fails this call's waiters only
                outcome.fail(exc)
        elif status is WorkflowStatus.FAILED:
            outcome.fail(self.core.failure(state, None))
        elif status is WorkflowStatus.CANCELED:
            outcome.fail(WorkflowCancellationError(state.workflow_id))
        else:
            outcome.fail(WorkflowNotRunningError(state.workflow_id, state.status.value))

    def _settle_rest(self, state: WorkflowState, runtime: ActorRuntime) -> None:
        """The worker stopped with calls unsettled: canceled, or interrupted (RESUMABLE)."""
        pending = set(state.actor_calls)
        for name, outcome in list(runtime.outcomes.items()):
            if name in pending:
                outcome.fail(WorkflowNotRunningError(state.workflow_id, state.status.value))
            else:
                outcome.fail(WorkflowCancellationError(state.workflow_id))
            del runtime.outcomes[name]

    async def resume(self, state: WorkflowState) -> WorkflowHandle:
        """Run the calls submitted but not finished, in order, from the last recorded state.

        Returns a handle whose result is the value of the last call once none is left
        (``None`` for an actor never called). An actor being run is attached to.
        """
        core = self.core
        wid = state.workflow_id
        if core.run_of(wid) is None:
            if state.actor_calls:
                await self._start_and_flush(state)
            elif state.run_status is WorkflowStatus.RUNNING:
                # A run with no call left (its end was never recorded): just close it.
                try:
                    core.emit(
                        state,
                        (WorkflowStarted, {"workflow_id": wid, "resume": True}),
                        (WorkflowFinished, {}),
                    )
                    await core.store.flush(wid)
                except StoreError as exc:
                    raise await self._store_failed(wid, exc) from exc
        return core.handle(wid)

    # -- readonly calls --------------------------------------------------------------------------

    async def call_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a readonly method on a fresh instance built from the latest recorded state.

        Records nothing. Raises ``WorkflowExecutionError`` (cause: the method's exception)
        when it raises, ``TypeError`` when it returns a node.
        """
        self.core.require_open()
        state = self.actor_state(actor_id)
        runtime = self.runtime(state)
        where = f"actor {actor_id!r} readonly call {method.default_name}"
        method.check_args(args, kwargs, where)
        instance = restore_instance(
            runtime.cls, runtime.custom_state, state.actor_state, runtime.allow_pickle
        )
        try:
            result = await call(
                method.func,
                method.is_async,
                [instance, *args],
                kwargs,
                method.default_name,
                options.get("timeout"),
            )
        except Exception as exc:
            error = WorkflowExecutionError(actor_id, method.default_name, f"{type(exc).__name__}: {exc}")
            raise error from exc
        if isinstance(result, Node):
            raise TypeError(f"{where}: a readonly method cannot return a node (chaining records state)")
        return result

    async def start_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle:
        """Start a readonly call in the engine's task group; returns its handle at once."""
        wtg = self.core.require_open()
        self.actor_state(actor_id)
        method.check_args(args, kwargs, f"actor {actor_id!r} readonly call {method.default_name}")
        outcome = Latch[Any]()

        async def run_call() -> None:
            try:
                outcome.set(await self.call_readonly(actor_id, method, options, args, kwargs))
            except Exception as exc:
                outcome.fail(exc)
            finally:
                outcome.fail(WorkflowNotRunningError(actor_id, "interrupted"))

        wtg.start_soon(run_call)
        return ActorCallHandle(actor_id, self.core.owner, None, outcome)


register_workflow_kind("actor", ActorService)
