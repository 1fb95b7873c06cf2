"""Module-level functions that act on the current engine, and ``WorkflowHandle``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._codec import encode_value
from ._context import running_step
from ._projection import WorkflowStatus
from ._step import validate_metadata
from .engine import StatusFilter, WorkflowHandle, check_event_key, current_engine

__all__ = [
    "WorkflowHandle",
    "attach_metadata",
    "cancel",
    "delete",
    "fork",
    "get_actor",
    "get_current_attempt",
    "get_current_step_name",
    "get_current_workflow_id",
    "get_event",
    "get_metadata",
    "get_output",
    "get_status",
    "list_all",
    "prune",
    "resume",
    "resume_all",
    "resume_async",
    "send",
    "set_event",
]


async def get_output(workflow_id: str, *, name: str | None = None, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    """Wait for the workflow (or its step ``name``) to end and return its value; with
    ``timeout``, ``TimeoutError`` after that many seconds (the workflow goes on)."""
    return await current_engine().get_output(workflow_id, name=name, timeout=timeout)


async def get_status(workflow_id: str) -> WorkflowStatus:
    """The workflow's ``WorkflowStatus``; raises ``WorkflowNotFoundError``."""
    return await current_engine().get_status(workflow_id)


async def get_metadata(workflow_id: str, name: str | None = None) -> dict[str, Any]:
    """Metadata of the workflow or of its step ``name`` (see docs/metadata.md)."""
    return await current_engine().get_metadata(workflow_id, name)


async def list_all(status_filter: StatusFilter = None) -> list[tuple[str, WorkflowStatus]]:
    """``[(workflow_id, status)]``; filter by a status, its string, or a set of them."""
    return await current_engine().list_all(status_filter)


async def resume(workflow_id: str) -> Any:
    """Resume the workflow and return its output."""
    return await current_engine().resume(workflow_id)


async def resume_async(workflow_id: str) -> WorkflowHandle:
    """Resume the workflow and return its handle."""
    return await current_engine().resume_async(workflow_id)


async def resume_all(include_failed: bool = False) -> list[tuple[str, WorkflowHandle]]:
    """Resume every RESUMABLE (and, if asked, FAILED) workflow."""
    return await current_engine().resume_all(include_failed)


async def cancel(workflow_id: str) -> None:
    """Cancel the workflow: running steps are stopped and it becomes CANCELED."""
    await current_engine().cancel(workflow_id)


async def delete(workflow_id: str) -> None:
    """Delete the workflow and its log."""
    await current_engine().delete(workflow_id)


async def fork(
    workflow_id: str,
    new_workflow_id: str | None = None,
    *,
    from_step: str | None = None,
    as_of: int | None = None,
) -> WorkflowHandle:
    """Fork the workflow from ``from_step`` (or event ``as_of``): a new workflow reusing the
    outputs checkpointed before that point; returns its handle (see ``Engine.fork``)."""
    return await current_engine().fork(workflow_id, new_workflow_id, from_step=from_step, as_of=as_of)


async def prune(
    older_than: float,
    statuses: Iterable[WorkflowStatus | str] | WorkflowStatus | str = ("SUCCESSFUL",),
) -> int:
    """Delete finished workflows that ended more than ``older_than`` seconds ago; the count."""
    return await current_engine().prune(older_than, statuses)


async def get_actor(actor_id: str) -> Any:
    """A handle on an existing virtual actor; raises ``WorkflowNotFoundError``."""
    return await current_engine().get_actor(actor_id)


def attach_metadata(metadata: dict[str, Any]) -> None:
    """Merge user metadata into the running step (sync or async); never blocks.

    Raises ``RuntimeError`` outside a running step, ``ValueError`` for bad metadata.
    """
    ctx = running_step("attach_metadata")
    checked = validate_metadata(metadata, f"attach_metadata in step {ctx.name!r}")
    engine = ctx.engine
    if engine.in_event_loop_thread():
        engine.attach_metadata_nowait(ctx.workflow_id, ctx.name, checked)
    else:
        import anyio.from_thread

        anyio.from_thread.run_sync(
            engine.attach_metadata_nowait, ctx.workflow_id, ctx.name, checked, token=engine.loop_token
        )


def get_current_workflow_id() -> str:
    """The id of the workflow whose step is running (sync or async); never blocks.

    Raises ``RuntimeError`` outside a running step. With ``get_current_step_name`` it
    makes an idempotency key for an external call that stays the same across retries
    and resumes.
    """
    return running_step("get_current_workflow_id").workflow_id


def get_current_step_name() -> str:
    """The unique name of the running step; ``RuntimeError`` outside a running step."""
    return running_step("get_current_step_name").name


def get_current_attempt() -> int:
    """The running step's attempt: 1 for the first, 2 for the first retry, ...

    Counts within one execution (a resumed step starts again at 1, as ``StepStarted``
    records it). Raises ``RuntimeError`` outside a running step.
    """
    return running_step("get_current_attempt").attempt


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` under ``key`` from the running step (sync or async); never blocks.

    The latest value of a key wins; ``get_event`` reads it from anywhere, also from
    another engine on a shared store once the record is durable (at the latest when the
    step ends). The value is encoded like a step output (``allow_pickle`` respected)
    before anything is recorded. Raises ``RuntimeError`` outside a running step,
    ``TypeError``/``ValueError`` for a bad key, ``UnencodableError`` for a value the log
    cannot hold.
    """
    ctx = running_step("set_event")
    where = f"set_event in step {ctx.name!r}"
    check_event_key(key, where)
    engine = ctx.engine
    encoded = encode_value(
        value, allow_pickle=engine.allow_pickle, what=f"the value of event {key!r} ({where})"
    )
    if engine.in_event_loop_thread():
        engine.publish_nowait(ctx.workflow_id, ctx.name, key, encoded)
    else:
        import anyio.from_thread

        anyio.from_thread.run_sync(
            engine.publish_nowait, ctx.workflow_id, ctx.name, key, encoded, token=engine.loop_token
        )


async def get_event(workflow_id: str, key: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the contract's name; None at the timeout
    """The value the workflow last published under ``key``; if none yet, waits for one
    for at most ``timeout`` seconds (None: no limit) and returns None at the timeout.

    A workflow that ended SUCCESSFUL without publishing the key gives None at once.
    Raises ``WorkflowNotFoundError``, ``TypeError``/``ValueError`` for a bad key or timeout.
    """
    return await current_engine().get_event(workflow_id, key, timeout)


async def send(workflow_id: str, topic: str, payload: Any, *, idempotency_key: str | None = None) -> None:
    """Record a message on ``topic`` in the workflow's log, durably, before returning;
    ``evflow.wait_for_event(topic)`` consumes it (the oldest unconsumed first).

    The same ``idempotency_key`` for the same workflow is recorded once. Raises
    ``WorkflowNotFoundError``, ``WorkflowNotRunningError`` for a finished workflow, and
    ``TypeError``/``ValueError``/``UnencodableError`` for a bad topic or payload, before
    anything is written.
    """
    await current_engine().send(workflow_id, topic, payload, idempotency_key=idempotency_key)
