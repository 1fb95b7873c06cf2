"""The ``SLEEP`` step kind: ``evflow.sleep`` / ``evflow.sleep_until`` nodes.

When the step first starts, its wake time (its recorded start plus ``seconds``, or the
``until`` it was given) is recorded as a ``TimerStarted`` and made durable; the attempt
then waits on the engine's timer. A resumed step finds its wake time in the fold and
waits only for what is left; one whose wake time has passed ends at once.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import anyio

from .._codec import decode_value
from .._events import StepSpec, TimerStarted
from .._projection import WorkflowState
from ..engine import EngineCore, Execution, register_step_kind
from ._timers import TimerService

__all__ = ["SleepKind", "SleepStep"]


class SleepStep:
    """One sleep step ready to run."""

    __slots__ = ("core", "name", "seconds", "state", "until")

    #: Nothing to hold across an attempt.
    lock: anyio.Lock | None = None

    def __init__(
        self, core: EngineCore, state: WorkflowState, name: str, seconds: float | None, until: float | None
    ) -> None:
        self.core = core
        self.state = state
        self.name = name
        self.seconds = seconds
        self.until = until

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> None:
        state = self.state
        step = state.steps[self.name]
        wake_time = step.wake_time
        if wake_time is None:
            if self.until is not None:
                wake_time = self.until
            else:
                assert step.start_time is not None and self.seconds is not None
                wake_time = step.start_time + self.seconds
            self.core.emit(state, (TimerStarted, {"name": self.name, "wake_time": wake_time}))
            await self.core.store.flush(state.workflow_id)
        await self.core.service(TimerService).wait_until(wake_time)

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        return fields

    def discard(self) -> None:
        pass


class SleepKind:
    """Reads a sleep step's recorded duration (or wake time)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def check(self, spec: StepSpec) -> None:
        pass  # nothing to import: the arguments are read when the step runs

    def prepare(self, execution: Execution, spec: StepSpec) -> SleepStep:
        _args, kwargs = decode_value(spec.args, allow_pickle=False)
        seconds, until = kwargs.get("seconds"), kwargs.get("until")
        if (
            not isinstance(seconds, float | None)
            or not isinstance(until, float | None)
            or (seconds is None) == (until is None)
        ):
            raise ValueError(f"sleep step {spec.name!r}: recorded arguments {kwargs!r} are not a sleep's")
        return SleepStep(self.core, execution.state, spec.name, seconds, until)


register_step_kind("SLEEP", SleepKind)
