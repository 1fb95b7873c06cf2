"""A one-shot event for the many the engine keeps (one per awaited workflow), and how
another thread sets one.

``anyio.Event`` on asyncio wraps an ``asyncio.Event``, whose deque of waiters takes 760
bytes even when one task waits, or none; with 10,000 workflows in flight and a caller
awaiting each, that is 7 MB (docs/performance.md, (g)). On asyncio a ``Signal`` keeps its
waiters' futures in a list instead; on trio it is an ``anyio.Event`` (``trio.Event`` is
small already).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeAlias

import anyio.lowlevel
import sniffio

__all__ = ["Notify", "Signal", "loop_notifier", "new_signal"]

#: Schedules a callback on an event loop from any thread, without blocking.
Notify: TypeAlias = Callable[[Callable[[], object]], object]


class Signal(Protocol):
    """Set once; ``wait`` returns once it is set (what the engine uses of ``anyio.Event``)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


def loop_notifier() -> Notify:
    """How another thread schedules a callback on the running event loop (and so sets a
    signal of it): ``call_soon_threadsafe`` on asyncio, ``run_sync_soon`` on trio."""
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().call_soon_threadsafe
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon


def new_signal() -> Signal:
    """A new, unset signal for the running event loop."""
    if sniffio.current_async_library() == "asyncio":
        return _FutureSignal()
    return anyio.Event()


class _FutureSignal:
    """``anyio.Event`` semantics on asyncio: a cancelled waiter raises the cancellation and
    leaves the others waiting; waiting on a set signal is a checkpoint."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def is_set(self) -> bool:
        return self._is_set

    async def wait(self) -> None:
        if self._is_set:
            await anyio.lowlevel.checkpoint()
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            if not self._is_set:  # cancelled while waiting; set() already let go of the rest
                self._waiters.remove(future)
