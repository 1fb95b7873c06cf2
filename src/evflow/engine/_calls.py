"""Calling user code: one attempt of a step, with its time limit; sync code in threads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._codec import substitute_refs
from .._threads import run_in_daemon_thread

__all__ = ["call", "substitute"]


def substitute(decoded: Any, values: Callable[[str], Any]) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` of a decoded step argument pair, every dependency reference
    replaced by ``values(name)``."""
    args, kwargs = decoded
    return substitute_refs(args, values), substitute_refs(kwargs, values)


def call(
    func: Callable[..., Any],
    is_async: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    name: str,
    time_limit: float | None,
) -> Awaitable[Any]:
    """One attempt of step ``name``, to await, limited to ``time_limit`` seconds (the step's
    ``timeout`` option); a timeout is a ``TimeoutError`` that names the step. A sync
    ``func`` runs in a daemon worker thread that a cancelled caller abandons.

    With no limit this is the step's own coroutine: a waiting step adds no frame of ours.
    """
    if time_limit is not None:
        return _call_limited(func, is_async, args, kwargs, name, time_limit)
    if is_async:
        return func(*args, **kwargs)  # type: ignore[no-any-return]
    return run_in_daemon_thread(func, args, kwargs, name)


async def _call_limited(
    func: Callable[..., Any],
    is_async: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    name: str,
    time_limit: float,
) -> Any:
    try:
        with anyio.fail_after(time_limit):
            return await call(func, is_async, args, kwargs, name, None)
    except TimeoutError:
        raise TimeoutError(f"step {name!r} timed out after {time_limit:g} s") from None
