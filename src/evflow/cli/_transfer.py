"""``evflow export`` / ``evflow import``: workflow logs as JSON lines, and back.

One event per line, as ``msgspec.json`` encodes the event struct (the ``type`` tag first,
bytes as base64). A file may hold several workflows one after the other: each begins
with its ``WorkflowStarted`` of seq 1. Decoding a line with the ``AnyEvent`` union and
encoding it again gives the same bytes, so export -> import -> export is byte-identical.

Import appends each workflow with one ``Store.append`` (all its events, durable before the
next workflow starts), which every store makes atomic: one journal entry in the file store,
one transaction in PostgreSQL. So an import that is killed leaves each workflow wholly
imported or absent, and ``--skip-existing`` finishes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
import msgspec

from .._errors import BadExportError, CorruptLogError
from .._events import AnyEvent, WorkflowStarted
from .._replay import fold, load_events, open_reader
from ..stores import Store
from ..stores._open import open_store
from ._format import Progress, fmt_json, out, out_bytes, quote_id, warn
from ._options import Options

__all__ = ["cmd_export", "cmd_import", "parse_export"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


async def cmd_export(opts: Options, args: argparse.Namespace) -> int:
    async with open_reader(opts.storage) as store:
        ids = sorted(await store.list_workflows()) if args.all else list(dict.fromkeys(args.workflow_ids))
        for workflow_id in ids:
            events = await load_events(store, workflow_id)
            out_bytes(b"".join(_encoder.encode(event) + b"\n" for event in events))
    return 0


def parse_export(data: bytes, source: str) -> list[tuple[str, list[AnyEvent]]]:
    """The workflows in an export, in order; raises ``BadExportError`` naming the line."""
    workflows: list[tuple[str, list[AnyEvent]]] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise BadExportError(f"{source}:{number}: not an evflow event: {exc}") from None
        if event.seq == 1:
            if not isinstance(event, WorkflowStarted) or event.resume:
                raise BadExportError(f"{source}:{number}: a workflow's log must begin with WorkflowStarted")
            workflows.append((event.workflow_id, []))
        elif not workflows:
            raise BadExportError(f"{source}:{number}: seq {event.seq} before any WorkflowStarted of seq 1")
        workflows[-1][1].append(event)
    return workflows


async def _read_input(name: str) -> bytes:
    if name == "-":
        return await anyio.to_thread.run_sync(sys.stdin.buffer.read)
    return await anyio.Path(Path(name)).read_bytes()


async def cmd_import(opts: Options, args: argparse.Namespace) -> int:
    # Everything is read and checked before anything is written: a bad line, a log that
    # does not fold or a taken id imports nothing.
    workflows: list[tuple[str, list[AnyEvent]]] = []
    seen: set[str] = set()
    for name in args.files:
        source = "<stdin>" if name == "-" else name
        for workflow_id, events in parse_export(await _read_input(name), source):
            if workflow_id in seen:
                raise BadExportError(f"{source}: workflow {quote_id(workflow_id)} appears twice in the input")
            seen.add(workflow_id)
            try:
                fold(workflow_id, events, live=False)
            except CorruptLogError as exc:
                raise BadExportError(f"{source}: {exc}") from None
            workflows.append((workflow_id, events))
    if not workflows:
        warn("nothing to import")
        return 0
    store = open_store(opts.storage)
    await store.open()
    closed = False
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            try:
                code = await _append_all(
                    store, workflows, as_json=opts.json, skip_existing=args.skip_existing
                )
            finally:
                closed = True
                with anyio.CancelScope(shield=True):
                    await store.close()
                tg.cancel_scope.cancel()
    finally:
        if not closed:
            with anyio.CancelScope(shield=True):
                await store.close()
    return code


async def _append_all(
    store: Store, workflows: list[tuple[str, list[AnyEvent]]], *, as_json: bool, skip_existing: bool
) -> int:
    existing = set(await store.list_workflows())
    skipped: set[str] = set()
    refused: list[str] = []
    for workflow_id, events in workflows:
        if workflow_id not in existing:
            continue
        wid = quote_id(workflow_id)
        if not skip_existing:
            refused.append(
                f"exists: {wid} (delete it first, import into another store, or pass "
                "--skip-existing to skip the workflows already imported)"
            )
            continue
        try:
            same = _encoded(await store.read(workflow_id)) == _encoded(events)
        except CorruptLogError as exc:
            refused.append(
                f"differs: {wid}: its log in the store is damaged: {exc} (run evflow verify {wid})"
            )
            continue
        if same:
            skipped.add(workflow_id)
        else:
            refused.append(
                f"differs: {wid} (the store holds another log under this id; delete it first, "
                "or import into another store)"
            )
    if refused:
        for line in refused:
            warn(line)
        return 1
    progress = Progress("importing", len(workflows) - len(skipped))
    try:
        for workflow_id, events in workflows:
            if workflow_id not in skipped:
                await store.append(workflow_id, events)
                progress.advance(workflow_id)
    finally:
        progress.close()
    if as_json:
        out(
            fmt_json(
                [
                    {"workflow_id": wid, "events": len(events), "skipped": wid in skipped}
                    for wid, events in workflows
                ]
            )
        )
    else:
        for workflow_id, events in workflows:
            verb = "skipped" if workflow_id in skipped else "imported"
            note = ", already in the store" if workflow_id in skipped else ""
            out(f"{verb} {quote_id(workflow_id)} ({len(events)} events{note})")
    return 0


def _encoded(events: list[AnyEvent]) -> list[bytes]:
    return [_encoder.encode(event) for event in events]
