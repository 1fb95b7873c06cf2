"""One timer per engine: a heap of wake times and one task that sleeps until the earliest.

A sleeping step costs a heap entry and a signal; no task, thread or polling loop of its
own, so 10,000 sleeping workflows fit in one engine (bench/sleepers.py measures it).
Wake times are epoch seconds (``time.time()``), as recorded in the log; the timer task
waits with the event loop's clock and checks the wall clock again before it wakes
anyone, so a step never ends before its recorded wake time.
"""

from __future__ import annotations

import heapq
import math
import time

import anyio
import anyio.abc
import anyio.lowlevel

from .._signal import Signal, new_signal
from ..engine import EngineCore

__all__ = ["TimerService"]

#: Below this many entries, cancelled ones are left in the heap until they come up.
_COMPACT_MIN = 64


class _Timer:
    __slots__ = ("cancelled", "signal", "wake_time")

    def __init__(self, wake_time: float, signal: Signal) -> None:
        self.wake_time = wake_time
        self.signal = signal
        self.cancelled = False

    def __lt__(self, other: _Timer) -> bool:
        return self.wake_time < other.wake_time


class TimerService:
    """The engine's timer (``core.service(TimerService)``): ``await wait_until(t)``."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._heap: list[_Timer] = []
        self._cancelled = 0
        #: Set to make the timer task look at the heap again (an earlier wake time came in).
        self._rearm: Signal | None = None
        #: The wake time the timer task sleeps until now (inf: none).
        self._armed = math.inf
        #: The task group the timer task runs in (the engine's, while it is open).
        self._group: anyio.abc.TaskGroup | None = None

    def statistics(self) -> dict[str, int]:
        """``{"timers": waiting entries, "cancelled": entries left to drop}`` (never blocks)."""
        return {"timers": len(self._heap) - self._cancelled, "cancelled": self._cancelled}

    async def wait_until(self, wake_time: float) -> None:
        """Return once ``time.time() >= wake_time`` (at once, after a checkpoint, if it is).

        Cancellable; while the engine closes it waits for the cancellation that comes.
        """
        if time.time() >= wake_time:
            await anyio.lowlevel.checkpoint()
            return
        try:
            group = self.core.require_open()
        except RuntimeError:
            # The engine is closing: its task group is about to cancel the caller, which
            # is interrupted (RESUMABLE), not failed.
            await anyio.sleep_forever()
        if group is not self._group:  # first use, or the engine was opened again
            self._group = group
            self._heap = [t for t in self._heap if not t.cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0
            self._armed = math.inf
            group.start_soon(self._run, name="evflow timers")
        timer = _Timer(wake_time, new_signal())
        heapq.heappush(self._heap, timer)
        if wake_time < self._armed and self._rearm is not None:
            self._rearm.set()
        try:
            await timer.signal.wait()
        finally:
            if not timer.signal.is_set():
                timer.cancelled = True
                self._cancelled += 1
                if self._cancelled > _COMPACT_MIN and self._cancelled * 2 > len(self._heap):
                    self._heap = [t for t in self._heap if not t.cancelled]
                    heapq.heapify(self._heap)
                    self._cancelled = 0

    async def _run(self) -> None:
        heap = self._heap
        while True:
            if heap is not self._heap:  # compacted
                heap = self._heap
            now = time.time()
            while heap and (heap[0].cancelled or heap[0].wake_time <= now):
                timer = heapq.heappop(heap)
                if timer.cancelled:
                    self._cancelled -= 1
                else:
                    timer.signal.set()
            self._rearm = rearm = new_signal()
            if heap:
                self._armed = heap[0].wake_time
                with anyio.move_on_after(self._armed - now):
                    await rearm.wait()
            else:
                self._armed = math.inf
                await rearm.wait()
