"""The ``EVENT`` step kind: ``evflow.wait_for_event(topic)`` and listener classes.

A topic step waits until its workflow's inbox (the fold of its ``MessageReceived``
events) holds a message on its topic that no other running step of the workflow has
taken, and returns its payload; its ``StepFinished`` records the message's seq
(``consumed``), which consumes the message in the same event that records the value, so
a crash either leaves the message unconsumed (the resumed step takes it again) or
consumed with the value recorded: exactly once. A send in this engine folds the message
and wakes the workflow's waiters (``core.notify``).

A listener step awaits ``ListenerClass().poll_for_event(*args)``. When the class defines
``event_checkpointed``, the step returns a continuation: an ``event_checkpointed`` step
holding the event, recorded (durable) with the listener step's ``StepFinished``, which
awaits the hook and gives the event as the value.

A ``timeout`` is recorded as the step's ``wake_time`` (a ``TimerStarted``) when it first
starts and waited for with the engine's timer; at it the value is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import anyio
import anyio.abc

from .._codec import decode_value
from .._events import MessageReceived, StepSpec, TimerStarted
from .._projection import WorkflowState
from ..engine import EngineCore, Execution, register_step_kind, substitute
from ._listeners import overrides_checkpointed, resolve_listener
from ._nodes import event_checkpointed_node
from ._timers import TimerService

__all__ = ["EventKind"]


async def _deadline(core: EngineCore, state: WorkflowState, name: str, seconds: float | None) -> float:
    """The step's recorded deadline (recorded now, durably, on its first start)."""
    if seconds is None:
        return math.inf
    step = state.steps[name]
    if step.wake_time is not None:
        return step.wake_time
    assert step.start_time is not None
    wake_time = step.start_time + seconds
    core.emit(state, (TimerStarted, {"name": name, "wake_time": wake_time}))
    await core.store.flush(state.workflow_id)
    return wake_time


async def _time_out(core: EngineCore, deadline: float, scope: anyio.CancelScope) -> None:
    await core.service(TimerService).wait_until(deadline)
    scope.cancel()


class _TopicStep:
    """One ``wait_for_event(topic)`` step ready to run."""

    __slots__ = ("kind", "message", "name", "state", "timeout", "topic")

    lock: anyio.Lock | None = None

    def __init__(
        self, kind: EventKind, state: WorkflowState, name: str, topic: str, timeout: float | None
    ) -> None:
        self.kind = kind
        self.state = state
        self.name = name
        self.topic = topic
        self.timeout = timeout
        #: The message this attempt took (held from other steps until its end is folded).
        self.message: MessageReceived | None = None

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> Any:
        core, state = self.kind.core, self.state
        deadline = await _deadline(core, state, self.name, self.timeout)
        if not self._take():
            async with anyio.create_task_group() as tg:
                if deadline != math.inf:
                    tg.start_soon(_time_out, core, deadline, tg.cancel_scope)
                while not self._take():
                    await core.wait_change(state.workflow_id)
                tg.cancel_scope.cancel()
        if self.message is None:  # timed out
            return None
        return decode_value(self.message.payload, allow_pickle=core.allow_pickle)

    def _take(self) -> bool:
        """Take the oldest message no other running step took (at once: the task group
        may yield before the attempt returns)."""
        taken = self.kind.taken.setdefault(self.state.workflow_id, set())
        message = self.state.oldest_message(self.topic, taken)
        if message is None:
            if not taken:
                del self.kind.taken[self.state.workflow_id]
            return False
        taken.add(message.seq)
        self.message = message
        return True

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        if self.message is not None:
            fields["consumed"] = self.message.seq
            self._release()  # folded right after this: the inbox no longer holds it
        return fields

    def discard(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.message is not None:
            taken = self.kind.taken.get(self.state.workflow_id)
            if taken is not None:
                taken.discard(self.message.seq)
                if not taken:
                    del self.kind.taken[self.state.workflow_id]
            self.message = None


class _ListenerStep:
    """One ``wait_for_event(ListenerClass, *args)`` step ready to run."""

    __slots__ = ("args", "cls", "core", "kwargs", "name", "state", "timeout")

    lock: anyio.Lock | None = None

    def __init__(
        self,
        core: EngineCore,
        state: WorkflowState,
        name: str,
        cls: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> None:
        self.core = core
        self.state = state
        self.name = name
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.timeout = timeout

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> Any:
        deadline = await _deadline(self.core, self.state, self.name, self.timeout)
        got = False
        event: Any = None
        async with anyio.create_task_group() as tg:
            if deadline != math.inf:
                tg.start_soon(_time_out, self.core, deadline, tg.cancel_scope)
            event = await self.cls().poll_for_event(*self.args, **self.kwargs)
            got = True
            tg.cancel_scope.cancel()
        if got and overrides_checkpointed(self.cls):
            return event_checkpointed_node(self.cls, event)
        return event

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        return fields

    def discard(self) -> None:
        pass


class _CheckpointedStep:
    """The step after a listener's recorded event: awaits ``event_checkpointed``."""

    __slots__ = ("cls", "event")

    lock: anyio.Lock | None = None

    def __init__(self, cls: Any, event: Any) -> None:
        self.cls = cls
        self.event = event

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> Any:
        await self.cls().event_checkpointed(self.event)
        return self.event

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        return fields

    def discard(self) -> None:
        pass


class EventKind:
    """Reads an event step's recorded topic or listener class (only subclasses of
    ``evflow.EventListener``; with ``allow_pickle=False`` only those already imported)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        #: Per workflow, the seqs of the messages that running topic steps have taken.
        self.taken: dict[str, set[int]] = {}

    def _listener(self, kwargs: dict[str, Any]) -> Any:
        path = kwargs.get("listener", kwargs.get("checkpointed"))
        if not isinstance(path, str):
            return None
        return resolve_listener(path, allow_import=self.core.allow_pickle)

    def check(self, spec: StepSpec) -> None:
        # Pickled arguments are only ever unpickled by an engine that allows pickle.
        _args, kwargs = decode_value(spec.args, allow_pickle=self.core.allow_pickle)
        if isinstance(kwargs, dict):
            self._listener(kwargs)

    def prepare(self, execution: Execution, spec: StepSpec) -> Any:
        args, kwargs = substitute(
            decode_value(spec.args, allow_pickle=self.core.allow_pickle), execution.value
        )
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, float | None):
            raise ValueError(f"event step {spec.name!r}: recorded arguments are not an event step's")
        topic = kwargs.get("topic")
        if isinstance(topic, str) and not args:
            return _TopicStep(self, execution.state, spec.name, topic, timeout)
        cls = self._listener(kwargs)
        if cls is None:
            raise ValueError(f"event step {spec.name!r}: recorded arguments are not an event step's")
        if "checkpointed" in kwargs and len(args) == 1:
            return _CheckpointedStep(cls, args[0])
        user_kwargs = kwargs.get("kwargs", {})
        if not isinstance(user_kwargs, dict):
            raise ValueError(f"event step {spec.name!r}: recorded arguments are not an event step's")
        return _ListenerStep(self.core, execution.state, spec.name, cls, args, user_kwargs, timeout)


register_step_kind("EVENT", EventKind)
