"""The projection: status, metadata and stats folded from a workflow's events.

``apply(state, event)`` is the whole fold: pure (no I/O, no await, no clock), O(1) per
event except the terminal ones, and the only code that computes status. The engine applies
it to each event it appends; ``replay(events)`` applies it from scratch, so any past state
can be recomputed from a prefix of the log.

Whether an engine *owns* a workflow is not in the log; it is the ``live`` flag the caller
sets. A workflow the log says is RUNNING but which no live engine owns reports RESUMABLE.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import msgspec

from ._errors import StepNotFoundError
from ._events import (
    FORMAT_VERSION,
    ActorCallSubmitted,
    ErrorInfo,
    Event,
    EventPublished,
    ForkOrigin,
    MessageReceived,
    MetadataAttached,
    StepFailed,
    StepFinished,
    StepSpec,
    StepStarted,
    TimerStarted,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)

__all__ = [
    "StepState",
    "StepStatus",
    "WorkflowState",
    "WorkflowStatus",
    "allocate_names",
    "apply",
    "fold",
    "replay",
]


class WorkflowStatus(StrEnum):
    """Status of a workflow (a ``str``: ``status == "SUCCESSFUL"`` holds)."""

    RUNNING = "RUNNING"
    FAILED = "FAILED"
    RESUMABLE = "RESUMABLE"
    CANCELED = "CANCELED"
    SUCCESSFUL = "SUCCESSFUL"
    #: Recorded and durable, not started yet: waiting for room in its queue (section 9).
    PENDING = "PENDING"


class StepStatus(StrEnum):
    """Status of one step."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESSFUL = "SUCCESSFUL"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    RESUMABLE = "RESUMABLE"


_NO_CALLS: deque[str] = deque(maxlen=0)
#: The shared empty ``published`` of every workflow that never published (never mutated).
_NO_PUBLISHED: dict[str, EventPublished] = {}
#: The shared empty ``inbox`` of every workflow that never received a message (never mutated).
_NO_INBOX: dict[str, dict[int, MessageReceived]] = {}
_NO_IDS: set[str | int] = set()


class StepState(msgspec.Struct, gc=False, eq=False):
    """Folded state of one recorded step.

    Not tracked by the cyclic garbage collector (it never refers back to anything that
    refers to it), and neither, therefore, is a workflow's ``steps`` dict: what a full
    collection walks for a finished workflow is its ``WorkflowState`` and the ``deps``
    lists of its recorded specs, not a state, a set and a dict per workflow besides.
    """

    spec: StepSpec
    parent: str | None
    #: Shared with the spec until metadata is attached: the fold never changes it in place.
    user_metadata: dict[str, Any]
    status: StepStatus = StepStatus.PENDING
    start_time: float | None = None
    end_time: float | None = None
    attempt: int = 0
    #: StepFinished seen (in any run); its value is ``output`` or the continuation's.
    finished: bool = False
    output: bytes | None = None
    continuation_output: str | None = None
    error: ErrorInfo | None = None
    #: When a durable timer of the step fires (``TimerStarted``); kept across resumes.
    wake_time: float | None = None
    #: The seq of the message an ``EVENT`` step consumed (``StepFinished.consumed``).
    consumed: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class WorkflowState:
    """Folded state of one workflow; ``metadata()`` gives the ``get_metadata`` dicts."""

    __slots__ = (
        "_output_tail",
        "actor_calls",
        "actor_class",
        "actor_state",
        "canceled_time",
        "counters",
        "deadline",
        "dedup_id",
        "end_time",
        "error",
        "failed_step",
        "final_output",
        "forked_from",
        "inbox",
        "kind",
        "last_seq",
        "live",
        "message_ids",
        "output",
        "owner",
        "priority",
        "published",
        "queue",
        "queued_time",
        "run_status",
        "running",
        "start_time",
        "steps",
        "user_metadata",
        "version",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, *, live: bool = True) -> None:
        self.workflow_id = workflow_id
        self.live = live
        self.kind = "workflow"
        self.run_status = WorkflowStatus.RUNNING
        self.user_metadata: dict[str, Any] = {}
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.steps: dict[str, StepState] = {}
        self.output: str | None = None
        #: The output value when the output step itself was not checkpointed.
        self.final_output: bytes | None = None
        self.counters: dict[str, int] = {}
        self.last_seq = 0
        self.version = 0
        self.error: ErrorInfo | None = None
        self.failed_step: str | None = None
        #: The steps started and not ended, as dict keys (values None): a dict of strings
        #: is not tracked by the cyclic garbage collector, a set always is.
        self.running: dict[str, None] = {}
        #: The engine that recorded the latest WorkflowStarted (it runs the workflow).
        self.owner: str | None = None
        self.actor_class: str | None = None
        self.actor_state: bytes | None = None
        #: Actor writer calls submitted and not yet finished, in submission order (a
        #: shared empty deque until the first call: plain workflows never have any).
        self.actor_calls: deque[str] = _NO_CALLS
        #: The latest ``EventPublished`` of each key (``evflow.set_event``), in first-set order.
        self.published: dict[str, EventPublished] = _NO_PUBLISHED
        #: The source of a forked workflow (``evflow.fork``), from its first event.
        self.forked_from: ForkOrigin | None = None
        #: Where the workflow waits or waited (None: the engine's own limit), if queued.
        self.queue: str | None = None
        self.priority = 0
        self.dedup_id: str | None = None
        #: When it was recorded PENDING (None: it never was).
        self.queued_time: float | None = None
        #: When it is canceled if it has not ended (its ``timeout=``), epoch seconds.
        self.deadline: float | None = None
        #: When the latest WorkflowCanceled was recorded.
        self.canceled_time: float | None = None
        #: The unconsumed messages (``MessageReceived``) per topic, oldest first, by seq
        #: (a shared empty dict until the first message).
        self.inbox: dict[str, dict[int, MessageReceived]] = _NO_INBOX
        #: The idempotency keys (``str``) and mailbox ids (``int``) of every message
        #: received, consumed or not: a later message with one of them is a duplicate.
        self.message_ids: set[str | int] = _NO_IDS
        #: How far ``value_source(output)`` got along the chain of continuations: the last
        #: finished step it reached (finished steps stay finished, so it only moves on).
        self._output_tail: tuple[str, str] | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def status(self) -> WorkflowStatus:
        """The status now: RESUMABLE when the log says RUNNING but no live engine owns it.

        An actor with submitted calls not yet run counts as RUNNING whatever its last run
        ended with (a crash may fall between one run's end and the next one's start).
        """
        status = self.run_status
        if self.actor_calls and status is not WorkflowStatus.CANCELED:
            status = WorkflowStatus.RUNNING
        if status is WorkflowStatus.RUNNING and not self.live:
            return WorkflowStatus.RESUMABLE
        return status

    @property
    def timed_out(self) -> bool:
        """Whether it is CANCELED because its deadline passed (canceled at or after it)."""
        return (
            self.run_status is WorkflowStatus.CANCELED
            and self.deadline is not None
            and self.canceled_time is not None
            and self.canceled_time >= self.deadline
        )

    def step_status(self, step: StepState) -> StepStatus:
        if step.status is StepStatus.RUNNING and not self.live:
            return StepStatus.RESUMABLE
        return step.status

    def step(self, name: str) -> StepState:
        """The named step; raises ``StepNotFoundError``."""
        try:
            return self.steps[name]
        except KeyError:
            raise StepNotFoundError(self.workflow_id, name) from None

    def value_source(self, name: str) -> StepState | None:
        """The step whose recorded output is the value of step ``name``, following
        continuations; None while that value is not known."""
        steps = self.steps
        tail = self._output_tail if name == self.output else None
        step = steps.get(tail[1] if tail is not None and tail[0] == name else name)
        reached = None
        while step is not None and step.finished:
            if step.continuation_output is None:
                reached = step
                break
            reached = step
            step = steps.get(step.continuation_output)
        else:
            step = None
        if reached is not None and name == self.output and (tail is None or tail[1] != reached.spec.name):
            # A long chain is walked once, not once per step (which made a chain quadratic).
            self._output_tail = (name, reached.spec.name)
        return step

    def metadata(self, name: str | None = None) -> dict[str, Any]:
        """``get_metadata`` for the workflow, or for step ``name``."""
        if name is not None:
            return self._step_metadata(self.step(name))
        out: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "status": self.status.value,
            "user_metadata": _copy_json(self.user_metadata),
            "stats": _stats(self.start_time, self.end_time),
        }
        if self.live and self.owner is not None and out["status"] == "RUNNING":
            out["engine_id"] = self.owner  # the engine that runs it now
        if self.forked_from is not None:
            origin = self.forked_from
            out["forked_from"] = {"workflow_id": origin.workflow_id, "seq": origin.seq}
        if self.published:
            # Where and when each key was last set; the values are read with get_event
            # (they may be any encoded value, not JSON).
            out["published"] = {
                key: {"seq": e.seq, "time": e.time, **({"step": e.step} if e.step is not None else {})}
                for key, e in self.published.items()
            }
        if self.queued_time is not None:
            out["queue"] = self.queue
            out["stats"]["queued_time"] = self.queued_time
        if self.deadline is not None:
            out["deadline"] = self.deadline
        return out

    def _step_metadata(self, step: StepState) -> dict[str, Any]:
        opts = step.spec.options
        return {
            "name": step.name,
            "workflow_id": self.workflow_id,
            "status": self.step_status(step).value,
            "step_options": {
                "step_type": opts.step_type,
                "name": opts.name,
                "max_retries": opts.max_retries,
                "retry_delay": opts.retry_delay,
                "catch_exceptions": opts.catch_exceptions,
                "timeout": opts.timeout,
                "checkpoint": opts.checkpoint,
            },
            "user_metadata": _copy_json(step.user_metadata),
            "stats": _step_stats(step),
        }

    # -- folding helpers -------------------------------------------------------------------

    def _register(self, specs: Iterable[StepSpec], parent: str | None) -> None:
        for spec in specs:
            self.steps[spec.name] = StepState(spec, parent, spec.user_metadata)
            base = spec.options.name
            index = _name_index(base, spec.name)
            if index >= self.counters.get(base, 0):
                self.counters[base] = index + 1

    def _receive(self, event: MessageReceived) -> None:
        ids = [i for i in (event.idempotency_key, event.mailbox_id) if i is not None]
        if any(i in self.message_ids for i in ids):
            return  # a duplicate: recorded once already
        if ids:
            if self.message_ids is _NO_IDS:
                self.message_ids = set()
            self.message_ids.update(ids)
        if self.inbox is _NO_INBOX:
            self.inbox = {}
        self.inbox.setdefault(event.topic, {})[event.seq] = event

    def _consume(self, step: StepState, seq: int) -> None:
        for topic, waiting in self.inbox.items():
            if waiting.pop(seq, None) is not None:
                if not waiting:
                    del self.inbox[topic]
                step.consumed = seq
                return
        raise ValueError(f"step {step.name!r} consumes message seq {seq}, which is no unconsumed message")

    def oldest_message(
        self, topic: str, skip: set[int] | frozenset[int] = frozenset()
    ) -> MessageReceived | None:
        """The oldest unconsumed message on ``topic`` whose seq is not in ``skip``."""
        for seq, message in self.inbox.get(topic, {}).items():
            if seq not in skip:
                return message
        return None

    def _stop_running(self, status: StepStatus) -> None:
        for name in self.running:
            self.steps[name].status = status
        self.running.clear()

    def _end_actor_call(self) -> None:
        # An actor's run is one writer call, the head of the queue (its ``output``); the
        # call ends with the run, not with its StepFinished, which may be a continuation.
        if self.actor_calls and self.actor_calls[0] == self.output:
            self.actor_calls.popleft()


def _stats(start_time: float | None, end_time: float | None) -> dict[str, float]:
    """The ``stats`` dict: only the times that are known now."""
    stats: dict[str, float] = {}
    if start_time is not None:
        stats["start_time"] = start_time
    if end_time is not None:
        stats["end_time"] = end_time
    return stats


def _step_stats(step: StepState) -> dict[str, float]:
    """A step's ``stats``: its times, a waiting step's ``wake_time`` once recorded, and
    the ``seq`` of the message an event step consumed once it ended."""
    stats = _stats(step.start_time, step.end_time)
    if step.wake_time is not None:
        stats["wake_time"] = step.wake_time
    if step.consumed is not None:
        stats["seq"] = step.consumed
    return stats


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars), so callers cannot change the state."""
    t = type(value)
    if t is dict:
        return {k: _copy_json(v) for k, v in value.items()}
    if t is list:
        return [_copy_json(v) for v in value]
    return value


def _name_index(base: str, name: str) -> int:
    if name == base:
        return 0
    suffix = name[len(base) + 1 :]
    return int(suffix) if name.startswith(base + "_") and suffix.isdigit() else 0


def allocate_names(state: WorkflowState | None, bases: list[str]) -> list[str]:
    """Unique names for new steps with these base names, in order (pure).

    The first use of a base gets it raw, later ones ``base_1``, ``base_2``, ... skipping
    any name already taken; the counters come from the log, so names are stable.
    """
    counters = dict(state.counters) if state is not None else {}
    taken = state.steps if state is not None else {}
    fresh: set[str] = set()
    names = []
    for base in bases:
        k = counters.get(base, 0)
        while True:
            candidate = base if k == 0 else f"{base}_{k}"
            if candidate not in taken and candidate not in fresh:
                break
            k += 1
        counters[base] = k + 1
        fresh.add(candidate)
        names.append(candidate)
    return names


def apply(state: WorkflowState | None, event: Event) -> WorkflowState:
    """Fold one event into ``state`` (None before the first event) and return the state.

    Mutates ``state`` in place so that folding a log is O(events).
    Raises ``ValueError`` for an event that cannot follow the state.
    """
    if state is None:
        if not isinstance(event, WorkflowStarted):
            raise ValueError(f"a log must begin with WorkflowStarted, not {type(event).__name__}")
        state = WorkflowState(event.workflow_id)
    if event.seq != state.last_seq + 1:
        raise ValueError(f"event seq {event.seq} does not follow seq {state.last_seq}")
    state.last_seq = event.seq
    t = event.time
    if isinstance(event, StepStarted):
        step = state.step(event.name)
        step.status = StepStatus.RUNNING
        step.attempt = event.attempt
        if event.attempt <= 1:
            step.start_time = t
            step.end_time = None
        state.running[event.name] = None
    elif isinstance(event, StepFinished):
        step = state.step(event.name)
        if step.finished:  # finished again (its earlier end was cut off): walk afresh
            state._output_tail = None
        step.status = StepStatus.SUCCESSFUL
        step.end_time = t
        step.finished = True
        step.error = None
        step.output = event.output
        step.continuation_output = event.continuation_output
        state.running.pop(event.name, None)
        if event.continuation:
            state._register(event.continuation, event.name)
        if event.actor_state is not None:
            state.actor_state = event.actor_state
        if event.copied is not None:  # a fork's copy keeps the source step's stats
            step.start_time = event.copied.start_time
            if event.copied.end_time is not None:
                step.end_time = event.copied.end_time
            step.attempt = event.copied.attempt
        if event.consumed is not None:
            state._consume(step, event.consumed)
    elif isinstance(event, StepFailed):
        step = state.step(event.name)
        step.attempt = event.attempt
        step.error = event.error
        if not event.will_retry:
            step.status = StepStatus.FAILED
            step.end_time = t
            state.running.pop(event.name, None)
    elif isinstance(event, MetadataAttached):
        # Replaced, not updated: the old dict may be shared with a recorded event.
        if event.step is None:
            state.user_metadata = {**state.user_metadata, **event.metadata}
        else:
            step = state.step(event.step)
            step.user_metadata = {**step.user_metadata, **event.metadata}
    elif isinstance(event, WorkflowStarted):
        _apply_started(state, event)
    elif isinstance(event, WorkflowFinished):
        state.run_status = WorkflowStatus.SUCCESSFUL
        state.end_time = t
        state.final_output = event.output
        state._stop_running(StepStatus.CANCELED)
        state._end_actor_call()
    elif isinstance(event, WorkflowFailed):
        state.run_status = WorkflowStatus.FAILED
        state.end_time = t
        state.error = event.error
        state.failed_step = event.step
        state._stop_running(StepStatus.CANCELED)
        state._end_actor_call()
    elif isinstance(event, WorkflowCanceled):
        state.run_status = WorkflowStatus.CANCELED
        state.end_time = None
        state.canceled_time = t
        state._stop_running(StepStatus.CANCELED)
        for name in state.actor_calls:  # queued calls never run
            if state.steps[name].status is StepStatus.PENDING:
                state.steps[name].status = StepStatus.CANCELED
        state.actor_calls.clear()
    elif isinstance(event, ActorCallSubmitted):
        if state.actor_calls is _NO_CALLS:
            state.actor_calls = deque()
        state._register([event.step], None)
        state.actor_calls.append(event.step.name)
    elif isinstance(event, TimerStarted):
        state.step(event.name).wake_time = event.wake_time
    elif isinstance(event, EventPublished):
        if state.published is _NO_PUBLISHED:
            state.published = {}
        state.published[event.key] = event
    elif isinstance(event, MessageReceived):
        state._receive(event)
    else:  # pragma: no cover - every member of the union is handled above
        raise ValueError(f"unknown event type {type(event).__name__}")
    return state


def _apply_started(state: WorkflowState, event: WorkflowStarted) -> None:
    state.owner = event.owner
    if not event.resume:
        if state.last_seq != 1:
            raise ValueError("a first WorkflowStarted (resume=False) must be the first event")
        state.kind = event.kind
        if event.version > FORMAT_VERSION:
            raise ValueError(
                f"the log of {event.workflow_id!r} has format version {event.version}, written by a "
                f"newer evflow; this one reads versions up to {FORMAT_VERSION}"
            )
        state.version = event.version
        state.user_metadata = event.user_metadata  # shared: see MetadataAttached
        state.output = event.output
        state.actor_class = event.actor_class
        state.actor_state = event.actor_state
        state.forked_from = event.forked_from
        state._register(event.steps, None)
        state.deadline = event.deadline
        if event.pending:
            # Queued, not started: a later WorkflowStarted(resume=True) starts it.
            state.queue = event.queue
            state.priority = event.priority
            state.dedup_id = event.dedup_id
            state.queued_time = event.time
            state.run_status = WorkflowStatus.PENDING
            return
        if event.kind == "actor":
            # A new actor is idle: nothing runs until a writer call is submitted.
            state.run_status = WorkflowStatus.SUCCESSFUL
            return
    elif state.kind == "actor":
        # A run of an actor runs its oldest waiting call; earlier calls' steps keep their
        # status (a failed call stays failed), only those cut off by a crash run again.
        for name in state.running:
            state.steps[name].status = StepStatus.PENDING
        state.running.clear()
        if state.actor_calls:
            state.output = state.actor_calls[0]
    else:
        for step in state.steps.values():
            if step.status is not StepStatus.SUCCESSFUL:
                step.status = StepStatus.PENDING
        state.running.clear()
    state.run_status = WorkflowStatus.RUNNING
    state.start_time = event.time
    state.end_time = None
    state.error = None
    state.failed_step = None


def fold(
    state: WorkflowState | None,
    events: Iterable[Event],
    as_of: int | None = None,
    *,
    on_error: Callable[[Event, Exception], Exception] | None = None,
) -> WorkflowState | None:
    """Apply ``events`` in order to ``state`` (None: from the first event), stopping
    after ``seq == as_of`` when given; return the state (None if no event was folded).

    The one fold driver: ``replay``, the engine and the read-only tools all use it.
    An event that cannot follow the state raises ``ValueError``/``LookupError``, or
    ``on_error(event, exc)`` when given (tools use it to name the workflow and seq).
    """
    for event in events:
        if as_of is not None and event.seq > as_of:
            break
        try:
            state = apply(state, event)
        except (ValueError, LookupError) as exc:
            if on_error is None:
                raise
            raise on_error(event, exc) from exc
    return state


def replay(events: Iterable[Event], as_of: int | None = None, *, live: bool = True) -> WorkflowState:
    """Fold a workflow's events (only those with ``seq <= as_of`` when given).

    ``live`` says whether an engine owns the workflow; with ``live=False`` a workflow the
    log leaves RUNNING reports RESUMABLE, as read-only tools show it when no engine runs.
    Raises ``ValueError`` for an empty or malformed log.
    """
    state = fold(None, events, as_of)
    if state is None:
        raise ValueError("no events to replay" + (f" with seq <= {as_of}" if as_of is not None else ""))
    state.live = live
    return state
