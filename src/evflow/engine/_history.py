"""Working with history (SPEC section 11): fork a workflow from a point of its log, and
prune old finished workflows. Both are built on the core's interface only.

A fork is a new workflow whose log begins with a ``WorkflowStarted`` carrying the
source's recorded DAG and ``forked_from``, followed by copies of the ``StepFinished``
records of the steps whose output was checkpointed before the cut; it then runs like a
resume: only the steps without a copied value run, on the current code (docs/history.md).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import StoreError, WorkflowNotFoundError, WorkflowRunningError
from .._events import (
    FORMAT_VERSION,
    Event,
    EventPublished,
    ForkOrigin,
    MetadataAttached,
    StepCopy,
    StepFinished,
    StepSpec,
    StepStarted,
    WorkflowStarted,
)
from .._handle import WorkflowHandle
from .._projection import WorkflowStatus, replay
from .._step import validate_workflow_id
from ._core import EngineCore

__all__ = [
    "PRUNABLE",
    "ForkPlan",
    "clock",
    "fork_workflow",
    "plan_fork",
    "prunable_statuses",
    "prune_workflows",
]

#: The clock ``prune`` compares end times with (a test may move it; events keep theirs).
clock: Callable[[], float] = time.time

#: The statuses ``prune`` may delete: finished ones (never RUNNING, RESUMABLE or PENDING).
PRUNABLE = frozenset({WorkflowStatus.SUCCESSFUL, WorkflowStatus.FAILED, WorkflowStatus.CANCELED})


@dataclass(frozen=True)
class ForkPlan:
    """What a fork writes: its first event's fields and the events that follow it."""

    #: The last event of the source that the fork is made from.
    seq: int
    output: str | None
    steps: list[StepSpec]
    user_metadata: dict[str, Any]
    #: ``(event class, fields)`` pairs, in the order they are written after the first event.
    copies: list[tuple[type[Event], dict[str, Any]]]


def plan_fork(events: Sequence[Event], *, from_step: str | None = None, as_of: int | None = None) -> ForkPlan:
    """What a fork of the workflow with these events writes (pure; nothing is written).

    The cut: with ``as_of``, the events with ``seq <= as_of``; with ``from_step``, of those,
    the events before that step's first ``StepStarted`` of its latest execution (all of
    them when it never started). The copies are the StepFinished records, in log order,
    of the steps whose value was recorded before the cut (an output, or a continuation:
    its sub-DAG comes with it), with the source step's stats.

    Raises ``ValueError`` for an ``as_of`` outside the log or a virtual actor,
    ``StepNotFoundError`` for a step the log (up to ``as_of``) does not know.
    """
    if not events:
        raise ValueError("a fork needs a workflow with events")
    last = events[-1].seq
    source = replay(events)
    if source.kind != "workflow":
        raise ValueError(
            f"workflow {source.workflow_id!r} is a virtual actor ({source.actor_class}): an actor "
            "cannot be forked (its calls arrive from outside); create another actor instead"
        )
    if as_of is not None:
        if isinstance(as_of, bool) or not isinstance(as_of, int):
            raise TypeError(f"as_of must be an int seq, not {type(as_of).__name__}")
        if not 1 <= as_of <= last:
            raise ValueError(
                f"as_of={as_of} is outside the log of {source.workflow_id!r} (its events are seq 1 to {last})"
            )
    prefix = [event for event in events if as_of is None or event.seq <= as_of]
    if from_step is not None:
        if not isinstance(from_step, str):
            raise TypeError(f"from_step must be a step name (str), not {type(from_step).__name__}")
        replay(prefix).step(from_step)  # StepNotFoundError for a step unknown at that point
        starts = [
            e.seq for e in prefix if isinstance(e, StepStarted) and e.name == from_step and e.attempt <= 1
        ]
        if starts:
            prefix = [event for event in prefix if event.seq < starts[-1]]
    cut = replay(prefix)
    first = prefix[0]
    assert isinstance(first, WorkflowStarted)
    recorded = {
        e.name
        for e in prefix
        if isinstance(e, StepFinished) and (e.output is not None or e.continuation_output is not None)
    }
    copies: list[tuple[type[Event], dict[str, Any]]] = []
    copied: set[str] = set()
    for event in prefix:
        if isinstance(event, EventPublished) and event.step in recorded:
            # what a copied step published (set_event) stays published in the fork
            copies.append((EventPublished, {"key": event.key, "value": event.value, "step": event.step}))
            continue
        if not isinstance(event, StepFinished) or event.name in copied:
            continue
        if event.output is None and event.continuation_output is None:
            continue  # checkpoint=False: its value was never recorded, it runs again
        step = cut.steps[event.name]
        copied.add(event.name)
        fields: dict[str, Any] = {
            "name": event.name,
            "output": event.output,
            "continuation": event.continuation,
            "continuation_output": event.continuation_output,
            "copied": StepCopy(start_time=step.start_time, end_time=step.end_time, attempt=step.attempt),
        }
        copies.append((StepFinished, fields))
        if step.user_metadata != step.spec.user_metadata:  # metadata attached while it ran
            copies.append((MetadataAttached, {"metadata": dict(step.user_metadata), "step": event.name}))
    return ForkPlan(
        seq=prefix[-1].seq,
        output=first.output,
        steps=list(first.steps),
        user_metadata=dict(cut.user_metadata),
        copies=copies,
    )


async def fork_workflow(
    core: EngineCore,
    workflow_id: str,
    new_workflow_id: str | None = None,
    *,
    from_step: str | None = None,
    as_of: int | None = None,
) -> WorkflowHandle:
    """Fork ``workflow_id`` into a new workflow and start it; its handle once recorded.

    Everything is checked before anything is written: ``WorkflowNotFoundError`` for an
    unknown source, ``StepNotFoundError`` for an unknown ``from_step``, ``ValueError`` for
    an ``as_of`` outside the log, an actor, or a ``new_workflow_id`` that exists.
    """
    core.require_open()
    validate_workflow_id(workflow_id)
    new_id = validate_workflow_id(new_workflow_id) if new_workflow_id is not None else uuid.uuid4().hex
    await core.sync(workflow_id)  # WorkflowNotFoundError, CorruptLogError
    await core.store.flush(workflow_id)  # a run here may have queued events
    events = await core.store.read(workflow_id)
    if not events:
        raise WorkflowNotFoundError(workflow_id)
    plan = plan_fork(events, from_step=from_step, as_of=as_of)
    first = WorkflowStarted(
        seq=1,
        time=time.time(),
        workflow_id=new_id,
        output=plan.output,
        steps=plan.steps,
        user_metadata=plan.user_metadata,
        owner=core.engine_id,
        version=FORMAT_VERSION,
        forked_from=ForkOrigin(workflow_id=workflow_id, seq=plan.seq),
    )
    if core.store.shared:
        async with core.claiming(new_id):
            if await core.sync_known(new_id):
                raise _exists(new_id)
            try:
                state = await core.append_then_fold(None, first)
            except StoreError as exc:
                raise core.store_failure(new_id, exc) from exc
            if state is None:  # another engine created that id meanwhile
                raise _exists(new_id)
            core.emit(state, *plan.copies)
            core.start_run(state)
    else:
        if core.knows(new_id):
            raise _exists(new_id)
        try:
            state = core.create(first)
        except StoreError as exc:  # nothing was queued: the fork does not exist
            raise core.store_failure(new_id, exc) from exc
        core.emit(state, *plan.copies)
        core.start_run(state)
    await core.flush_start(new_id)
    return core.handle(new_id)


def _exists(workflow_id: str) -> ValueError:
    return ValueError(
        f"workflow {workflow_id!r} already exists: choose another new_workflow_id for the fork "
        "(or delete that workflow first)"
    )


def prunable_statuses(statuses: Iterable[WorkflowStatus | str] | WorkflowStatus | str) -> set[WorkflowStatus]:
    """The statuses as a set; ``ValueError`` for an unknown one or one that is not finished."""
    items: Iterable[WorkflowStatus | str] = [statuses] if isinstance(statuses, str) else statuses
    out: set[WorkflowStatus] = set()
    for item in items:
        try:
            status = WorkflowStatus(item.upper() if isinstance(item, str) else item)
        except ValueError:
            raise ValueError(f"unknown status {item!r}; prune deletes {sorted(PRUNABLE)}") from None
        if status not in PRUNABLE:
            raise ValueError(
                f"prune never deletes a {status.value} workflow: only finished ones "
                f"({', '.join(sorted(PRUNABLE))})"
            )
        out.add(status)
    return out


async def prune_workflows(
    core: EngineCore,
    delete: Callable[[str], Awaitable[None]],
    *,
    older_than: float,
    statuses: Iterable[WorkflowStatus | str] | WorkflowStatus | str = ("SUCCESSFUL",),
) -> list[str]:
    """Delete (with ``delete``, the engine's own) every finished workflow with one of
    ``statuses`` whose end is more than ``older_than`` seconds ago; return their ids.

    The end is ``end_time``, or for a CANCELED workflow (which has none) the time of its
    last event. Never a workflow that runs (here or, on a shared store, elsewhere), and
    never a virtual actor (an idle actor reports SUCCESSFUL: it is not finished).
    """
    if isinstance(older_than, bool) or not isinstance(older_than, int | float):
        raise TypeError(f"older_than must be a number of seconds, not {type(older_than).__name__}")
    if not 0 <= older_than < math.inf:
        raise ValueError(f"older_than must be a finite number of seconds >= 0, got {older_than!r}")
    wanted = prunable_statuses(statuses)
    core.require_open()
    cutoff = clock() - older_than
    if core.store.shared:
        for wid in await core.store.list_workflows():
            if core.run_of(wid) is None:
                await core.sync_known(wid)
    pruned: list[str] = []
    for wid, state in core.states():
        if state.kind != "workflow" or core.run_of(wid) is not None or state.status not in wanted:
            continue
        end = state.end_time
        if end is None:  # CANCELED: the time of its last event
            tail = await core.store.read(wid, state.last_seq - 1)
            if not tail:
                continue
            end = tail[-1].time
        if end >= cutoff:
            continue
        try:
            await delete(wid)
        except (WorkflowRunningError, WorkflowNotFoundError):
            continue  # resumed or deleted meanwhile
        pruned.append(wid)
    return pruned
