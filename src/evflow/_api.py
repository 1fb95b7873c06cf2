"""Module-level functions that act on the current engine, and ``WorkflowHandle``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._context import current_step
from ._projection import WorkflowStatus
from ._step import validate_metadata
from .engine import StatusFilter, WorkflowHandle, current_engine

__all__ = [
    "WorkflowHandle",
    "attach_metadata",
    "cancel",
    "delete",
    "fork",
    "get_actor",
    "get_metadata",
    "get_output",
    "get_status",
    "list_all",
    "prune",
    "resume",
    "resume_all",
    "resume_async",
]


async def get_output(workflow_id: str, *, name: str | None = None) -> Any:
    """Wait for the workflow (or its step ``name``) to end and return its value."""
    return await current_engine().get_output(workflow_id, name=name)


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
    ctx = current_step.get()
    if ctx is None:
        raise RuntimeError("evflow.attach_metadata() can only be called inside a running step")
    checked = validate_metadata(metadata, f"attach_metadata in step {ctx.name!r}")
    engine = ctx.engine
    if engine.in_event_loop_thread():
        engine.attach_metadata_nowait(ctx.workflow_id, ctx.name, checked)
    else:
        import anyio.from_thread

        anyio.from_thread.run_sync(
            engine.attach_metadata_nowait, ctx.workflow_id, ctx.name, checked, token=engine.loop_token
        )
