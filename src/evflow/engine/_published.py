"""Published events (``evflow.set_event`` / ``get_event``): a workflow's latest value per
key, recorded by its running steps as ``EventPublished`` and folded into its state.

Only the engine that runs a workflow records them (from inside a step), so any engine may
read them: on a shared store another engine's are read from the store as they arrive.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio

from .._codec import decode_value
from .._projection import WorkflowStatus

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["MAX_EVENT_KEY_LENGTH", "check_event_key", "get_event"]

MAX_EVENT_KEY_LENGTH = 256


def check_event_key(key: Any, where: str) -> str:
    """An event key: a non-empty ``str`` of at most 256 characters (``ValueError``;
    ``TypeError`` for a non-str)."""
    if not isinstance(key, str):
        raise TypeError(f"{where}: the key must be a str, not {type(key).__name__}")
    if not key or len(key) > MAX_EVENT_KEY_LENGTH:
        raise ValueError(f"{where}: the key must be 1 to {MAX_EVENT_KEY_LENGTH} characters long, got {key!r}")
    return key


def _check_timeout(timeout: Any, where: str) -> float:
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{where}: timeout must be None or a number of seconds, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{where}: timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


async def get_event(core: EngineCore, workflow_id: str, key: str, timeout: float | None) -> Any:  # noqa: ASYNC109 - the contract's name; None at the timeout
    """The value last published under ``key`` by the workflow; waits until one is, for at
    most ``timeout`` seconds (None: no limit), then returns None.

    A workflow (not an actor) that ended SUCCESSFUL without publishing the key returns
    None at once: nothing more runs in it. Raises ``WorkflowNotFoundError``.
    """
    where = f"get_event({workflow_id!r}, {key!r})"
    check_event_key(key, where)
    limit = _check_timeout(timeout, where)
    with anyio.move_on_after(limit):
        while True:
            state = await core.sync(workflow_id)
            event = state.published.get(key)
            if event is not None:
                return decode_value(event.value, allow_pickle=core.allow_pickle)
            if state.kind == "workflow" and state.run_status is WorkflowStatus.SUCCESSFUL:
                return None
            if core.store.shared and core.run_of(workflow_id) is None:
                # run by another engine (or none): its events arrive through the store
                with anyio.move_on_after(1.0):
                    await core.store.wait_for_events(workflow_id, state.last_seq)
            else:
                await core.wait_change(workflow_id)
    return None
