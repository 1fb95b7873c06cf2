"""``WorkflowHandle``: what ``run_async`` and ``resume_async`` return."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

from ._projection import WorkflowStatus

__all__ = ["WorkflowControl", "WorkflowHandle"]


class WorkflowControl(Protocol):
    """What a handle asks of its engine (``Engine`` is one)."""

    async def get_output(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any: ...

    async def cancel(self, workflow_id: str) -> None: ...

    async def get_status(self, workflow_id: str) -> WorkflowStatus: ...

    async def get_metadata(self, workflow_id: str, name: str | None = None) -> dict[str, Any]: ...


class WorkflowHandle:
    """A started workflow: ``await handle`` (or ``await handle.result()``) gives its output."""

    __slots__ = ("_engine", "workflow_id")

    def __init__(self, workflow_id: str, engine: WorkflowControl) -> None:
        self.workflow_id = workflow_id
        self._engine = engine

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id!r}>"

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the contract's name (SPEC section 9)
        """Wait for the workflow to end and return its output (raises as ``run`` does).

        ``timeout``: seconds to wait at most, then ``TimeoutError``; the workflow goes on.
        """
        return await self._engine.get_output(self.workflow_id, timeout=timeout)

    async def cancel(self) -> None:
        """Cancel the workflow."""
        await self._engine.cancel(self.workflow_id)

    async def status(self) -> WorkflowStatus:
        """The workflow's status now."""
        return await self._engine.get_status(self.workflow_id)

    async def metadata(self) -> dict[str, Any]:
        """The workflow's metadata now."""
        return await self._engine.get_metadata(self.workflow_id)
