"""``evflow verify``: is every log sound? One line per problem, never a traceback.

Checks, per workflow: the store's own check of framing, checksums and decoding (a store
with an ``async check(workflow_id=None)`` method, like the file store), that the log reads,
that sequence numbers run 1, 2, 3, ... and that the events fold (``replay``) without error.
What a writer will clean up on open without losing an acknowledged event (a store's
``async notes(workflow_id=None)``: torn tails, logs with no event) is printed as notes on
stderr and leaves the store sound.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from .._errors import CorruptLogError, WorkflowNotFoundError
from .._events import WorkflowStarted
from .._projection import WorkflowState, apply
from .._replay import open_reader
from ..stores import Store
from ._format import fmt_json, out, quote_id, warn
from ._options import Options

__all__ = ["Problem", "cmd_verify", "store_notes", "verify_store"]


class Problem(NamedTuple):
    """One problem: the workflow, where (a byte offset in its log, or an event's seq), what."""

    workflow_id: str
    byte: int | None
    seq: int | None
    what: str

    def position(self) -> str:
        if self.byte is not None:
            return f"byte={self.byte}"
        if self.seq is not None:
            return f"seq={self.seq}"
        return "-"

    def line(self) -> str:
        return f"{quote_id(self.workflow_id)} {self.position()} {' '.join(self.what.split())}"


async def verify_store(store: Store, workflow_id: str | None = None) -> tuple[list[Problem], int]:
    """The problems of one workflow (or all), and how many workflows were checked.

    Raises ``WorkflowNotFoundError`` when ``workflow_id`` names no workflow.
    """
    listed = await store.list_workflows()
    if workflow_id is not None and workflow_id not in listed:
        raise WorkflowNotFoundError(workflow_id)
    ids = [workflow_id] if workflow_id is not None else sorted(listed)
    problems: list[Problem] = []
    flagged: set[str] = set()
    check: Callable[[str | None], Awaitable[Any]] | None = getattr(store, "check", None)
    if callable(check):
        try:
            found = await check(workflow_id)
        except Exception as exc:  # verify reports whatever stops the check, never a traceback
            problems.append(Problem(workflow_id or "-", None, None, f"store check failed: {_describe(exc)}"))
        else:
            for wid, byte, what in found:
                problems.append(Problem(str(wid), int(byte), None, str(what)))
                flagged.add(str(wid))
    for wid in ids:
        problems.extend(await _verify_workflow(store, wid, reported=wid in flagged))
    return problems, len(ids)


async def _verify_workflow(store: Store, workflow_id: str, *, reported: bool) -> list[Problem]:
    """Reading, seq continuity and the fold; damage the store's check already reported is
    not repeated (reading a damaged log fails at that very place)."""
    try:
        events = await store.read(workflow_id)
    except CorruptLogError as exc:
        return [] if reported else [Problem(workflow_id, exc.position, None, exc.what)]
    except Exception as exc:  # verify reports whatever stops the read, never a traceback
        return [Problem(workflow_id, None, None, f"cannot read the log: {_describe(exc)}")]
    if not events:
        return [Problem(workflow_id, None, None, "empty log")]
    expected = 1
    for event in events:
        if event.seq != expected:
            if reported:
                return []
            return [Problem(workflow_id, None, event.seq, f"seq {event.seq} where {expected} was expected")]
        expected += 1
    first = events[0]
    if isinstance(first, WorkflowStarted) and first.workflow_id != workflow_id:
        return [Problem(workflow_id, None, 1, f"the log belongs to workflow {first.workflow_id!r}")]
    state: WorkflowState | None = None
    for event in events:
        try:
            state = apply(state, event)
        except Exception as exc:  # a fold error of any kind is what verify is looking for
            what = f"{type(event).__name__} does not fold: {_describe(exc)}"
            return [Problem(workflow_id, None, event.seq, what)]
    return []


async def store_notes(store: Store, workflow_id: str | None = None) -> list[Problem]:
    """The store's notes (see ``FileStore.notes``); [] for a store without ``notes``."""
    notes: Callable[[str | None], Awaitable[Any]] | None = getattr(store, "notes", None)
    if not callable(notes):
        return []
    return [Problem(str(wid), int(byte), None, str(what)) for wid, byte, what in await notes(workflow_id)]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def cmd_verify(opts: Options, args: argparse.Namespace) -> int:
    async with open_reader(opts.storage) as store:
        problems, count = await verify_store(store, args.workflow_id)
        try:
            notes = await store_notes(store, args.workflow_id)
        except Exception as exc:  # the notes never make verify fail; the check said it all
            notes = [Problem(args.workflow_id or "-", None, None, f"cannot list notes: {_describe(exc)}")]
    for note in notes:
        warn(f"note: {note.line()}")
    if opts.json:
        out(
            fmt_json(
                [
                    {"workflow_id": p.workflow_id, "byte": p.byte, "seq": p.seq, "what": p.what}
                    for p in problems
                ]
            )
        )
    else:
        for problem in problems:
            out(problem.line())
    if problems:
        bad = len({p.workflow_id for p in problems})
        warn(f"{len(problems)} problem(s) in {bad} of {count} workflow(s)")
        return 1
    if not opts.json:
        out(f"sound: {count} workflow(s) checked")
    return 0
