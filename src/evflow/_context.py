"""The current engine and the current step, as context variables."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import NoEngineError

if TYPE_CHECKING:  # the engine imports this module: name its type only for the checker
    from .engine import Engine

__all__ = ["StepContext", "StepHost", "current_engine", "current_step", "open_engines", "running_step"]

_current_engine: ContextVar[Engine | None] = ContextVar("evflow_current_engine", default=None)

#: Engines open in this process, in the order they were entered.
open_engines: list[Engine] = []


class StepHost(Protocol):
    """What a running step needs of the engine that runs it (``attach_metadata``)."""

    @property
    def loop_token(self) -> Any: ...

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


def current_engine() -> Engine:
    """The engine of the enclosing ``async with Engine(...)`` block.

    Falls back to the only open engine of the process when the block's context did not
    reach the caller (e.g. a task started elsewhere); raises ``NoEngineError`` otherwise.
    """
    engine = _current_engine.get()
    if engine is not None and engine.is_open:
        return engine
    if len(open_engines) == 1:
        return open_engines[0]
    raise NoEngineError()


def set_current_engine(engine: Engine | None) -> object:
    return _current_engine.set(engine)


def reset_current_engine(token: object) -> None:
    try:
        _current_engine.reset(token)  # type: ignore[arg-type]
    except ValueError:
        # Left in another task than it was entered in (a pytest-asyncio fixture's
        # teardown): that task's context never saw the engine, so nothing to undo.
        pass
