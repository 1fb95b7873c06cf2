"""The ``ScheduleService``: one task per open engine that starts the schedules' workflows.

On open it reads the store's workflow ids once: the newest id of a schedule is its last
fire time that started (that is how missed fire times are known; no other state is
kept). A schedule with no workflow yet starts from the engine's open (a fire time at
that very second included), never with fire times before it. Then it sleeps on the
engine's one timer (``TimerService``) until the earliest next fire time of all the
schedules and starts what is due.

A fire time starts once because its workflow id is fixed: the service starts it only if
no workflow of that id exists, and on a shared store (several engines) it checks and
records the first event while holding the schedule's store-wide lock (``Store.lock``),
so the engine that comes second finds it recorded. It never resumes an existing one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio.abc

from .._errors import QueueFullError, StoreError, WorkflowExecutionError
from .._step import Node
from ..engine import Engine, EngineCore, is_store_failure, register_open_service
from ..waiting import TimerService
from ._schedule import Schedule, declared_schedules

__all__ = ["RETRY_DELAY", "ScheduleService", "clock"]

logger = logging.getLogger("evflow.schedules")

#: The clock fire times are compared with (a test may move it; events keep ``time.time``).
clock: Callable[[], float] = time.time

#: Seconds until a fire time the store could not record is tried again.
RETRY_DELAY = 1.0


class ScheduleService:
    """An engine's schedules (``core.service(ScheduleService)``), started on each open."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        #: The task group the schedule task runs in (the engine's, while it is open).
        self._group: anyio.abc.TaskGroup | None = None
        self._started = 0
        self._rounds = 0

    def statistics(self) -> dict[str, int]:
        """``{"started": workflows this engine started, "rounds": rounds of due fire times
        it went through}`` since it was made (never blocks)."""
        return {"started": self._started, "rounds": self._rounds}

    def engine_opened(self, engine: Engine) -> None:
        schedules = declared_schedules()
        if not schedules:
            return
        group = self.core.require_open()
        if group is self._group:
            return
        self._group = group
        group.start_soon(self._serve, engine, schedules, name="evflow schedules")

    async def _serve(self, engine: Engine, schedules: list[Schedule]) -> None:
        timers = self.core.service(TimerService)
        opened = clock()
        while True:
            try:
                ids = await self.core.store.list_workflows()
                break
            except StoreError:
                await timers.wait_until(time.time() + RETRY_DELAY)
        # Fire times after ``last`` are due; a schedule never started begins at the open.
        last: dict[str, float] = {}
        for schedule in schedules:
            newest = schedule.newest(ids)
            last[schedule.name] = newest if newest is not None else math.ceil(opened) - 1.0
        while True:
            now = clock()
            wake = math.inf
            for schedule in schedules:
                for at in schedule.due(last[schedule.name], now):
                    if not await self._fire(engine, schedule, at):
                        wake = now + RETRY_DELAY  # the store failed: try this one again
                        break
                    last[schedule.name] = at
                wake = min(wake, schedule.next_after(max(now, last[schedule.name])))
            self._rounds += 1
            await timers.wait_until(time.time() + (wake - clock()))

    async def _fire(self, engine: Engine, schedule: Schedule, at: float) -> bool:
        """Start fire time ``at`` unless its workflow exists; False if the store failed."""
        core = self.core
        wid = schedule.workflow_id(at)
        try:
            if core.store.shared:
                async with core.store.lock(f"evflow-schedule:{schedule.name}"):
                    if not await core.sync_known(wid):
                        await self._start(engine, schedule, at, wid)
            elif not core.knows(wid):
                await self._start(engine, schedule, at, wid)
        except StoreError:
            return False
        except WorkflowExecutionError as exc:
            if is_store_failure(exc.__cause__):
                return False
            raise
        except QueueFullError:
            pass  # the engine's max_pending_workflows: this fire time is skipped
        return True

    async def _start(self, engine: Engine, schedule: Schedule, at: float, wid: str) -> None:
        # The function is user code run in the engine's task group: its error must not end
        # every workflow of the engine. It is logged and the fire time skipped (a bug does
        # not go away by calling again).
        try:
            node = schedule(at)
            if not isinstance(node, Node):
                raise TypeError(f"it returned {type(node).__name__}, not a node (step.step(...))")
        except Exception:
            logger.exception(
                "schedule %r could not build the workflow %r; fire time skipped", schedule.name, wid
            )
            return
        if schedule.queue is not None:
            await engine.enqueue(schedule.queue, node, wid)
        else:
            await engine.run_async(node, wid)
        self._started += 1


register_open_service(ScheduleService)
