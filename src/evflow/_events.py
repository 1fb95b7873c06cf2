"""The event log's schema: one tagged union of frozen msgspec Structs.

Every state change of a workflow is one of these facts, appended to that workflow's log
with a per-workflow sequence number (``seq``, from 1, no gaps) and a ``time.time()``
timestamp. The projection (``_projection.py``) folds them into status, metadata and stats.

Schema evolution (see docs/event-log.md): a tag (class name) is never renamed or reused,
new fields go last and carry a default, and ``FORMAT_VERSION`` is bumped when a reader
would need to know. Old logs stay readable because decoding ignores nothing it needs.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = [
    "EVENT_TYPES",
    "FORMAT_VERSION",
    "ActorCallSubmitted",
    "AnyEvent",
    "ErrorInfo",
    "Event",
    "EventPublished",
    "ForkOrigin",
    "MessageReceived",
    "MetadataAttached",
    "StepFailed",
    "StepFinished",
    "StepOptions",
    "StepSpec",
    "StepCopy",
    "StepStarted",
    "TimerStarted",
    "WorkflowCanceled",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowStarted",
]

#: Version of the log format written by this release. Readers accept every version up to it.
#: 2: durable time (the ``SLEEP`` step type, ``TimerStarted``), ``EventPublished``, the
#: ``WAIT`` step type; messages (``MessageReceived``, the ``EVENT`` step type and
#: ``StepFinished.consumed``).
FORMAT_VERSION = 2

StepType: TypeAlias = Literal["FUNCTION", "ACTOR_METHOD", "SLEEP", "WAIT", "EVENT"]

# Every struct here is created with gc=False: the cyclic garbage collector does not track
# them. They are frozen and hold only data (strings, numbers, bytes, JSON-like metadata,
# other such structs), so they can never be part of a reference cycle; tracking tens of
# thousands of them made each full collection walk them all (measured: 2,000 concurrent
# workflows ran ~1.5x faster without GC, see docs/performance.md).


class StepOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """A step's effective options as recorded (user metadata is kept on the spec)."""

    name: str
    step_type: StepType = "FUNCTION"
    max_retries: int = 3
    retry_delay: float = 0.0
    catch_exceptions: bool = False
    timeout: float | None = None
    checkpoint: bool = True


class StepSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One recorded node of a DAG.

    ``args`` is the encoded ``(args, kwargs)`` pair in which every dependency is a
    reference to another step's ``name``; ``deps`` lists those names once each, in
    argument order. ``options.name`` is the base name, ``name`` the unique one assigned.
    """

    name: str
    func: str
    args: bytes
    options: StepOptions
    deps: list[str] = []
    user_metadata: dict[str, Any] = {}


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """A recorded exception: enough to show it anywhere and rebuild its type where possible."""

    type: str
    message: str
    args: bytes | None = None
    pickled: bytes | None = None
    traceback: str = ""


class ForkOrigin(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where a forked workflow comes from: the source workflow and the last of its events
    the fork was made from (``evflow.fork``)."""

    workflow_id: str
    seq: int


class StepCopy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The stats of a step whose StepFinished a fork copied from its source: the copy
    keeps them, as a resume keeps a checkpointed step's."""

    start_time: float | None = None
    end_time: float | None = None
    attempt: int = 1


class Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag=True, gc=False
):
    """Base of every event: position in the workflow's log and when it happened."""

    seq: int
    time: float


class WorkflowStarted(Event, frozen=True):
    """A run or resume of the workflow began.

    The first one (``resume=False``) carries the recorded DAG (``steps``, output step
    ``output``) and the workflow's user metadata. ``kind`` is ``"workflow"`` or
    ``"actor"``; an actor's first event also names its class and initial state.
    ``owner`` is the id of the engine that runs this run: while the log says RUNNING, the
    workflow is RESUMABLE unless that engine is alive. A fork's first event names its
    source in ``forked_from``.

    A first event with ``pending=True`` records the workflow ``PENDING`` (queued, not
    started; its ``owner`` is the engine that recorded it): the run starts with a later
    ``WorkflowStarted(resume=True)``. ``queue`` (None: the engine's own limit),
    ``priority`` and ``dedup_id`` say where it waits; ``deadline`` (epoch seconds, also
    on a workflow that is not pending) is when it is canceled if it has not ended.
    """

    workflow_id: str
    resume: bool = False
    output: str | None = None
    steps: list[StepSpec] = []
    user_metadata: dict[str, Any] = {}
    kind: Literal["workflow", "actor"] = "workflow"
    actor_class: str | None = None
    actor_state: bytes | None = None
    version: int = 1
    owner: str | None = None
    forked_from: ForkOrigin | None = None
    pending: bool = False
    queue: str | None = None
    priority: int = 0
    dedup_id: str | None = None
    deadline: float | None = None


class StepStarted(Event, frozen=True):
    """An attempt of a step began (``attempt`` counts from 1 within one execution)."""

    name: str
    attempt: int = 1


class StepFinished(Event, frozen=True):
    """A step returned.

    Exactly one of: ``output`` (the encoded value; absent when ``checkpoint=False``) or
    a continuation, ``continuation`` (the sub-DAG's specs, recorded in this same event)
    whose output node ``continuation_output`` gives this step its value. An actor's writer
    step also records the actor's new ``actor_state``. A fork's copy of its source's
    StepFinished carries the source step's stats in ``copied``. An ``EVENT`` step that
    took a message records its ``seq`` as ``consumed``: the message is consumed with
    this event.
    """

    name: str
    output: bytes | None = None
    continuation: list[StepSpec] = []
    continuation_output: str | None = None
    actor_state: bytes | None = None
    copied: StepCopy | None = None
    consumed: int | None = None


class StepFailed(Event, frozen=True):
    """An attempt of a step raised (or timed out); ``will_retry`` says if another follows."""

    name: str
    attempt: int
    will_retry: bool
    error: ErrorInfo


class WorkflowFinished(Event, frozen=True):
    """The workflow's output step has its value: the run ended SUCCESSFUL.

    ``output`` is set only when the output step's value was not checkpointed
    (``checkpoint=False``): a workflow's own output is always recorded.
    """

    output: bytes | None = None


class WorkflowFailed(Event, frozen=True):
    """The run ended FAILED because ``step`` failed for good."""

    error: ErrorInfo
    step: str | None = None


class WorkflowCanceled(Event, frozen=True):
    """The workflow was canceled; running steps were stopped."""


class MetadataAttached(Event, frozen=True):
    """User metadata merged into a running step (``step``) or the workflow (``step=None``)."""

    metadata: dict[str, Any]
    step: str | None = None


class ActorCallSubmitted(Event, frozen=True):
    """A writer call on a virtual actor was submitted; it runs after the earlier ones."""

    step: StepSpec


class TimerStarted(Event, frozen=True):
    """A durable timer of step ``name`` started: the step wakes at ``wake_time`` (epoch
    seconds). Recorded once, when the step first starts; a resumed step waits only for
    what is left of it."""

    name: str
    wake_time: float


class EventPublished(Event, frozen=True):
    """Running step ``step`` published ``value`` (an encoded value) under ``key``
    (``evflow.set_event``); a later one with the same key replaces it."""

    key: str
    value: bytes
    step: str | None = None


class MessageReceived(Event, frozen=True):
    """A message on ``topic`` (``evflow.send``) arrived; ``payload`` is an encoded value.

    It waits, unconsumed, until an ``EVENT`` step takes it (``StepFinished.consumed``).
    A message whose ``idempotency_key`` (or, moved from a shared store's mailbox, whose
    ``mailbox_id``) an earlier one of this workflow carried is a duplicate: the fold
    ignores it.
    """

    topic: str
    payload: bytes
    idempotency_key: str | None = None
    mailbox_id: int | None = None


AnyEvent: TypeAlias = (
    WorkflowStarted
    | StepStarted
    | StepFinished
    | StepFailed
    | WorkflowFinished
    | WorkflowFailed
    | WorkflowCanceled
    | MetadataAttached
    | ActorCallSubmitted
    | TimerStarted
    | EventPublished
    | MessageReceived
)

#: Every event class by its tag (the ``type`` field of the encoded form).
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        WorkflowStarted,
        StepStarted,
        StepFinished,
        StepFailed,
        WorkflowFinished,
        WorkflowFailed,
        WorkflowCanceled,
        MetadataAttached,
        ActorCallSubmitted,
        TimerStarted,
        EventPublished,
        MessageReceived,
    )
}
