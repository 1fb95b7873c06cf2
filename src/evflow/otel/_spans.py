"""Spans folded from events: the one place that says which span an event opens or ends.

``SpanBuilder.event_folded(state, event)`` is told each event of a workflow after it was
folded into ``state`` (the projection's fold, ``_projection.apply``): live, by the engine
core (``instrument``), or from a recorded log (``spans_from_log``). Both give the same
spans with the same times, since every start and end time is an event's ``time``.

A run span opens at a ``WorkflowStarted`` and ends at the run's ``WorkflowFinished``,
``WorkflowFailed`` or ``WorkflowCanceled``, or, for a run that ends without one (the
engine was closed or let go of it; the log shows the next ``WorkflowStarted``, or ends),
at the run's last event, marked RESUMABLE. A step-attempt span is a child of its run's
span, from a ``StepStarted`` to that step's next ``StepFinished`` or ``StepFailed``
(steps still open when the run ends end with it). A continuation's steps are children
of the run that executes them too, with a link to the parent step's attempt span when
that attempt is in the same run.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer

from .._events import (
    ErrorInfo,
    Event,
    StepFailed,
    StepFinished,
    StepStarted,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from .._projection import WorkflowState

__all__ = ["INSTRUMENTATION_NAME", "SpanBuilder", "metadata_attributes", "nanoseconds"]

#: The name of the tracer (the instrumentation scope) evflow's spans come from.
INSTRUMENTATION_NAME = "evflow"

_Attributes = dict[str, str | bool | int | float]


def nanoseconds(t: float) -> int:
    """An event's ``time`` (epoch seconds) as OpenTelemetry's epoch nanoseconds."""
    return int(t * 1_000_000_000)


def metadata_attributes(metadata: dict[str, Any]) -> _Attributes:
    """User metadata as ``evflow.metadata.<key>`` attributes: a str, bool, int or float
    as it is, anything else (None, a list, a dict) as JSON."""
    out: _Attributes = {}
    for key, value in metadata.items():
        if isinstance(value, str | bool | int | float):
            out[f"evflow.metadata.{key}"] = value
        else:
            out[f"evflow.metadata.{key}"] = json.dumps(value, sort_keys=True)
    return out


class _Run:
    """The spans of one run of one workflow."""

    __slots__ = ("attempts", "last_time", "open_steps", "span", "state")

    def __init__(self, state: WorkflowState, span: Span, start: int) -> None:
        #: The workflow's state, kept up to date by whoever folds its events.
        self.state = state
        self.span = span
        #: Attempt spans not ended yet, by step name.
        self.open_steps: dict[str, Span] = {}
        #: The latest attempt span of each step in this run (continuations link to it).
        self.attempts: dict[str, Span] = {}
        #: The time of the run's latest event: where an interrupted run ends.
        self.last_time = start


class SpanBuilder:
    """Spans of the workflows whose events it is told, started and ended on ``tracer``.

    Events of a run whose ``WorkflowStarted`` it was not told are ignored.
    """

    def __init__(self, tracer: Tracer, *, keep: bool = False) -> None:
        self.tracer = tracer
        self._runs: dict[str, _Run] = {}
        #: Every span started, in order, when ``keep`` (a live builder keeps none: it
        #: would grow for as long as the engine runs).
        self.spans: list[Span] = []
        self._keep = keep

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        """Open or end the spans that ``event`` (just folded into ``state``) opens or ends."""
        wid = state.workflow_id
        if isinstance(event, WorkflowStarted):
            self.run_closed(wid)  # a run that recorded no end was interrupted
            if event.kind == "actor" and not event.resume:
                return  # a new actor is idle: no run yet
            self._start_run(state, event)
            return
        run = self._runs.get(wid)
        if run is None:
            return
        run.state = state
        t = nanoseconds(event.time)
        run.last_time = t
        if isinstance(event, StepStarted):
            self._end_step(run, event.name, t, "RESUMABLE")  # an attempt never ended: defensive
            self._start_step(run, event, t)
        elif isinstance(event, StepFinished):
            attributes: _Attributes = {}
            if event.continuation_output is not None:
                attributes["evflow.step.continuation"] = event.continuation_output
            self._end_step(run, event.name, t, "SUCCESSFUL", attributes)
        elif isinstance(event, StepFailed):
            retry: _Attributes = {"evflow.step.will_retry": event.will_retry}
            self._end_step(run, event.name, t, "FAILED", retry, event.error)
        elif isinstance(event, WorkflowFinished):
            self._end_run(run, t, "SUCCESSFUL")
        elif isinstance(event, WorkflowFailed):
            failed: _Attributes = {"evflow.step.failed": event.step} if event.step is not None else {}
            self._end_run(run, t, "FAILED", failed, event.error)
        elif isinstance(event, WorkflowCanceled):
            self._end_run(run, t, "CANCELED")
        # MetadataAttached: the metadata is read from the state when the span ends.
        # ActorCallSubmitted: a call's span starts when the call runs.

    def run_closed(self, workflow_id: str) -> None:
        """The workflow's current run will have no more events: if its span is still open,
        end it (and its open steps) at the run's last event, marked RESUMABLE."""
        run = self._runs.get(workflow_id)
        if run is not None:
            self._end_run(run, run.last_time, "RESUMABLE", steps="RESUMABLE")

    def close(self) -> None:
        """Nothing more will be told: end every open span at its run's last event, marked
        RUNNING (the run goes on, untraced)."""
        for run in list(self._runs.values()):
            self._end_run(run, run.last_time, "RUNNING", steps="RUNNING")

    # -- runs ------------------------------------------------------------------------------

    def _start_run(self, state: WorkflowState, event: WorkflowStarted) -> None:
        t = nanoseconds(event.time)
        if state.kind == "actor":
            name = f"actor {state.actor_class}"
        else:
            output = state.steps.get(state.output) if state.output is not None else None
            name = f"workflow {output.spec.options.name if output is not None else state.workflow_id}"
        attributes: _Attributes = {
            "evflow.workflow_id": state.workflow_id,
            "evflow.workflow.kind": state.kind,
            "evflow.resume": event.resume,
        }
        if event.owner is not None:
            attributes["evflow.engine_id"] = event.owner
        # An empty context, not the current one: a run span is the root of its own trace
        # wherever the engine emits its WorkflowStarted, as when it is rebuilt from a log.
        span = self.tracer.start_span(name, context=Context(), attributes=attributes, start_time=t)
        if self._keep:
            self.spans.append(span)
        self._runs[state.workflow_id] = _Run(state, span, t)

    def _end_run(
        self,
        run: _Run,
        t: int,
        status: str,
        attributes: _Attributes | None = None,
        error: ErrorInfo | None = None,
        *,
        steps: str = "CANCELED",
    ) -> None:
        # the fold marks the steps a run's end stops CANCELED; an interrupted run's, RESUMABLE
        for name in list(run.open_steps):
            self._end_step(run, name, t, steps)
        state = run.state
        del self._runs[state.workflow_id]
        span = run.span
        span.set_attributes(metadata_attributes(state.user_metadata))
        span.set_attributes({"evflow.status": status, **(attributes or {})})
        _record(span, error, t)
        span.end(end_time=t)

    # -- steps -----------------------------------------------------------------------------

    def _start_step(self, run: _Run, event: StepStarted, t: int) -> None:
        state = run.state
        step = state.steps[event.name]
        opts = step.spec.options
        attributes: _Attributes = {
            "evflow.workflow_id": state.workflow_id,
            "evflow.step.name": event.name,
            "evflow.step.attempt": event.attempt,
            "evflow.step.type": opts.step_type,
        }
        links = []
        if step.parent is not None:
            attributes["evflow.step.parent"] = step.parent
            parent = run.attempts.get(step.parent)
            if parent is not None:
                links.append(Link(parent.get_span_context(), {"evflow.link": "continuation of"}))
        span = self.tracer.start_span(
            opts.name,
            context=trace.set_span_in_context(run.span),
            attributes=attributes,
            links=links,
            start_time=t,
        )
        if self._keep:
            self.spans.append(span)
        run.open_steps[event.name] = run.attempts[event.name] = span

    def _end_step(
        self,
        run: _Run,
        name: str,
        t: int,
        status: str,
        attributes: _Attributes | None = None,
        error: ErrorInfo | None = None,
    ) -> None:
        span = run.open_steps.pop(name, None)
        if span is None:
            return
        step = run.state.steps.get(name)
        if step is not None:
            span.set_attributes(metadata_attributes(step.user_metadata))
        span.set_attributes({"evflow.status": status, **(attributes or {})})
        _record(span, error, t)
        span.end(end_time=t)


def _record(span: Span, error: ErrorInfo | None, t: int) -> None:
    """Record ``error`` on ``span`` as OpenTelemetry records an exception, and mark it ERROR."""
    if error is None:
        return
    span.add_event(
        "exception",
        {
            "exception.type": error.type,
            "exception.message": error.message,
            "exception.stacktrace": error.traceback,
        },
        timestamp=t,
    )
    span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
