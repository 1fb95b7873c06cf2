"""The current engine and the current step, as context variables.

This module sits below the engine, so it knows the engine only by what the modules below
the engine ask of it: ``NodeRunner`` (``Node.run`` / ``run_async``) and ``StepHost`` (a
running step). ``evflow.engine.current_engine`` gives callers above the engine the
``Engine`` itself.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from ._errors import NoEngineError
from ._handle import WorkflowHandle

__all__ = [
    "NodeRunner",
    "StepContext",
    "StepHost",
    "current_runner",
    "current_step",
    "default_engines",
    "open_engines",
    "reset_current_engine",
    "running_step",
    "set_current_engine",
]


class NodeRunner(Protocol):
    """What ``Node.run`` and ``Node.run_async`` ask of the current engine (``Engine`` is one)."""

    @property
    def is_open(self) -> bool: ...

    async def run(
        self,
        node: Any,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any: ...

    async def run_async(
        self,
        node: Any,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle: ...


_current_engine: ContextVar[NodeRunner | None] = ContextVar("evflow_current_engine", default=None)

#: Engines open in this process, in the order they were entered.
open_engines: list[NodeRunner] = []

#: Engines made the default for callers whose context carries none (``evflow.web.lifespan``
#: marks its engine so, for its app's request handlers); the last one still open wins.
default_engines: list[NodeRunner] = []


class StepHost(Protocol):
    """What a running step needs of the engine that runs it (``attach_metadata``,
    ``set_event``)."""

    @property
    def loop_token(self) -> Any: ...

    @property
    def allow_pickle(self) -> bool: ...

    def publish_nowait(self, workflow_id: str, step: str | None, key: str, value: bytes) -> None: ...

    def in_event_loop_thread(self) -> bool: ...

    def attach_metadata_nowait(
        self, workflow_id: str, step: str | None, metadata: dict[str, Any]
    ) -> None: ...


class StepContext:
    """Where a running step is: its engine, workflow, name and attempt (1 for the first).

    One object per step execution, shared with the worker thread of a sync step (the
    thread runs in a copy of the context, which holds this same object): the attempt
    loop moves ``attempt`` on before each attempt starts.
    """

    __slots__ = ("attempt", "engine", "name", "workflow_id")

    def __init__(self, engine: StepHost, workflow_id: str, name: str, attempt: int = 1) -> None:
        self.engine = engine
        self.workflow_id = workflow_id
        self.name = name
        self.attempt = attempt


current_step: ContextVar[StepContext | None] = ContextVar("evflow_current_step", default=None)


def running_step(what: str) -> StepContext:
    """The running step's context; ``RuntimeError`` naming ``what`` outside a step."""
    ctx = current_step.get()
    if ctx is None:
        raise RuntimeError(f"evflow.{what}() can only be called inside a running step")
    return ctx


def current_runner() -> NodeRunner:
    """The current engine, by the rule of docs/decisions.md ("Which engine a call uses").

    1. the engine of the enclosing ``async with Engine(...)`` block (a ContextVar), if open;
    2. else the default engine (``evflow.engine.default_engine``, which
       ``evflow.web.lifespan`` uses), the one made default last among those still open;
    3. else the only open engine of the process;
    4. else ``NoEngineError``.
    """
    engine = _current_engine.get()
    if engine is not None and engine.is_open:
        return engine
    for default in reversed(default_engines):
        if default.is_open:
            return default
    if len(open_engines) == 1:
        return open_engines[0]
    raise NoEngineError()


def set_current_engine(engine: NodeRunner | None) -> object:
    return _current_engine.set(engine)


def reset_current_engine(token: object) -> None:
    try:
        _current_engine.reset(token)  # type: ignore[arg-type]
    except ValueError:
        # Left in another task than it was entered in (a pytest-asyncio fixture's
        # teardown): that task's context never saw the engine, so nothing to undo.
        pass
