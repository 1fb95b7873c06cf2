"""The CLI's inspection commands (read-only: list, status, show, events, output) and its
management commands (resume, cancel, delete: through an ``Engine``, as the API does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._codec import VALUE_MSGPACK, decode_value
from .._errors import CorruptLogError, EvflowError, LogFoldError
from .._events import (
    ActorCallSubmitted,
    AnyEvent,
    EventPublished,
    MessageReceived,
    MetadataAttached,
    StepFailed,
    StepFinished,
    StepStarted,
    TimerStarted,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from .._liveness import owner_is_live
from .._projection import StepState, StepStatus, WorkflowState, WorkflowStatus
from .._replay import fold, load_events, open_reader, read_events
from ..engine import Engine
from ._format import (
    Progress,
    error_text,
    fmt_duration,
    fmt_json,
    fmt_time,
    out,
    out_bytes,
    quote_id,
    report_error,
    table,
    warn,
)
from ._options import Options

__all__ = [
    "cmd_cancel",
    "cmd_delete",
    "cmd_events",
    "cmd_list",
    "cmd_output",
    "cmd_resume",
    "cmd_show",
    "cmd_status",
    "describe_event",
    "print_step_table",
    "print_workflow",
    "value_text",
]


# -- read-only --------------------------------------------------------------------------------


async def cmd_list(opts: Options, args: argparse.Namespace) -> int:
    wanted: set[WorkflowStatus] | None = set(args.status) if args.status else None
    states: list[WorkflowState] = []
    async with open_reader(opts.storage) as store:
        url = store.url
        for workflow_id, events in sorted((await store.read_all()).items()):
            try:
                if isinstance(events, CorruptLogError):
                    raise events
                state = fold(workflow_id, events, live=False)
            except CorruptLogError as exc:
                wid = quote_id(workflow_id)
                where = f"seq {exc.seq}" if isinstance(exc, LogFoldError) else f"byte {exc.position}"
                warn(f"damaged: {wid} at {where}: {exc.what} (run `evflow verify {wid}`)")
                continue
            state.live = await owner_is_live(store, state)
            if wanted is None or state.status in wanted:
                states.append(state)
    if opts.json:
        out(fmt_json([{"workflow_id": s.workflow_id, "status": s.status.value} for s in states]))
        return 0
    if not states:
        warn(f"no workflows in {url}" + (" with that status" if wanted else ""))
        return 0
    rows = [
        [quote_id(s.workflow_id), s.status.value, fmt_time(s.start_time), fmt_time(s.end_time)]
        for s in states
    ]
    out(table(["WORKFLOW", "STATUS", "STARTED", "ENDED"], rows))
    return 0


async def _load(opts: Options, workflow_id: str, as_of: int | None = None) -> tuple[WorkflowState, int]:
    """The workflow folded (up to ``as_of``) and the last seq of its log.

    The present is RESUMABLE when the log says running but the engine that runs it is gone.
    A prefix that ends before the log does is the past: the engine that wrote the next event
    was alive then, so it shows what get_metadata showed at that moment (RUNNING).
    """
    async with open_reader(opts.storage) as store:
        events = await load_events(store, workflow_id)
        last_seq = events[-1].seq
        state = fold(workflow_id, events, as_of, live=True)
        if as_of is None or as_of >= last_seq:
            state.live = await owner_is_live(store, state)
    return state, last_seq


async def cmd_status(opts: Options, args: argparse.Namespace) -> int:
    state, _ = await _load(opts, args.workflow_id)
    if opts.json:
        out(fmt_json({"workflow_id": state.workflow_id, "status": state.status.value}))
    else:
        out(state.status.value)
    return 0


async def cmd_show(opts: Options, args: argparse.Namespace) -> int:
    state, last_seq = await _load(opts, args.workflow_id, args.as_of)
    metadata = state.metadata(args.step)
    if opts.json:
        out(fmt_json(metadata))
        return 0
    if args.step is not None:
        print_step(state, state.step(args.step), metadata)
    else:
        print_workflow(state, metadata, last_seq)
        print_step_table(state)
    return 0


def print_workflow(state: WorkflowState, metadata: dict[str, Any], last_seq: int | None = None) -> None:
    """The workflow's metadata as ``key value`` lines."""
    stats = metadata["stats"]
    rows = [
        ["workflow", quote_id(state.workflow_id)],
        ["status", metadata["status"]],
        ["kind", state.kind],
        ["started", fmt_time(stats.get("start_time"))],
        ["ended", fmt_time(stats.get("end_time"))],
        ["duration", fmt_duration(stats.get("start_time"), stats.get("end_time"))],
        ["metadata", fmt_json(metadata["user_metadata"])],
    ]
    if state.published:
        rows.append(["published", ", ".join(state.published)])
    if state.forked_from is not None:
        origin = state.forked_from
        rows.append(["forked from", f"{quote_id(origin.workflow_id)} at seq {origin.seq}"])
    if state.inbox:  # messages no step has consumed yet, by topic
        rows.append(["messages", ", ".join(f"{topic} ({len(m)})" for topic, m in state.inbox.items())])
    if state.error is not None and state.run_status is WorkflowStatus.FAILED:
        where = f" (at step {state.failed_step})" if state.failed_step else ""
        rows.append(["error", error_text(state.error) + where])
    if last_seq is None or state.last_seq == last_seq:
        rows.append(["events", str(state.last_seq)])
    else:
        rows.append(["as of", f"seq {state.last_seq} (the log goes on to seq {last_seq})"])
    out(_pairs(rows))


def _ordered_steps(state: WorkflowState) -> list[StepState]:
    """Steps in the order they started (those that never did last, as recorded)."""
    steps = list(state.steps.values())
    index = {step.name: i for i, step in enumerate(steps)}
    return sorted(
        steps,
        key=lambda s: (s.start_time is None, s.start_time or 0.0, index[s.name]),
    )


def print_step_table(state: WorkflowState) -> None:
    """One row per step: status, times, attempts, user metadata."""
    rows = []
    for step in _ordered_steps(state):
        rows.append(
            [
                step.name,
                state.step_status(step).value,
                fmt_time(step.start_time),
                fmt_time(step.end_time),
                fmt_duration(step.start_time, step.end_time),
                str(step.attempt),
                fmt_json(step.user_metadata) if step.user_metadata else "",
            ]
        )
    if rows:
        out()
        out(table(["STEP", "STATUS", "STARTED", "ENDED", "DURATION", "ATTEMPTS", "METADATA"], rows))


def print_step(state: WorkflowState, step: StepState, metadata: dict[str, Any]) -> None:
    """One step's metadata as ``key value`` lines."""
    stats = metadata["stats"]
    options = metadata["step_options"]
    shown = ("max_retries", "retry_delay", "catch_exceptions", "timeout", "checkpoint")
    rows = [
        ["step", step.name],
        ["workflow", quote_id(state.workflow_id)],
        ["status", metadata["status"]],
        ["type", options["step_type"]],
        ["function", step.spec.func],
        ["started", fmt_time(stats.get("start_time"))],
        ["ended", fmt_time(stats.get("end_time"))],
        ["duration", fmt_duration(stats.get("start_time"), stats.get("end_time"))],
        ["attempts", str(step.attempt)],
        *([["wakes", fmt_time(stats["wake_time"])]] if "wake_time" in stats else []),
        *([["message", f"seq {stats['seq']}"]] if "seq" in stats else []),
        ["options", " ".join(f"{key}={options[key]}" for key in shown)],
        ["metadata", fmt_json(metadata["user_metadata"])],
        ["depends on", ", ".join(step.spec.deps) or "-"],
    ]
    if step.parent is not None:
        rows.append(["continues", step.parent])
    if step.continuation_output is not None:
        rows.append(["value from", step.continuation_output])
    if step.error is not None and step.status is not StepStatus.SUCCESSFUL:
        rows.append(["error", error_text(step.error)])
    out(_pairs(rows))


def _pairs(rows: list[list[str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


async def cmd_events(opts: Options, args: argparse.Namespace) -> int:
    after = args.from_seq - 1
    async with read_events(opts.storage, args.workflow_id, after=after, follow=args.follow) as stream:
        if opts.json:
            import msgspec

            encoder = msgspec.json.Encoder()
            async for event in stream:
                out_bytes(encoder.encode(event) + b"\n")
            return 0
        out(f"{'SEQ':>5}  {'TIME':<23}  {'TYPE':<20}  DETAILS")
        async for event in stream:
            kind = type(event).__name__
            line = f"{event.seq:>5}  {fmt_time(event.time):<23}  {kind:<20}  {describe_event(event)}"
            out(line.rstrip())
            if args.follow:
                sys.stdout.flush()
    return 0


def describe_event(event: AnyEvent) -> str:
    """The interesting fields of an event, on one line."""
    if isinstance(event, WorkflowStarted):
        if event.resume:
            return "resume"
        if event.kind == "actor":
            text = f"actor class={event.actor_class}"
        else:
            text = f"workflow output={event.output} steps={len(event.steps)}"
        if event.user_metadata:
            text += f" metadata={fmt_json(event.user_metadata)}"
        return text
    if isinstance(event, StepStarted):
        return f"{event.name} attempt={event.attempt}"
    if isinstance(event, StepFinished):
        if event.continuation_output is not None:
            return f"{event.name} continues as {event.continuation_output} (+{len(event.continuation)} steps)"
        if event.output is None:
            return f"{event.name} (output not checkpointed)"
        took = f" (consumed message seq {event.consumed})" if event.consumed is not None else ""
        return f"{event.name} -> {value_preview(event.output)}{took}"
    if isinstance(event, StepFailed):
        then = "will retry" if event.will_retry else "gave up"
        return f"{event.name} attempt={event.attempt} {then}: {error_text(event.error)}"
    if isinstance(event, WorkflowFinished):
        return "" if event.output is None else f"-> {value_preview(event.output)}"
    if isinstance(event, WorkflowFailed):
        return (f"at {event.step}: " if event.step else "") + error_text(event.error)
    if isinstance(event, MetadataAttached):
        return f"{event.step or '(workflow)'} {fmt_json(event.metadata)}"
    if isinstance(event, ActorCallSubmitted):
        return f"{event.step.name} ({event.step.func})"
    if isinstance(event, TimerStarted):
        return f"{event.name} wakes at {fmt_time(event.wake_time)}"
    if isinstance(event, EventPublished):
        return f"{event.key} = {value_preview(event.value)}" + (f" (by {event.step})" if event.step else "")
    if isinstance(event, MessageReceived):
        key = f" key={event.idempotency_key}" if event.idempotency_key is not None else ""
        return f"{event.topic}: {value_preview(event.payload)}{key}"
    return ""


def value_preview(data: bytes, limit: int = 60) -> str:
    """A short repr of a recorded value; pickled values are not unpickled (that runs code)."""
    if not data or data[0] != VALUE_MSGPACK:
        return f"<pickled, {len(data)} bytes>"
    try:
        text = repr(decode_value(data))
    except Exception:  # a damaged or foreign value must not stop the listing
        return f"<{len(data)} bytes>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def cmd_output(opts: Options, args: argparse.Namespace) -> int:
    state, _ = await _load(opts, args.workflow_id)
    name: str | None = args.step
    raw, problem = _recorded_output(state, name)
    if raw is None:
        warn(problem)
        return 1
    try:
        value = decode_value(raw)
    except Exception as exc:  # unpickling may raise anything (a moved class, a missing module)
        warn(f"error: cannot decode the recorded output: {type(exc).__name__}: {exc}")
        return 1
    text = value_text(value, as_json=opts.json)
    if text is None:
        warn(f"error: the output (a {type(value).__name__}) is not JSON; run without --json to see its repr")
        return 1
    out(text)
    return 0


def _recorded_output(state: WorkflowState, name: str | None) -> tuple[bytes | None, str]:
    """The encoded value of the workflow (or step ``name``), or why there is none."""
    wid = quote_id(state.workflow_id)
    if name is not None:
        step = state.step(name)
        src = state.value_source(name)
        if src is not None and src.output is not None:
            return src.output, ""
        if src is not None:
            return None, f"error: step {name!r} of {wid} did not checkpoint its output (checkpoint=False)"
        if step.status is StepStatus.FAILED and step.error is not None:
            return None, f"failed: step {name!r} of {wid}: {error_text(step.error)}"
        return None, f"no output yet: step {name!r} of {wid} is {state.step_status(step).value}"
    status = state.status
    if state.output is None:  # an actor before its first call
        return None, f"no output: {wid} has no output step (for an actor's call, use --step NAME)"
    if status is WorkflowStatus.SUCCESSFUL:
        src = state.value_source(state.output)
        if src is not None and src.output is not None:
            return src.output, ""
        if state.final_output is not None:
            return state.final_output, ""
        return None, f"error: the output of {wid} was not recorded"
    if status is WorkflowStatus.FAILED:
        where = f" at step {state.failed_step}" if state.failed_step else ""
        detail = f": {error_text(state.error)}" if state.error is not None else ""
        return None, f"failed: {wid}{where}{detail}"
    if status is WorkflowStatus.CANCELED:
        return None, f"canceled: {wid}"
    return None, f"no output yet: {wid} is {status.value}"


def value_text(value: Any, *, as_json: bool) -> str | None:
    """JSON when the value can be written as JSON (indented for people), else its repr
    (None with ``as_json``)."""
    try:
        return fmt_json(value, indent=None if as_json else 2)
    except (TypeError, ValueError, RecursionError):
        return None if as_json else repr(value)


# -- through an engine ---------------------------------------------------------------------------


def _import_from_cwd() -> None:
    # Steps are re-imported by their recorded module path; like `python -m`, let the
    # current directory's modules be found (the console script's sys.path lacks it).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


async def cmd_resume(opts: Options, args: argparse.Namespace) -> int:
    _import_from_cwd()
    failed = False
    results: dict[str, dict[str, Any]] = {}
    async with Engine(opts.storage) as engine:
        if args.all:
            wanted = {WorkflowStatus.RESUMABLE} | ({WorkflowStatus.FAILED} if args.include_failed else set())
            ids = sorted(wid for wid, _ in await engine.list_all(wanted))
        else:
            ids = list(dict.fromkeys(args.workflow_ids))
        handles = []
        for wid in ids:
            try:
                handles.append(await engine.resume_async(wid))
            except EvflowError as exc:
                report_error(exc)
                failed = True
        progress = Progress("resuming", len(handles))

        async def wait(workflow_id: str) -> None:
            entry: dict[str, Any] = {"workflow_id": workflow_id}
            try:
                await engine.get_output(workflow_id)
            except EvflowError as exc:
                entry["error"] = " ".join(str(exc).split())
            entry["status"] = (await engine.get_status(workflow_id)).value
            results[workflow_id] = entry
            progress.advance(workflow_id)

        try:
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    tg.start_soon(wait, handle.workflow_id)
        finally:
            progress.close()
    ordered = [results[h.workflow_id] for h in handles]
    failed = failed or any(entry["status"] != WorkflowStatus.SUCCESSFUL for entry in ordered)
    if opts.json:
        out(fmt_json(ordered))
    else:
        if args.all and not ordered:
            warn("nothing to resume")
        for entry in ordered:
            tail = f"  {entry['error']}" if "error" in entry else ""
            out(f"{quote_id(entry['workflow_id'])}  {entry['status']}{tail}")
    return 1 if failed else 0


async def _each_workflow(
    opts: Options, workflow_ids: list[str], action: Callable[[Engine, str], Awaitable[Any]]
) -> tuple[list[str], bool]:
    """Apply ``action`` to each id (once each) on one engine; report errors as they come.

    Returns the ids it succeeded for and whether any failed; ``action``'s own result is
    only used for its side effect.
    """
    done: list[str] = []
    failed = False
    async with Engine(opts.storage) as engine:
        for wid in dict.fromkeys(workflow_ids):
            try:
                await action(engine, wid)
            except EvflowError as exc:
                report_error(exc)
                failed = True
            else:
                done.append(wid)
    return done, failed


async def cmd_cancel(opts: Options, args: argparse.Namespace) -> int:
    async def cancel(engine: Engine, wid: str) -> None:
        await engine.cancel(wid)
        results.append({"workflow_id": wid, "status": (await engine.get_status(wid)).value})

    results: list[dict[str, Any]] = []
    _, failed = await _each_workflow(opts, args.workflow_ids, cancel)
    if opts.json:
        out(fmt_json(results))
    else:
        for entry in results:
            out(f"{quote_id(entry['workflow_id'])}  {entry['status']}")
    return 1 if failed else 0


async def cmd_delete(opts: Options, args: argparse.Namespace) -> int:
    deleted, failed = await _each_workflow(opts, args.workflow_ids, lambda engine, wid: engine.delete(wid))
    if opts.json:
        out(fmt_json([{"workflow_id": wid, "deleted": True} for wid in deleted]))
    else:
        for wid in deleted:
            out(f"deleted {quote_id(wid)}")
    return 1 if failed else 0
