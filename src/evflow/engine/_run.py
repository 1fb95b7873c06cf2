"""A live run: one execution of a workflow in this engine, from its start to its end."""

from __future__ import annotations

from typing import Any

import anyio

from .._latch import Latch

__all__ = ["LiveRun"]


class LiveRun(Latch[None]):
    """One live execution of a workflow in this engine.

    The run is its own done latch (set once its end is recorded, or it let go of the
    workflow): a subclass rather than a field, so that thousands of runs in flight cost
    no extra object each (docs/performance.md, (g)).
    """

    __slots__ = ("cancel_requested", "lost", "scope", "values", "workflow_id")

    def __init__(self, workflow_id: str) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        #: Cancelling it stops every step of the run (``cancel``, engine shutdown).
        self.scope = anyio.CancelScope()
        self.cancel_requested = False
        #: Why the run must let go of the workflow at once (its start could not be written).
        self.lost: Exception | None = None
        #: Values of steps run in this execution whose output is not checkpointed.
        self.values: dict[str, Any] = {}

    @property
    def finished(self) -> bool:
        """Whether the run has ended and recorded its end (never blocks)."""
        return self.is_set()

    async def wait_done(self) -> None:
        """Return once the run has ended and recorded its end."""
        await self.wait()

    def set_done(self) -> None:
        self.set(None)
