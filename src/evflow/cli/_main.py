"""The ``evflow`` command line: argument parsing, dispatch, exit codes, error messages.

Exit codes: 0 success, 1 a problem found or the operation failed, 2 usage error.
Expected errors (evflow's own, OS errors, bad input) print one line on stderr, never a
traceback; an unknown workflow prints ``not found: WID``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence

import anyio

from .._errors import EvflowError
from .._projection import WorkflowStatus
from .._step import validate_workflow_id
from ..engine._history import PRUNABLE
from ..stores._open import DEFAULT_STORAGE, open_store
from . import _commands, _history, _transfer, _verify
from ._demo import cmd_demo
from ._format import report_error, warn
from ._options import Options
from ._ui import cmd_ui
from ._worker import cmd_worker

__all__ = ["build_parser", "main"]

Command = Callable[[Options, argparse.Namespace], Awaitable[int]]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _workflow_id(text: str) -> str:
    try:
        return validate_workflow_id(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status(text: str) -> WorkflowStatus:
    try:
        return WorkflowStatus(text.upper())
    except ValueError:
        choices = ", ".join(s.value for s in WorkflowStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (choose from {choices})") from None


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a sequence number is an integer >= 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``evflow`` (one subcommand per SPEC section 7 row)."""
    parser = argparse.ArgumentParser(
        prog="evflow",
        description="Inspect, repair and move evflow workflow logs; run the demo.",
        epilog="Read-only commands never take the store's writer lock: they work while an engine runs.",
    )
    parser.add_argument(
        "--storage",
        metavar="STORAGE",
        default=None,
        help=f"a path, file://PATH, memory:// or postgresql://... "
        f"(default: $EVFLOW_STORAGE, else {DEFAULT_STORAGE})",
    )
    json_help = "print machine-readable JSON"
    parser.add_argument("--json", action="store_true", help=json_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        # SUPPRESS: a --json given before the command must not be reset by the subparser.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
        p.set_defaults(func=func)
        return p

    p = command("list", _commands.cmd_list, "list workflows and their statuses")
    p.add_argument(
        "--status",
        action="append",
        type=_status,
        metavar="S",
        help="only workflows with this status (repeatable; RUNNING, FAILED, RESUMABLE, CANCELED, SUCCESSFUL)",
    )

    p = command("status", _commands.cmd_status, "print a workflow's status")
    p.add_argument("workflow_id", type=_workflow_id, metavar="WID")

    p = command("show", _commands.cmd_show, "a workflow's (or a step's) metadata, now or as of a past event")
    p.add_argument("workflow_id", type=_workflow_id, metavar="WID")
    p.add_argument("--step", metavar="NAME", help="the metadata of this step")
    p.add_argument("--as-of", type=_seq, metavar="SEQ", help="as it was right after event SEQ")

    p = command("events", _commands.cmd_events, "a workflow's event log")
    p.add_argument("workflow_id", type=_workflow_id, metavar="WID")
    p.add_argument("--from", dest="from_seq", type=_seq, default=1, metavar="SEQ", help="start at event SEQ")
    p.add_argument("--follow", action="store_true", help="keep printing new events until the run ends")

    p = command("output", _commands.cmd_output, "a workflow's (or a step's) recorded output")
    p.add_argument("workflow_id", type=_workflow_id, metavar="WID")
    p.add_argument("--step", metavar="NAME", help="the output of this step")

    p = command("resume", _commands.cmd_resume, "resume workflows and wait for them to end")
    p.add_argument("workflow_ids", type=_workflow_id, nargs="*", metavar="WID")
    p.add_argument("--all", action="store_true", help="every RESUMABLE workflow")
    p.add_argument("--include-failed", action="store_true", help="with --all: FAILED ones too")

    p = command("cancel", _commands.cmd_cancel, "cancel workflows")
    p.add_argument("workflow_ids", type=_workflow_id, nargs="+", metavar="WID")

    p = command("delete", _commands.cmd_delete, "delete workflows and their logs")
    p.add_argument("workflow_ids", type=_workflow_id, nargs="+", metavar="WID")

    p = command("verify", _verify.cmd_verify, "check logs: framing, checksums, sequence, fold")
    p.add_argument("workflow_id", type=_workflow_id, nargs="?", metavar="WID")

    p = command("export", _transfer.cmd_export, "write workflow logs as JSON lines to stdout")
    p.add_argument("workflow_ids", type=_workflow_id, nargs="*", metavar="WID")
    p.add_argument("--all", action="store_true", help="every workflow of the store")

    p = command("import", _transfer.cmd_import, "add workflows from exported JSON lines")
    p.add_argument("files", nargs="+", metavar="FILE", help="a file written by export ('-' for stdin)")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip workflows the store already has with the same log (finishes an interrupted "
        "import); one whose log differs is still refused",
    )

    command("demo", cmd_demo, "run a small real workflow and print its metadata")
    _add_history_commands(command)

    p = command("worker", cmd_worker, "run queued and scheduled workflows, taking over those of dead workers")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        required=True,
        metavar="MODULE",
        help="import this module first (your step, queue and schedule modules; repeatable)",
    )
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        help="start the pending workflows of this queue only (repeatable; default: every declared queue)",
    )
    p.add_argument(
        "--recovery-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="take over a dead worker's workflows within this long (default: 5)",
    )
    p.add_argument("--engine-id", metavar="ID", help="this worker's engine id (default: host, pid, random)")

    p = command("ui", cmd_ui, "serve the web dashboard and JSON API over the store (needs evflow[web])")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8265, help="port to listen on (default: 8265)")
    p.add_argument("--read-only", action="store_true", help="serve reads only; never take the store's lock")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"a recovery interval is 0.5 to 3600 seconds, not {text!r}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a tolerance is a number of seconds >= 0, not {text!r}")
    return value


def _add_history_commands(command: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """SPEC section 11: fork, diff, check, prune (docs/history.md)."""
    imports_help = "import this module first (your step modules; repeatable)"
    p = command("fork", _history.cmd_fork, "start a new workflow from a point of another's history")
    p.add_argument("workflow_id", type=_workflow_id, metavar="WID")
    p.add_argument("--from-step", metavar="NAME", help="re-run this step and what was not finished before it")
    p.add_argument("--as-of", type=_seq, metavar="SEQ", help="from the log as it was right after event SEQ")
    p.add_argument("--new-id", type=_workflow_id, metavar="ID", help="the fork's id (default: generated)")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=imports_help)

    p = command("diff", _history.cmd_diff, "compare two runs step by step (exit 1 when they differ)")
    p.add_argument("workflow_a", type=_workflow_id, metavar="WID_A")
    p.add_argument("workflow_b", type=_workflow_id, metavar="WID_B")
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=1.0,
        metavar="SECONDS",
        help="durations that differ by no more than this agree (default 1)",
    )

    p = command("check", _history.cmd_check, "can the current code resume the unfinished workflows?")
    p.add_argument("workflow_ids", type=_workflow_id, nargs="*", metavar="WID")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=imports_help)

    p = command("prune", _history.cmd_prune, "delete finished workflows that ended long ago")
    p.add_argument(
        "--older-than",
        type=_history.parse_duration,
        required=True,
        metavar="AGE",
        help="ended more than this long ago: 30d, 12h, 15m, 90s",
    )
    p.add_argument(
        "--status",
        action="append",
        type=_status,
        metavar="S",
        help="only workflows with this status (repeatable; SUCCESSFUL (default), FAILED, CANCELED)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``evflow`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command in ("resume", "export") and bool(args.all) == bool(args.workflow_ids):
        return _usage(parser, args.command, "give workflow ids or --all (not both)")
    if args.command == "resume" and args.include_failed and not args.all:
        return _usage(parser, args.command, "--include-failed goes with --all")
    if args.command == "prune" and args.status:
        running = [s.value for s in args.status if s not in PRUNABLE]
        if running:
            return _usage(
                parser, args.command, f"prune deletes only finished workflows, never {', '.join(running)}"
            )
    try:
        open_store(args.storage, read_only=True)  # validates the scheme; opens nothing
    except (TypeError, ValueError) as exc:
        return _usage(parser, args.command, str(exc))
    options = Options(storage=args.storage, json=args.json)
    try:
        code: int = anyio.run(args.func, options, args)
    except KeyboardInterrupt:
        warn("interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PROBLEM
    except BaseException as exc:
        if isinstance(exc, BaseExceptionGroup) or _expected(exc):
            leaves = list(_leaves(exc))
            if all(_expected(leaf) for leaf in leaves):
                for leaf in leaves:
                    report_error(leaf)
                return EXIT_PROBLEM
        raise
    return code


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, EvflowError | OSError | ValueError)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _usage(parser: argparse.ArgumentParser, command: str, message: str) -> int:
    warn(f"{parser.prog} {command}: error: {message}")
    return EXIT_USAGE


def _silence_stdout() -> None:
    # The reader went away (`evflow events WID | head`): send the rest to /dev/null so
    # the interpreter's final flush does not complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
