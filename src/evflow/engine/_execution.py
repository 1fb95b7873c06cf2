"""The DAG scheduler: which steps of one execution of a workflow run, and when."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._codec import decode_value
from .._events import ErrorInfo
from .._projection import WorkflowState
from ._attempts import check_startable, run_step
from ._run import LiveRun

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["Execution"]


class Execution:
    """Schedules one execution of a workflow's DAG: demand-driven and iterative (no
    recursion, so a 500-deep DAG or a 10,000-long continuation chain is no problem).

    Steps run in the workflow's own task (``EngineCore.execute``), one after the other,
    while only one is runnable at a time (a single step, a chain); ``tg``, a task group
    of that task, is opened only while several steps may run at once, for the time they do.
    """

    __slots__ = (
        "cont_parents",
        "core",
        "demanded",
        "dependents",
        "failure",
        "run",
        "spawned",
        "state",
        "tg",
        "waiting",
    )

    def __init__(self, core: EngineCore, state: WorkflowState, run: LiveRun) -> None:
        self.core = core
        self.state = state
        self.run = run
        self.tg: anyio.abc.TaskGroup | None = None
        self.demanded: set[str] = set()
        self.waiting: dict[str, int] = {}
        self.dependents: dict[str, list[str]] = {}
        self.cont_parents: dict[str, list[str]] = {}
        #: The first step that failed for good: (name, exception, recorded error).
        self.failure: tuple[str, BaseException, ErrorInfo] | None = None
        #: A step kind started steps that nothing else demanded (``spawn``): they may
        #: still run when the output is known, and are then stopped.
        self.spawned = False

    def value_known(self, name: str) -> bool:
        """Whether step ``name``'s value is known (recorded, or kept by this run)."""
        src = self.state.value_source(name)
        return src is not None and (src.output is not None or src.name in self.run.values)

    def value(self, name: str) -> Any:
        """Step ``name``'s value (``value_known`` must hold)."""
        src = self.state.value_source(name)
        assert src is not None
        if src.output is not None:
            return decode_value(src.output, allow_pickle=self.core.allow_pickle)
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

    async def run_to_end(self) -> None:
        """Run the workflow's output step and everything it needs (or until one fails)."""
        assert self.state.output is not None
        runnable = self.demand(self.state.output)
        if not check_startable(self.core, self, [*runnable, *self.waiting]):
            return
        while len(runnable) == 1 and not self._starts_steps(runnable[0]):
            # one step at a time: in this task, no other
            runnable = await run_step(self.core, self, runnable[0])
        if runnable:
            await self.run_concurrently(runnable)

    def _starts_steps(self, name: str) -> bool:
        """Whether step ``name``'s kind starts other steps of this execution while it runs
        (``spawn``), which needs the task group."""
        try:
            kind = self.core.step_kind(self.state.steps[name].spec.options.step_type)
        except LookupError:
            return False  # run_step records why it cannot start
        return bool(getattr(kind, "starts_steps", False))

    def spawn(self, name: str) -> None:
        """Make sure step ``name``'s value gets known, starting what it needs now in this
        execution's task group, without waiting for it (for a kind whose ``starts_steps``
        is true, from inside its attempt). A step already demanded is not started again.
        Steps still running when the output's value is known are stopped then."""
        runnable = self.demand(name)
        if runnable:
            self.spawned = True
            self.start(runnable)

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
            runnable = await run_step(self.core, self, next_name)
            if self.spawned and self.tg is not None and self.value_known(self.state.output or ""):
                self.tg.cancel_scope.cancel()  # only spawned steps nothing needs may be left
                return
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
        """Step ``name`` failed for good: the execution fails (other running steps stop)."""
        if self.failure is None:
            self.failure = (name, exc, info)
        if self.tg is not None:  # else no other step runs
            self.tg.cancel_scope.cancel()
