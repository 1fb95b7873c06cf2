"""Live spans: ``instrument(engine)`` builds spans from the events an engine records.

The engine core tells its event listeners of each event it records, right after folding
it, and of each live run's end (``EngineCore.add_event_listener``). ``Tracing`` is the one
listener per engine (a service: ``engine.service(Tracing)``); it hands each event to the
``SpanBuilder`` of every ``instrument`` call on that engine, and keeps a failure to
record a span from ever reaching the workflow.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from .._events import Event
from .._projection import WorkflowState
from ..engine import Engine, EngineCore
from ._spans import INSTRUMENTATION_NAME, SpanBuilder

__all__ = ["Instrumentation", "Tracing", "instrument"]

logger = logging.getLogger("evflow.otel")


class Instrumentation:
    """What ``instrument`` returns: the spans of one engine, for one tracer provider."""

    def __init__(self, tracing: Tracing, builder: SpanBuilder) -> None:
        self._tracing = tracing
        self._builder = builder

    def uninstrument(self) -> None:
        """Stop making spans. Spans of runs still in progress end at their run's last
        event, with ``evflow.status`` RUNNING. Calling it again does nothing."""
        self._tracing.remove(self._builder)


class Tracing:
    """An engine's tracing service: the core's listener, feeding every span builder."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._builders: list[SpanBuilder] = []

    def add(self, builder: SpanBuilder) -> None:
        if not self._builders:
            self.core.add_event_listener(self)
        self._builders.append(builder)

    def remove(self, builder: SpanBuilder) -> None:
        if builder not in self._builders:
            return
        self._builders.remove(builder)
        if not self._builders:
            self.core.remove_event_listener(self)
        try:
            builder.close()
        except Exception:
            logger.exception("evflow.otel: could not end the spans still open")

    # A listener must not raise (it would fail the step that emitted the event): a span
    # that cannot be recorded is logged and the workflow goes on.

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        for builder in self._builders:
            try:
                builder.event_folded(state, event)
            except Exception:
                logger.exception(
                    "evflow.otel: no span for event %d of workflow %r", event.seq, state.workflow_id
                )

    def run_closed(self, workflow_id: str) -> None:
        for builder in self._builders:
            try:
                builder.run_closed(workflow_id)
            except Exception:
                logger.exception("evflow.otel: could not end the run span of workflow %r", workflow_id)


def instrument(engine: Engine, tracer_provider: TracerProvider | None = None) -> Instrumentation:
    """Make spans of every run ``engine`` starts from now on: a span per run, a child
    span per step attempt (docs/otel.md).

    ``tracer_provider=None`` uses the global one (``opentelemetry.trace``). Each call adds
    one set of spans; ``uninstrument()`` on the result stops it. Runs already in progress
    when it is called get no spans.
    """
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
    tracing = engine.service(Tracing)
    builder = SpanBuilder(tracer)
    tracing.add(builder)
    return Instrumentation(tracing, builder)
