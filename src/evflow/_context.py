"""The current engine and the current step, as context variables."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from ._errors import NoEngineError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["StepContext", "current_engine", "current_step", "open_engines"]

_current_engine: ContextVar[Engine | None] = ContextVar("evflow_current_engine", default=None)

#: Engines open in this process, in the order they were entered.
open_engines: list[Engine] = []


class StepContext:
    """Where a running step is: its engine, workflow and name."""

    __slots__ = ("engine", "name", "workflow_id")

    def __init__(self, engine: Engine, workflow_id: str, name: str) -> None:
        self.engine = engine
        self.workflow_id = workflow_id
        self.name = name


current_step: ContextVar[StepContext | None] = ContextVar("evflow_current_step", default=None)


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
