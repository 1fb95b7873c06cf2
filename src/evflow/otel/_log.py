"""Spans after the fact: ``spans_from_log(events)`` folds a recorded log into the spans
``instrument`` would have made while it was written."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.trace import Span, TracerProvider

from .._events import Event
from .._projection import WorkflowState, apply
from ._spans import INSTRUMENTATION_NAME, SpanBuilder

__all__ = ["spans_from_log"]


def spans_from_log(events: Iterable[Event], tracer_provider: TracerProvider | None = None) -> list[Span]:
    """Rebuild the spans of one workflow's recorded runs from its log, in the order they
    were started, on ``tracer_provider`` (None: the global one), which exports them.

    The events are folded with the projection's fold, as an engine does; a run the log
    leaves without an end (interrupted, or still running) ends at its last event, marked
    RESUMABLE. Raises ``ValueError`` for events that do not fold (the log of one
    workflow, from its first event, is expected).
    """
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
    builder = SpanBuilder(tracer, keep=True)
    state: WorkflowState | None = None
    for event in events:
        state = apply(state, event)
        builder.event_folded(state, event)
    if state is not None:
        builder.run_closed(state.workflow_id)
    return builder.spans
