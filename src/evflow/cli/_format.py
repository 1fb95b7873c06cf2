"""Output helpers for the CLI: aligned tables, times, JSON, progress on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from .._errors import StepNotFoundError, WorkflowNotFoundError
from .._events import ErrorInfo

__all__ = [
    "Progress",
    "error_text",
    "fmt_duration",
    "fmt_json",
    "fmt_time",
    "out",
    "out_bytes",
    "quote_id",
    "report_error",
    "table",
    "warn",
]


def out(text: str = "") -> None:
    """A line on stdout."""
    print(text, file=sys.stdout)


def out_bytes(data: bytes) -> None:
    """Raw bytes on stdout (JSON written by msgspec is UTF-8 whatever the locale)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def warn(text: str) -> None:
    """A line on stderr."""
    print(text, file=sys.stderr)


def report_error(exc: BaseException) -> None:
    """One line on stderr for an expected error: ``not found: WID`` or ``error: ...``."""
    if isinstance(exc, WorkflowNotFoundError):
        warn(f"not found: {quote_id(exc.workflow_id)}")
    elif isinstance(exc, StepNotFoundError):
        warn(f"not found: step {exc.name!r} in workflow {quote_id(exc.workflow_id)}")
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
        warn(f"error: {text}")


def fmt_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text (ASCII-only, so any terminal encoding can print it)."""
    return json.dumps(value, indent=indent, allow_nan=False)


def quote_id(workflow_id: str) -> str:
    """An id as one whitespace-free word: as it is when printable, else JSON-quoted."""
    if workflow_id and workflow_id.isprintable() and not any(c.isspace() for c in workflow_id):
        return workflow_id
    return json.dumps(workflow_id)


def fmt_time(t: float | None) -> str:
    """Epoch seconds as local time with milliseconds; ``-`` when unknown."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_duration(start: float | None, end: float | None) -> str:
    """``end - start`` as ``0.123s`` / ``2m03.4s`` / ``1h02m03s``; ``-`` when unknown."""
    if start is None or end is None:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{int(secs):02d}s"


def error_text(info: ErrorInfo) -> str:
    """``Type: message`` of a recorded exception (the type without its module)."""
    name = info.type.rpartition(":")[2] or info.type
    return f"{name}: {info.message}" if info.message else name


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, headers first."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class Progress:
    """``label i/n`` on one rewritten stderr line, only when stderr is a terminal and
    there is more than one item (so pipes and logs never see it)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = total > 1 and _isatty(self._stream)
        self._width = 0

    def advance(self, detail: str = "") -> None:
        """One more item finished."""
        self.done += 1
        if not self._enabled:
            return
        text = f"{self.label} {self.done}/{self.total} {detail}".rstrip()[:120]
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write(f"\r{text}{pad}")
        self._stream.flush()

    def close(self) -> None:
        """Clear the progress line."""
        if self._enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
