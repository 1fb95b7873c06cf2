"""OpenTelemetry (SPEC section 12): a span per run, a child span per step attempt, live
(``evflow.otel.instrument``) and rebuilt from the log (``evflow.otel.spans_from_log``).

Spans go to the SDK's in-memory exporter; a tree is compared by each span's name, its
parent's, its links', attributes, times, status and events (span ids differ between the
live and the rebuilt spans). Every engine scenario runs on asyncio and trio.
"""

# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import evflow
import evflow.otel
from evflow.events import AnyEvent

pytestmark = pytest.mark.anyio

HANG = 30


# -- steps ------------------------------------------------------------------------------------

#: Failures still to come, by workflow id.
FAILURES: dict[str, int] = {}
#: Workflows whose ``gate`` step waits until the engine closes.
BLOCKED: set[str] = set()


@evflow.step(name="flaky", max_retries=2, metadata={"team": "ml", "tags": ["a", "b"]})
def flaky(wid: str) -> int:
    if FAILURES.get(wid, 0) > 0:
        FAILURES[wid] -= 1
        raise ValueError(f"not yet in {wid}")
    return 2


@evflow.step(name="countdown")
async def countdown(n: int) -> Any:
    evflow.attach_metadata({"n": n})
    if n == 0:
        return "liftoff"
    return countdown.step(n - 1)  # a continuation


@evflow.step(name="combine")
def combine(left: int, right: str) -> str:
    return f"{left}:{right}"


@evflow.step(name="fragile", max_retries=0)
def fragile(wid: str) -> int:
    if FAILURES.get(wid, 0) > 0:
        FAILURES[wid] -= 1
        raise KeyError(wid)
    return 1


@evflow.step(name="gate")
async def gate(wid: str) -> str:
    if wid in BLOCKED:
        await anyio.sleep_forever()
    return "open"


@evflow.virtual_actor
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self, by: int) -> int:
        self.n += by
        return self.n


# -- helpers ----------------------------------------------------------------------------------


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def _key(span: ReadableSpan) -> tuple[Any, ...]:
    attrs = span.attributes or {}
    return (span.name, attrs.get("evflow.step.name"), attrs.get("evflow.step.attempt"), span.start_time)


def tree(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """The spans as comparable rows: span ids replaced by the spans they name."""
    by_id = {span.context.span_id: span for span in spans if span.context is not None}
    rows = []
    for span in spans:
        assert span.end_time is not None, f"{span.name} never ended"
        parent = by_id[span.parent.span_id] if span.parent is not None else None
        if parent is not None:
            assert parent.context is not None and span.context is not None
            assert parent.context.trace_id == span.context.trace_id
        rows.append(
            (
                _key(span),
                _key(parent) if parent is not None else None,
                [_key(by_id[link.context.span_id]) for link in span.links],
                dict(span.attributes or {}),
                span.end_time,
                span.status.status_code,
                span.status.description,
                [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
            )
        )
    return sorted(rows, key=repr)


def rebuilt(events: list[AnyEvent]) -> list[tuple[Any, ...]]:
    tp, exporter = provider()
    returned = evflow.otel.spans_from_log(events, tracer_provider=tp)
    finished = exporter.get_finished_spans()
    assert len(returned) == len(finished)
    return tree(finished)


async def log_of(store: Any, wid: str) -> list[AnyEvent]:
    return [event async for event in evflow.read_events(store, wid)]


def by_name(spans: Sequence[ReadableSpan]) -> dict[tuple[Any, Any], ReadableSpan]:
    """Spans by (step name or span name, attempt)."""
    out = {}
    for span in spans:
        attrs = span.attributes or {}
        out[(attrs.get("evflow.step.name", span.name), attrs.get("evflow.step.attempt"))] = span
    return out


def ns(t: float) -> int:
    return int(t * 1_000_000_000)


# -- the tree of a workflow with a retry and a continuation -----------------------------------


async def test_a_retry_and_a_continuation_live_and_rebuilt(anyio_backend: str) -> None:
    wid = f"retry-cont-{anyio_backend}"
    FAILURES[wid] = 1
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        dag = combine.step(flaky.step(wid), countdown.step(2))
        assert await dag.run(wid, metadata={"owner": "me", "limits": {"cpu": 2}}) == "2:liftoff"
        events = await log_of(engine.store, wid)
        engine_id = engine.engine_id
    live = exporter.get_finished_spans()
    spans = by_name(live)
    assert sorted(spans, key=repr) == sorted(
        [
            ("workflow combine", None),
            ("flaky", 1),
            ("flaky", 2),
            ("countdown", 1),
            ("countdown_1", 1),
            ("countdown_2", 1),
            ("combine", 1),
        ],
        key=repr,
    )
    run = spans[("workflow combine", None)]
    assert run.parent is None
    assert run.attributes == {
        "evflow.workflow_id": wid,
        "evflow.workflow.kind": "workflow",
        "evflow.resume": False,
        "evflow.engine_id": engine_id,
        "evflow.status": "SUCCESSFUL",
        "evflow.metadata.owner": "me",
        "evflow.metadata.limits": json.dumps({"cpu": 2}),
    }
    assert run.status.status_code is StatusCode.UNSET
    # every attempt is a child of the run span, continuations included
    assert run.context is not None
    for key, span in spans.items():
        if span is not run:
            assert span.parent is not None and span.parent.span_id == run.context.span_id, key

    failed, retried = spans[("flaky", 1)], spans[("flaky", 2)]
    assert failed.attributes == {
        "evflow.workflow_id": wid,
        "evflow.step.name": "flaky",
        "evflow.step.attempt": 1,
        "evflow.step.type": "FUNCTION",
        "evflow.status": "FAILED",
        "evflow.step.will_retry": True,
        "evflow.metadata.team": "ml",
        "evflow.metadata.tags": '["a", "b"]',
    }
    assert failed.status.status_code is StatusCode.ERROR
    [exception] = failed.events
    assert exception.name == "exception"
    assert exception.attributes is not None
    assert exception.attributes["exception.type"] == "builtins:ValueError"
    assert exception.attributes["exception.message"] == f"not yet in {wid}"
    assert "raise ValueError" in str(exception.attributes["exception.stacktrace"])
    assert retried.attributes is not None and retried.attributes["evflow.status"] == "SUCCESSFUL"
    assert retried.status.status_code is StatusCode.UNSET and not retried.events
    assert failed.end_time is not None and retried.start_time is not None
    assert failed.end_time <= retried.start_time

    parent, child, grandchild = spans[("countdown", 1)], spans[("countdown_1", 1)], spans[("countdown_2", 1)]
    assert parent.attributes is not None and child.attributes is not None
    assert parent.attributes["evflow.step.continuation"] == "countdown_1"
    assert parent.attributes["evflow.metadata.n"] == 2  # attached while it ran
    assert child.attributes["evflow.step.parent"] == "countdown"
    assert child.attributes["evflow.metadata.n"] == 1
    assert [link.context for link in child.links] == [parent.context]
    assert [link.context for link in grandchild.links] == [child.context]
    assert parent.end_time is not None and child.start_time is not None
    assert parent.end_time <= child.start_time

    # the times are the events' times
    started = [e for e in events if type(e).__name__ == "WorkflowStarted"]
    assert run.start_time == ns(started[0].time)
    assert run.end_time == ns(events[-1].time)

    assert tree(live) == rebuilt(events)


async def test_a_failed_workflow_records_the_exception(anyio_backend: str) -> None:
    wid = f"failed-{anyio_backend}"
    FAILURES[wid] = 1
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        with pytest.raises(evflow.WorkflowExecutionError):
            await combine.step(fragile.step(wid), countdown.step(0)).run(wid)
        events = await log_of(engine.store, wid)
    live = exporter.get_finished_spans()
    spans = by_name(live)
    run, step = spans[("workflow combine", None)], spans[("fragile", 1)]
    for span in (run, step):
        assert span.attributes is not None and span.attributes["evflow.status"] == "FAILED"
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"builtins:KeyError: '{wid}'"
        [exception] = span.events
        assert exception.attributes is not None
        assert exception.attributes["exception.type"] == "builtins:KeyError"
    assert run.attributes is not None and run.attributes["evflow.step.failed"] == "fragile"
    assert step.attributes is not None and step.attributes["evflow.step.will_retry"] is False
    assert ("combine", 1) not in spans  # it never started
    assert tree(live) == rebuilt(events)


async def test_a_resumed_workflow_has_two_run_spans(anyio_backend: str) -> None:
    wid = f"resumed-{anyio_backend}"
    FAILURES[wid] = 1
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        with pytest.raises(evflow.WorkflowExecutionError):
            await combine.step(fragile.step(wid), countdown.step(1)).run(wid)
        assert await evflow.resume(wid) == "1:liftoff"
        events = await log_of(engine.store, wid)
    live = exporter.get_finished_spans()
    runs = sorted((s for s in live if s.parent is None), key=lambda s: s.start_time or 0)
    assert [(r.attributes or {}).get("evflow.resume") for r in runs] == [False, True]
    assert [(r.attributes or {}).get("evflow.status") for r in runs] == ["FAILED", "SUCCESSFUL"]
    first, second = runs
    assert first.context is not None and second.context is not None
    assert first.context.trace_id != second.context.trace_id  # each run is a trace of its own
    in_second = sorted(
        str((s.attributes or {}).get("evflow.step.name"))
        for s in live
        if s.parent is not None and s.parent.span_id == second.context.span_id
    )
    # countdown's output was checkpointed in the first run: only the failed step runs again
    assert in_second == ["combine", "fragile"]
    assert tree(live) == rebuilt(events)


async def test_an_interrupted_run_ends_at_its_last_event(anyio_backend: str, tmp_path: Path) -> None:
    wid = f"interrupted-{anyio_backend}"
    BLOCKED.add(wid)
    store = tmp_path / "store"
    tp, exporter = provider()
    async with evflow.Engine(store) as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        await combine.step(flaky.step(wid), gate.step(wid)).run_async(wid)
        with anyio.fail_after(HANG):
            while (await evflow.get_metadata(wid, "gate"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
    # the engine closed mid-run: nothing was recorded, yet the spans ended
    interrupted = by_name(exporter.get_finished_spans())
    run, blocked = interrupted[("workflow combine", None)], interrupted[("gate", 1)]
    for span in (run, blocked):
        assert span.attributes is not None and span.attributes["evflow.status"] == "RESUMABLE"
    before = await log_of(store, wid)
    assert run.end_time == blocked.end_time == ns(before[-1].time)  # the run's last event
    BLOCKED.discard(wid)
    async with evflow.Engine(store) as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        assert await evflow.resume(wid) == "2:open"
    live = exporter.get_finished_spans()
    assert len([s for s in live if s.parent is None]) == 2
    assert tree(live) == rebuilt(await log_of(store, wid))


async def test_a_canceled_run(anyio_backend: str) -> None:
    wid = f"canceled-{anyio_backend}"
    BLOCKED.add(wid)
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        await gate.step(wid).run_async(wid)
        with anyio.fail_after(HANG):
            while (await evflow.get_metadata(wid, "gate"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
        await evflow.cancel(wid)
        events = await log_of(engine.store, wid)
    live = exporter.get_finished_spans()
    spans = by_name(live)
    assert [(s.attributes or {}).get("evflow.status") for s in spans.values()] == ["CANCELED", "CANCELED"]
    assert tree(live) == rebuilt(events)
    BLOCKED.discard(wid)


async def test_an_actor_call_is_a_run(anyio_backend: str) -> None:
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine, tracer_provider=tp)
        counter = await Counter.get_or_create(f"counter-{anyio_backend}")
        await counter.incr.options(name="incr").run(2)
        await counter.incr.options(name="incr").run(3)
        events = await log_of(engine.store, f"counter-{anyio_backend}")
    live = exporter.get_finished_spans()
    runs = [s for s in live if s.parent is None]
    assert [r.name for r in runs] == [f"actor {__name__}:Counter"] * 2  # creating it is no run
    steps = by_name(live)
    assert (steps[("incr_1", 1)].attributes or {}).get("evflow.step.type") == "ACTOR_METHOD"
    assert tree(live) == rebuilt(events)


# -- the API around it ------------------------------------------------------------------------


async def test_no_tracer_provider_means_the_global_one(monkeypatch: pytest.MonkeyPatch) -> None:
    tp, exporter = provider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: tp)
    async with evflow.Engine("memory://") as engine:
        evflow.otel.instrument(engine)
        await countdown.step(0).run("global")
        events = await log_of(engine.store, "global")
    assert len(exporter.get_finished_spans()) == 2
    exporter.clear()
    evflow.otel.spans_from_log(events)
    assert len(exporter.get_finished_spans()) == 2


async def test_uninstrument_stops_the_spans() -> None:
    tp, exporter = provider()
    async with evflow.Engine("memory://") as engine:
        instrumentation = evflow.otel.instrument(engine, tracer_provider=tp)
        await countdown.step(0).run("traced")
        instrumentation.uninstrument()
        instrumentation.uninstrument()
        await countdown.step(0).run("untraced")
    assert {(s.attributes or {}).get("evflow.workflow_id") for s in exporter.get_finished_spans()} == {
        "traced"
    }


def test_spans_from_log_needs_no_engine() -> None:
    from evflow.events import StepStarted, WorkflowStarted

    events: list[AnyEvent] = [
        WorkflowStarted(seq=1, time=10.0, workflow_id="w", output="countdown", steps=[]),
    ]
    tp, exporter = provider()
    evflow.otel.spans_from_log(events, tracer_provider=tp)
    [run] = exporter.get_finished_spans()
    assert (run.start_time, run.end_time) == (ns(10.0), ns(10.0))
    assert (run.attributes or {})["evflow.status"] == "RESUMABLE"  # the log leaves it running
    with pytest.raises(ValueError):
        evflow.otel.spans_from_log([StepStarted(seq=1, time=1.0, name="x")], tracer_provider=tp)


def test_importing_without_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "evflow.otel" or name.startswith("evflow.otel."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ImportError, match=r"evflow\[otel\]"):
        importlib.import_module("evflow.otel")


def test_evflow_itself_needs_no_opentelemetry() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import evflow, evflow.cli\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules if sys.modules[m])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG)
