"""The one rule for ``WorkflowState.live``: whether a live engine runs the workflow now.

The log cannot say it (a process may die at any time): a workflow the log leaves going
(its run RUNNING, or an actor with calls waiting) is live only while the engine that
recorded its latest ``WorkflowStarted`` (its ``owner``) is alive and using the store;
otherwise it reports RESUMABLE. The engine and the read-only tools (``_replay.py``, the
CLI) all decide it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._projection import WorkflowState, WorkflowStatus

if TYPE_CHECKING:
    from .stores import Store

__all__ = ["is_left_running", "owner_is_live"]


def is_left_running(state: WorkflowState) -> bool:
    """Whether the log leaves the workflow going: only then does ``live`` matter."""
    return state.run_status is WorkflowStatus.RUNNING or bool(state.actor_calls)


async def owner_is_live(
    store: Store, state: WorkflowState, *, engine_id: str | None = None, runs_here: bool = False
) -> bool:
    """The ``live`` flag for a folded workflow.

    ``engine_id``: the asking engine's id; a workflow it owns is live exactly when it
    ``runs_here`` (no need to ask the store about ourselves). Any other owner is asked
    of the store (``Store.owner_alive``), which may do I/O on a shared store.
    """
    if not is_left_running(state):
        return False
    if engine_id is not None and state.owner == engine_id:
        return runs_here
    return await store.owner_alive(state.owner)
