"""What plugs into the engine core: step kinds (by ``step_type``) and workflow kinds.

A **step kind** runs the steps of one ``step_type`` (``"FUNCTION"``, ``"ACTOR_METHOD"``,
later ``"SLEEP"``, ``"EVENT"``, ``"WAIT"``). It registers a factory, called once per
engine with the engine's core; for each step the core asks it to ``prepare`` the step
(resolve the callable, decode the arguments) and then drives the attempts itself
(``_attempts.run_step``: retries, timeouts, ``catch_exceptions``, the StepStarted /
StepFailed / StepFinished events). The prepared step decides what one attempt is, may
hold a lock across it, and may add its own fields to the StepFinished it records.

An **open service** (schedules) is a service that starts its work when an engine opens:
it registers its class and ``Engine`` calls ``core.service(cls).engine_opened(engine)``
on every open, so the engine starts it without importing it.

A **workflow kind** (a workflow whose first event says ``kind="actor"``, ...) has a
service that resumes it and opens handles on it, so that ``Engine.resume`` and
``Engine.get_actor`` dispatch to the package that defines the kind, which the core
never imports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    from .._events import StepSpec
    from .._handle import WorkflowHandle
    from .._projection import WorkflowState
    from ._core import EngineCore
    from ._engine import Engine
    from ._execution import Execution

__all__ = [
    "OpenService",
    "PreparedStep",
    "StepKind",
    "StepKindFactory",
    "WorkflowKindService",
    "open_services",
    "register_open_service",
    "register_step_kind",
    "register_workflow_kind",
    "step_kind_factory",
    "workflow_kind_service",
]


class PreparedStep(Protocol):
    """One step made ready by its kind; the core's attempt loop runs it."""

    @property
    def lock(self) -> anyio.Lock | None:
        """Held across each attempt and the events it records (an actor's lock), or None."""
        ...

    def attempt(self) -> Awaitable[Any]:
        """Start one attempt: an awaitable of the step's result (may be a node: a
        continuation). The core applies the step's ``timeout`` only through what this
        returns, so a kind that waits for durable time or messages does it in here."""
        ...

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        """The StepFinished fields the core built (output or continuation), with the
        kind's own added; ``succeeded`` is False when a caught exception is recorded."""
        ...

    def discard(self) -> None:
        """An attempt failed or was cancelled: drop what it may have changed."""
        ...


class StepKind(Protocol):
    """Runs the steps of one ``step_type`` in one engine.

    A kind whose steps start other steps of their execution while they run
    (``Execution.spawn``, as ``evflow.wait`` does) says so with a class attribute
    ``starts_steps = True``: such a step always runs in the execution's task group.
    """

    def check(self, spec: StepSpec) -> None:
        """Raise ``ImportError`` if step ``spec``'s code cannot be found or is not allowed
        (a log is data: it may name anything). Called for every step an execution is
        about to run, before the first one runs; a kind with nothing to check passes."""
        ...

    def prepare(self, execution: Execution, spec: StepSpec) -> PreparedStep:
        """Make step ``spec`` ready to run (never blocks). An exception fails the step at
        once: its one attempt is recorded as started and failed, with no retry."""
        ...


#: Makes the kind for one engine (called once per engine, on the first step of the type).
StepKindFactory = Callable[["EngineCore"], StepKind]

_step_kinds: dict[str, StepKindFactory] = {}


def register_step_kind(step_type: str, factory: StepKindFactory) -> None:
    """Run steps whose ``options.step_type`` is ``step_type`` with ``factory(core)``'s kind.

    Called at import time by the module that defines the kind; registering a type again
    replaces it (a reloaded module).
    """
    _step_kinds[step_type] = factory


def step_kind_factory(step_type: str) -> StepKindFactory:
    """The factory registered for ``step_type``; ``LookupError`` naming it if none is."""
    try:
        return _step_kinds[step_type]
    except KeyError:
        raise LookupError(
            f"no step kind is registered for step_type {step_type!r} (known: {sorted(_step_kinds)}); "
            "was the log written by a newer evflow?"
        ) from None


class WorkflowKindService(Protocol):
    """The engine service of one workflow kind (``EngineCore.service`` makes it)."""

    async def resume(self, state: WorkflowState) -> WorkflowHandle:
        """Resume (or attach to) the workflow; its handle."""
        ...

    async def open_handle(self, workflow_id: str) -> Any:
        """A handle on an existing workflow of this kind (``Engine.get_actor``)."""
        ...


_workflow_kinds: dict[str, Callable[[EngineCore], WorkflowKindService]] = {}


def register_workflow_kind(kind: str, service: Callable[[EngineCore], WorkflowKindService]) -> None:
    """Workflows whose first event has ``kind=kind`` are resumed by ``service``, the
    class of an engine service (made once per engine, ``EngineCore.service``)."""
    _workflow_kinds[kind] = service


def workflow_kind_service(kind: str) -> Callable[[EngineCore], WorkflowKindService] | None:
    """The service registered for workflow kind ``kind`` (None: an ordinary DAG)."""
    return _workflow_kinds.get(kind)


class OpenService(Protocol):
    """An engine service that starts its work when the engine opens."""

    def engine_opened(self, engine: Engine) -> None:
        """The engine is open (never blocks): start tasks in ``core.require_open()``'s group."""
        ...


_open_services: list[Callable[[EngineCore], OpenService]] = []


def register_open_service(service: Callable[[EngineCore], OpenService]) -> None:
    """Tell ``service``, the class of an engine service, of every engine's open (once
    registered; registering the same class again changes nothing)."""
    if service not in _open_services:
        _open_services.append(service)


def open_services() -> list[Callable[[EngineCore], OpenService]]:
    """The services told of an engine's open, in the order they registered."""
    return list(_open_services)
