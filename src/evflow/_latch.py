"""A one-shot latch: set once, with a value or an error; any number of tasks wait for it.

The engine keeps one per live run (the run's end) and one per awaited actor call, so
there may be thousands at once: the signal waiters sleep on is made only when somebody
waits (``_signal.new_signal``, small on asyncio), and a latch nobody waits for holds no
more than its outcome (docs/performance.md, (g)).
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from ._signal import Signal, new_signal

__all__ = ["Latch"]

T = TypeVar("T")

_PENDING: object = object()


class Latch(Generic[T]):
    """Set once with ``set(value)`` or ``fail(error)``; ``await wait()`` gives the value
    (or raises the error). Later ``set``/``fail`` calls do nothing: the first one wins."""

    __slots__ = ("_error", "_signal", "_value")

    def __init__(self) -> None:
        self._value: object = _PENDING
        self._error: BaseException | None = None
        self._signal: Signal | None = None

    def is_set(self) -> bool:
        """Whether the outcome is known (never blocks)."""
        return self._value is not _PENDING

    def set(self, value: T) -> None:
        """Settle with ``value`` unless already settled."""
        if self._value is _PENDING:
            self._value = value
            if self._signal is not None:
                self._signal.set()

    def fail(self, error: BaseException) -> None:
        """Settle with ``error`` (raised by ``wait``) unless already settled."""
        if self._value is _PENDING:
            self._error = error
            self._value = None
            if self._signal is not None:
                self._signal.set()

    async def wait(self) -> T:
        """Return the value once settled, or raise the error it was settled with.

        Returns without yielding when already settled; a cancelled waiter leaves the
        others waiting.
        """
        if self._value is _PENDING:
            if self._signal is None:
                self._signal = new_signal()
            await self._signal.wait()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)
