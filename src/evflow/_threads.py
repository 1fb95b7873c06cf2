"""Sync step functions run in daemon threads that nothing ever waits for.

anyio's worker threads are not daemons, so a sync step abandoned by cancellation would
keep the interpreter from exiting until it returned. Here a canceled caller simply stops
waiting; the thread's result is discarded when it arrives.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["run_in_daemon_thread"]


async def run_in_daemon_thread(func: Callable[..., Any], args: Any, kwargs: Any, name: str) -> Any:
    """Call ``func(*args, **kwargs)`` in a new daemon thread with the caller's context vars."""
    done = anyio.Event()
    outcome: list[Any] = []
    failure: list[BaseException] = []
    token = anyio.lowlevel.current_token()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            outcome.append(context.run(func, *args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            failure.append(exc)
        try:
            anyio.from_thread.run_sync(done.set, token=token)
        except Exception:
            pass  # the event loop is gone: nobody waits for this result any more

    threading.Thread(target=work, name=f"evflow step {name}", daemon=True).start()
    await done.wait()
    if failure:
        raise failure[0]
    return outcome[0]
