"""Sync step functions run in daemon worker threads that nothing ever waits for.

anyio's worker threads are not daemons, so a sync step abandoned by cancellation would
keep the interpreter from exiting until it returned. Here a canceled caller simply stops
waiting; the thread's result is discarded when it arrives, and the thread goes back to
the idle pool. Workers idle for ``IDLE_SECONDS`` exit.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ._signal import loop_notifier, new_signal

__all__ = ["run_in_daemon_thread"]

IDLE_SECONDS = 10.0

_Job = tuple[contextvars.Context, Callable[..., Any], Any, Any, list[Any], Callable[[], object]]

_idle: list[queue.SimpleQueue[_Job]] = []
_idle_lock = threading.Lock()


def _worker(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        try:
            context, func, args, kwargs, box, notify = jobs.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _idle_lock:
                if jobs in _idle:
                    _idle.remove(jobs)
                    return
            continue  # a job was handed over just as the wait timed out
        try:
            box.append((True, context.run(func, *args, **kwargs)))
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            box.append((False, exc))
        del context, func, args, kwargs
        with _idle_lock:
            _idle.append(jobs)
        try:
            notify()
        except Exception:
            pass  # the event loop is gone: nobody waits for this result any more
        del box, notify


def _submit(job: _Job, name: str) -> None:
    with _idle_lock:
        jobs = _idle.pop() if _idle else None
    if jobs is None:
        jobs = queue.SimpleQueue()
        threading.Thread(target=_worker, args=(jobs,), name="evflow step worker", daemon=True).start()
    jobs.put(job)


async def run_in_daemon_thread(func: Callable[..., Any], args: Any, kwargs: Any, name: str) -> Any:
    """Call ``func(*args, **kwargs)`` in a daemon worker thread with the caller's context vars."""
    box: list[Any] = []
    done = new_signal()
    _submit((contextvars.copy_context(), func, args, kwargs, box, partial(loop_notifier(), done.set)), name)
    await done.wait()  # a canceled caller stops waiting; the late set() then does nothing
    ok, value = box[0]
    if ok:
        return value
    raise value
