"""What the web app reads and does: through a live ``Engine``, or read-only from a store.

``EngineBackend`` serves an engine (given, or the current one at each request: see
``evflow.engine.default_engine``); ``ReaderBackend`` serves a store opened read-only (no
engine, no lock: ``evflow ui`` on a file store another process writes). Both fold with the
one fold (``evflow._replay.fold``), so the dashboard never computes a status of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .._codec import VALUE_MSGPACK, decode_value
from .._errors import CorruptLogError
from .._events import AnyEvent, ErrorInfo
from .._liveness import owner_is_live
from .._projection import WorkflowState, WorkflowStatus
from .._replay import EventStream, fold, load_events, read_events
from ..engine import Engine, EngineCore, current_engine
from ..stores import Store

__all__ = [
    "Backend",
    "EngineBackend",
    "ReaderBackend",
    "SendUnsupportedError",
    "error_text",
    "event_json",
    "state_json",
]


class SendUnsupportedError(Exception):
    """The engine has no ``send`` (messages, SPEC section 8)."""


class Backend(Protocol):
    """What the routes need: reads, and the three writes (refused when ``writable`` is False)."""

    @property
    def writable(self) -> bool: ...

    @property
    def url(self) -> str: ...

    async def workflows(self, wanted: set[WorkflowStatus] | None) -> list[tuple[str, WorkflowStatus]]: ...

    async def state(self, workflow_id: str, as_of: int | None = None) -> tuple[WorkflowState, int]: ...

    async def events(self, workflow_id: str, after: int) -> list[AnyEvent]: ...

    def follow(self, workflow_id: str, after: int) -> EventStream: ...

    async def cancel(self, workflow_id: str) -> WorkflowStatus: ...

    async def resume(self, workflow_id: str) -> WorkflowStatus: ...

    def can_send(self) -> bool: ...

    async def send(self, workflow_id: str, topic: str, payload: Any, idempotency_key: str | None) -> Any: ...


class _CoreView:
    """A service of the engine (``engine.service``): the core's folded state, read as is."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    async def state(self, workflow_id: str) -> WorkflowState:
        return await self.core.sync(workflow_id)


class EngineBackend:
    """Serves ``engine``, or with None the current engine of each call (``current_engine``)."""

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine if self._engine is not None else current_engine()

    @property
    def writable(self) -> bool:
        return True

    @property
    def url(self) -> str:
        return self.engine.store.url

    async def workflows(self, wanted: set[WorkflowStatus] | None) -> list[tuple[str, WorkflowStatus]]:
        return sorted(await self.engine.list_all(wanted))

    async def state(self, workflow_id: str, as_of: int | None = None) -> tuple[WorkflowState, int]:
        """The workflow now (the engine's own state) or as of event ``as_of`` (the log's
        prefix folded), with the last seq of the log."""
        engine = self.engine
        now = await engine.service(_CoreView).state(workflow_id)
        if as_of is None or as_of >= now.last_seq:
            return now, now.last_seq
        events = await load_events(engine.store, workflow_id)
        # The prefix ends before the log does: the engine that wrote the next event was
        # alive then, so it shows what get_metadata showed at that moment.
        return fold(workflow_id, events, as_of, live=True), max(now.last_seq, events[-1].seq)

    async def events(self, workflow_id: str, after: int) -> list[AnyEvent]:
        engine = self.engine
        await engine.get_status(workflow_id)  # WorkflowNotFoundError for an unknown id
        return await engine.store.read(workflow_id, after)

    def follow(self, workflow_id: str, after: int) -> EventStream:
        return read_events(self.engine.store, workflow_id, after=after, follow=True)

    async def cancel(self, workflow_id: str) -> WorkflowStatus:
        engine = self.engine
        await engine.cancel(workflow_id)
        return await engine.get_status(workflow_id)

    async def resume(self, workflow_id: str) -> WorkflowStatus:
        engine = self.engine
        await engine.resume_async(workflow_id)
        return await engine.get_status(workflow_id)

    def can_send(self) -> bool:
        return callable(getattr(self.engine, "send", None))

    async def send(self, workflow_id: str, topic: str, payload: Any, idempotency_key: str | None) -> Any:
        send: Callable[..., Any] | None = getattr(self.engine, "send", None)
        if send is None:
            raise SendUnsupportedError()
        result = send(workflow_id, topic, payload, idempotency_key=idempotency_key)
        return await result if inspect.isawaitable(result) else result


class ReaderBackend:
    """Serves a store opened read-only; its owner opens and closes it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def writable(self) -> bool:
        return False

    @property
    def url(self) -> str:
        return self.store.url

    async def workflows(self, wanted: set[WorkflowStatus] | None) -> list[tuple[str, WorkflowStatus]]:
        out = []
        for workflow_id, events in sorted((await self.store.read_all()).items()):
            if isinstance(events, CorruptLogError) or not events:
                continue  # `evflow verify` reports it; the list shows what folds
            try:
                state = fold(workflow_id, events, live=False)
            except CorruptLogError:
                continue
            state.live = await owner_is_live(self.store, state)
            if wanted is None or state.status in wanted:
                out.append((workflow_id, state.status))
        return out

    async def state(self, workflow_id: str, as_of: int | None = None) -> tuple[WorkflowState, int]:
        events = await load_events(self.store, workflow_id)
        last_seq = events[-1].seq
        state = fold(workflow_id, events, as_of, live=True)
        if as_of is None or as_of >= last_seq:
            state.live = await owner_is_live(self.store, state)
        return state, last_seq

    async def events(self, workflow_id: str, after: int) -> list[AnyEvent]:
        if after == 0:
            return await load_events(self.store, workflow_id)
        await load_events(self.store, workflow_id, after=0)  # WorkflowNotFoundError
        return await self.store.read(workflow_id, after)

    def follow(self, workflow_id: str, after: int) -> EventStream:
        return read_events(self.store, workflow_id, after=after, follow=True)

    async def cancel(self, workflow_id: str) -> WorkflowStatus:
        raise AssertionError("the routes refuse writes on a read-only backend")

    resume = cancel

    def can_send(self) -> bool:
        return False

    async def send(self, workflow_id: str, topic: str, payload: Any, idempotency_key: str | None) -> Any:
        raise AssertionError("the routes refuse writes on a read-only backend")


# -- JSON shapes ---------------------------------------------------------------------------------


def error_text(info: ErrorInfo) -> str:
    """``Type: message`` of a recorded exception (the type without its module)."""
    name = info.type.rpartition(":")[2] or info.type
    return f"{name}: {info.message}" if info.message else name


def value_preview(data: bytes, limit: int = 200) -> str:
    """A short repr of a recorded value; a pickled value is never unpickled (that runs code)."""
    if not data or data[0] != VALUE_MSGPACK:
        return f"<pickled, {len(data)} bytes>"
    try:
        text = repr(decode_value(data, allow_pickle=False))
    except Exception:  # a damaged or foreign value must not stop the page
        return f"<{len(data)} bytes>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_json(event: AnyEvent) -> dict[str, Any]:
    """An event as ``evflow events --json`` writes it (bytes as base64), plus
    ``output_preview`` for a recorded output and ``error_text`` for a recorded error."""
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(event)
    output = getattr(event, "output", None)
    if isinstance(output, bytes):
        out["output_preview"] = value_preview(output)
    error = getattr(event, "error", None)
    if isinstance(error, ErrorInfo):
        out["error_text"] = error_text(error)
    return out


def _steps_in_start_order(state: WorkflowState) -> Iterable[str]:
    names = list(state.steps)
    index = {name: i for i, name in enumerate(names)}
    return sorted(
        names,
        key=lambda n: (state.steps[n].start_time is None, state.steps[n].start_time or 0.0, index[n]),
    )


def state_json(state: WorkflowState, last_seq: int) -> dict[str, Any]:
    """What the dashboard's workflow page shows: the metadata, every step (with its
    dependencies, its parent for a continuation, its attempts) and where the log ends."""
    steps = []
    for name in _steps_in_start_order(state):
        step = state.steps[name]
        entry = state.metadata(name)
        entry["deps"] = list(step.spec.deps)
        entry["parent"] = step.parent
        entry["attempts"] = step.attempt
        entry["func"] = step.spec.func
        if step.error is not None:
            entry["error"] = error_text(step.error)
        steps.append(entry)
    out: dict[str, Any] = {
        "metadata": state.metadata(),
        "kind": state.kind,
        "output": state.output,
        "seq": state.last_seq,
        "last_seq": last_seq,
        "steps": steps,
    }
    if state.error is not None and state.run_status is WorkflowStatus.FAILED:
        out["error"] = error_text(state.error)
        out["failed_step"] = state.failed_step
    return out
