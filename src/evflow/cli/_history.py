"""The CLI's history commands (SPEC section 11): ``fork`` and ``prune`` through an
``Engine``; ``diff`` and ``check`` read-only, like ``show`` (docs/history.md)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from .._check import UNFINISHED, CheckProblem, check_workflow, steps_to_rerun
from .._diff import WorkflowDiff, diff
from .._errors import CorruptLogError, EvflowError, LogFoldError
from .._liveness import owner_is_live
from .._projection import WorkflowState
from .._replay import fold, load_events, open_reader
from ..engine import Engine
from ._format import fmt_json, out, quote_id, report_error, table
from ._imports import import_modules
from ._options import Options

__all__ = ["cmd_check", "cmd_diff", "cmd_fork", "cmd_prune", "parse_duration", "print_diff"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w`` or plain seconds, as seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a duration is a number with a unit s, m, h, d or w (30d, 12h, 15m, 90s), not {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


# -- fork ---------------------------------------------------------------------------------------


async def cmd_fork(opts: Options, args: argparse.Namespace) -> int:
    if not import_modules(args.imports):
        return 1
    async with Engine(opts.storage) as engine:
        handle = await engine.fork(args.workflow_id, args.new_id, from_step=args.from_step, as_of=args.as_of)
        new_id = handle.workflow_id
        entry: dict[str, Any] = {"workflow_id": new_id}
        try:
            await engine.get_output(new_id)
        except EvflowError as exc:
            entry["error"] = " ".join(str(exc).split())
        metadata = await engine.get_metadata(new_id)
    entry["status"] = metadata["status"]
    entry["forked_from"] = metadata["forked_from"]
    if opts.json:
        out(fmt_json(entry))
    else:
        origin = entry["forked_from"]
        tail = f"  {entry['error']}" if "error" in entry else ""
        out(
            f"{quote_id(new_id)}  {entry['status']}  "
            f"(forked from {quote_id(origin['workflow_id'])} at seq {origin['seq']}){tail}"
        )
    return 0 if entry["status"] == "SUCCESSFUL" else 1


# -- diff ---------------------------------------------------------------------------------------


async def cmd_diff(opts: Options, args: argparse.Namespace) -> int:
    async with open_reader(opts.storage) as store:
        events_a = await load_events(store, args.workflow_a)
        events_b = await load_events(store, args.workflow_b)
    result = diff(events_a, events_b, tolerance=args.tolerance)
    if opts.json:
        out(fmt_json(result.to_json()))
    else:
        print_diff(result)
    return 0 if result.identical else 1


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}s"
    return str(value)


def print_diff(result: WorkflowDiff) -> None:
    """The diff as a table: one line per difference of each differing step."""
    a, b = quote_id(result.workflow_a), quote_id(result.workflow_b)
    if result.identical:
        out(f"identical: {a} and {b} agree on every step")
        return
    out(f"a: {a}")
    out(f"b: {b}")
    out(f"first divergence: {result.first_divergence}")
    out()
    rows = []
    for row in result.rows:
        for key, value in row.items():
            if key == "step":
                continue
            if key == "only_in":
                present = "recorded"
                rows.append(
                    [
                        row["step"],
                        f"only in {value}",
                        present if value == "a" else "-",
                        present if value == "b" else "-",
                    ]
                )
            else:
                rows.append([row["step"], key, _cell(value["a"]), _cell(value["b"])])
    out(table(["STEP", "DIFFERS", "A", "B"], rows))


# -- check --------------------------------------------------------------------------------------


async def cmd_check(opts: Options, args: argparse.Namespace) -> int:
    if not import_modules(args.imports):
        return 1
    failed = False
    states: list[WorkflowState] = []
    problems: list[CheckProblem] = []
    async with open_reader(opts.storage) as store:
        if args.workflow_ids:
            for wid in dict.fromkeys(args.workflow_ids):
                try:
                    state = fold(wid, await load_events(store, wid), live=True)
                except EvflowError as exc:
                    report_error(exc)
                    failed = True
                    continue
                state.live = await owner_is_live(store, state)
                states.append(state)
        else:
            for wid, events in sorted((await store.read_all()).items()):
                try:
                    if isinstance(events, CorruptLogError):
                        raise events
                    state = fold(wid, events, live=True)
                except CorruptLogError as exc:
                    where = f"seq {exc.seq}" if isinstance(exc, LogFoldError) else f"byte {exc.position}"
                    problems.append(CheckProblem(wid, None, f"damaged log at {where}: {exc.what}"))
                    continue
                state.live = await owner_is_live(store, state)
                if state.status.value in UNFINISHED:
                    states.append(state)
    steps = 0
    for state in states:
        steps += len(steps_to_rerun(state))
        problems.extend(check_workflow(state))
    if opts.json:
        out(
            fmt_json(
                {
                    "checked": len(states),
                    "steps": steps,
                    "problems": [
                        {"workflow_id": p.workflow_id, "step": p.step, "problem": p.what} for p in problems
                    ],
                }
            )
        )
    else:
        for p in problems:
            where = quote_id(p.workflow_id) + (f" {p.step}" if p.step is not None else "")
            out(f"{where}: {' '.join(p.what.split())}")
        summary = (
            f"{len(states)} workflow{'s' if len(states) != 1 else ''} checked, "
            f"{steps} step{'s' if steps != 1 else ''} to run again"
        )
        if problems:
            out(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} ({summary})")
        else:
            out(f"ok: {summary}")
    return 1 if problems or failed else 0


# -- prune --------------------------------------------------------------------------------------


async def cmd_prune(opts: Options, args: argparse.Namespace) -> int:
    statuses = [s.value for s in args.status] if args.status else ["SUCCESSFUL"]
    async with Engine(opts.storage) as engine:
        count = await engine.prune(args.older_than, statuses)
    if opts.json:
        out(fmt_json({"pruned": count}))
    else:
        out(f"pruned {count} workflow{'s' if count != 1 else ''}")
    return 0
