"""The ``WAIT`` step kind: ``evflow.wait(nodes, num_returns, timeout)``.

The nodes are recorded with the DAG but are not the step's dependencies: the step starts
them itself (``Execution.spawn``) and ends once ``num_returns`` of them have values, or at
its deadline. Its value is ``(ready_values, pending)``: the ready values in the order the
nodes ended (by their recorded end), and the others as ``Ref``s to their recorded steps,
which keep running in the execution. A later ``wait(pending)`` spawns them again, which
starts nothing already started or ended; across a resume, the steps that had not ended
run (once), those that had keep their values. A timeout's deadline is recorded when the
step first starts (``TimerStarted``), as a sleep's wake time is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from typing import Any

import anyio

from .._codec import Ref, decode_value
from .._events import StepSpec, TimerStarted
from ..engine import EngineCore, Execution, register_step_kind

__all__ = ["WaitKind", "WaitStep"]


class WaitStep:
    """One wait step ready to run."""

    __slots__ = ("children", "core", "execution", "name", "num_returns", "timeout")

    #: Nothing to hold across an attempt.
    lock: anyio.Lock | None = None

    def __init__(
        self,
        core: EngineCore,
        execution: Execution,
        name: str,
        children: list[str],
        num_returns: int,
        timeout: float | None,
    ) -> None:
        self.core = core
        self.execution = execution
        self.name = name
        self.children = children
        self.num_returns = num_returns
        self.timeout = timeout

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> tuple[list[Any], list[Ref]]:
        execution, state = self.execution, self.execution.state
        deadline = math.inf
        if self.timeout is not None:
            step = state.steps[self.name]
            deadline = step.wake_time if step.wake_time is not None else math.nan
            if math.isnan(deadline):
                assert step.start_time is not None
                deadline = step.start_time + self.timeout
                self.core.emit(state, (TimerStarted, {"name": self.name, "wake_time": deadline}))
                await self.core.store.flush(state.workflow_id)
        for child in self.children:
            execution.spawn(child)
        while True:
            ended = [c for c in self.children if execution.value_known(c)]
            if len(ended) >= self.num_returns or time.time() >= deadline:
                break
            if deadline == math.inf:
                await self.core.wait_change(state.workflow_id)
            else:
                with anyio.move_on_after(max(0.0, deadline - time.time())):
                    await self.core.wait_change(state.workflow_id)
        ended.sort(key=self._ended_at)
        ready = ended[: self.num_returns]
        values = [execution.value(c) for c in ready]
        return values, [Ref(c) for c in self.children if c not in ready]

    def _ended_at(self, name: str) -> tuple[float, int]:
        src = self.execution.state.value_source(name)
        end = src.end_time if src is not None and src.end_time is not None else math.inf
        return end, self.children.index(name)

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        return fields

    def discard(self) -> None:
        pass


class WaitKind:
    """Reads a wait step's recorded nodes (references to steps of its DAG) and limits."""

    #: A wait starts its nodes itself, so it runs in the execution's task group.
    starts_steps = True

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def check(self, spec: StepSpec) -> None:
        pass  # its nodes are checked as they are started

    def prepare(self, execution: Execution, spec: StepSpec) -> WaitStep:
        args, kwargs = decode_value(spec.args, allow_pickle=False)
        children = args[0] if len(args) == 1 and type(args[0]) is list else None
        num_returns, timeout = kwargs.get("num_returns"), kwargs.get("timeout")
        if (
            children is None
            or not all(type(c) is Ref and c.name in execution.state.steps for c in children)
            or type(num_returns) is not int
            or not isinstance(timeout, float | None)
        ):
            raise ValueError(f"wait step {spec.name!r}: recorded arguments are not a wait's")
        return WaitStep(self.core, execution, spec.name, [c.name for c in children], num_returns, timeout)


register_step_kind("WAIT", WaitKind)
