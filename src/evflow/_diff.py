"""Comparing two runs step by step (SPEC section 11): ``evflow.diff(events_a, events_b)``.

A pure function over two event lists, like ``replay``: both are folded, their steps are
aligned by name in the order the logs ran them, and each step is compared on what a
person debugging "why did this run differ" asks first: is it in both, were its inputs
the same, its output, its status (and error), its number of attempts, its duration.
Recorded values are compared and shown without unpickling anything (a log is data).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._codec import VALUE_MSGPACK, Ref, decode_value
from ._events import Event, StepFinished, StepStarted
from ._projection import StepState, WorkflowState, replay

__all__ = ["DEFAULT_TOLERANCE", "WorkflowDiff", "diff", "step_order"]

#: Seconds two durations of a step may differ by before they count as different.
DEFAULT_TOLERANCE = 1.0

#: The keys a row may have besides ``step``, in the order they are reported.
FIELDS = ("only_in", "inputs", "output", "status", "error", "attempts", "duration")


@dataclass(frozen=True)
class WorkflowDiff:
    """How two runs differ: one row per differing step, in the order the runs ran them.

    Each row is a dict with ``step`` and, for what differs, ``only_in`` (``"a"`` or
    ``"b"``) or ``{"a": ..., "b": ...}`` pairs under ``inputs``, ``output`` (short
    previews of the recorded values), ``status``, ``error``, ``attempts`` and
    ``duration`` (seconds).
    """

    workflow_a: str
    workflow_b: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Whether the runs agree on every step."""
        return not self.rows

    @property
    def first_divergence(self) -> str | None:
        """The first step (in run order) where they differ, or None."""
        return self.rows[0]["step"] if self.rows else None

    def to_json(self) -> dict[str, Any]:
        """The diff as JSON-compatible data (what ``evflow diff --json`` prints)."""
        return {
            "workflow_a": self.workflow_a,
            "workflow_b": self.workflow_b,
            "identical": self.identical,
            "first_divergence": self.first_divergence,
            "rows": [dict(row) for row in self.rows],
        }


def step_order(events: Iterable[Event], state: WorkflowState) -> list[str]:
    """The workflow's step names in the order its log ran them (first StepStarted or
    StepFinished), then those that never ran, as recorded."""
    seen: dict[str, None] = {}
    for event in events:
        if isinstance(event, StepStarted | StepFinished) and event.name in state.steps:
            seen.setdefault(event.name)
    for name in state.steps:
        seen.setdefault(name)
    return list(seen)


def _aligned(order_a: list[str], order_b: list[str]) -> list[str]:
    """A's order, with each step only in B placed right after the step before it in B."""
    merged = list(order_a)
    position = {name: i for i, name in enumerate(merged)}
    previous: str | None = None
    for name in order_b:
        if name not in position:
            at = position[previous] + 1 if previous is not None else 0
            merged.insert(at, name)
            position = {n: i for i, n in enumerate(merged)}
        previous = name
    return merged


def diff(
    events_a: Iterable[Event], events_b: Iterable[Event], *, tolerance: float | None = DEFAULT_TOLERANCE
) -> WorkflowDiff:
    """Align two runs' steps by name and report, in run order, each step that differs.

    ``tolerance``: seconds by which a step's durations may differ (None: durations are
    not compared). Raises ``ValueError`` for an empty or malformed log.
    """
    if tolerance is not None and (isinstance(tolerance, bool) or not tolerance >= 0 or math.isinf(tolerance)):
        raise ValueError(f"tolerance must be None or a finite number of seconds >= 0, got {tolerance!r}")
    list_a, list_b = list(events_a), list(events_b)
    a, b = replay(list_a), replay(list_b)
    rows: list[dict[str, Any]] = []
    for name in _aligned(step_order(list_a, a), step_order(list_b, b)):
        step_a, step_b = a.steps.get(name), b.steps.get(name)
        if step_a is None or step_b is None:
            rows.append({"step": name, "only_in": "a" if step_b is None else "b"})
            continue
        row = _compare(a, step_a, b, step_b, tolerance)
        if row:
            rows.append({"step": name, **row})
    return WorkflowDiff(a.workflow_id, b.workflow_id, rows)


def _compare(
    a: WorkflowState, step_a: StepState, b: WorkflowState, step_b: StepState, tolerance: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if not _same_value(step_a.spec.args, step_b.spec.args) or step_a.spec.func != step_b.spec.func:
        row["inputs"] = {"a": _inputs_text(step_a), "b": _inputs_text(step_b)}
    out_a, out_b = _output(a, step_a), _output(b, step_b)
    if not _same_value(out_a, out_b):
        row["output"] = {"a": _preview(out_a), "b": _preview(out_b)}
    status_a, status_b = a.step_status(step_a).value, b.step_status(step_b).value
    if status_a != status_b:
        row["status"] = {"a": status_a, "b": status_b}
    error_a, error_b = _error_text(step_a), _error_text(step_b)
    if error_a != error_b:
        row["error"] = {"a": error_a, "b": error_b}
    if step_a.attempt != step_b.attempt:
        row["attempts"] = {"a": step_a.attempt, "b": step_b.attempt}
    duration_a, duration_b = _duration(step_a), _duration(step_b)
    if (
        tolerance is not None
        and duration_a is not None
        and duration_b is not None
        and abs(duration_a - duration_b) > tolerance
    ):
        row["duration"] = {"a": round(duration_a, 6), "b": round(duration_b, 6)}
    return row


def _output(state: WorkflowState, step: StepState) -> bytes | None:
    src = state.value_source(step.name)
    return src.output if src is not None else None


def _duration(step: StepState) -> float | None:
    if step.start_time is None or step.end_time is None:
        return None
    return max(0.0, step.end_time - step.start_time)


def _error_text(step: StepState) -> str | None:
    if step.error is None or step.finished:
        return None
    name = step.error.type.rpartition(":")[2] or step.error.type
    return f"{name}: {step.error.message}" if step.error.message else name


def _plain(data: bytes | None) -> tuple[bool, Any]:
    """``(True, value)`` for a msgpack value (never a pickle: nothing is unpickled)."""
    if data is None or not data or data[0] != VALUE_MSGPACK:
        return False, None
    try:
        return True, decode_value(data, allow_pickle=False)
    except Exception:  # a damaged or foreign value compares by its bytes
        return False, None


def _same_value(x: bytes | None, y: bytes | None) -> bool:
    if x == y:
        return True
    (plain_x, value_x), (plain_y, value_y) = _plain(x), _plain(y)
    if not (plain_x and plain_y):
        return False
    try:
        return bool(value_x == value_y) and type(value_x) is type(value_y)
    except Exception:
        return False


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(data: bytes | None) -> str | None:
    if data is None:
        return None
    plain, value = _plain(data)
    if not plain:
        return (
            f"<pickled, {len(data)} bytes>" if data[:1] != bytes([VALUE_MSGPACK]) else f"<{len(data)} bytes>"
        )
    return _short(_repr(value))


def _repr(value: Any) -> str:
    if type(value) is Ref:
        return f"<{value.name}>"
    if type(value) is list:
        return "[" + ", ".join(_repr(v) for v in value) + "]"
    if type(value) is tuple:
        inner = ", ".join(_repr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if type(value) is dict:
        return "{" + ", ".join(f"{k!r}: {_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _inputs_text(step: StepState) -> str:
    """The step's recorded call, ``func(1, <add_1>, key='v')`` (a dependency is ``<name>``)."""
    func = step.spec.func.rpartition(":")[2] or step.spec.func
    plain, value = _plain(step.spec.args)
    if not plain or not (isinstance(value, tuple | list) and len(value) == 2):
        return _short(f"{func}(<pickled, {len(step.spec.args)} bytes>)")
    args, kwargs = value
    parts = [_repr(v) for v in args] + [f"{k}={_repr(v)}" for k, v in dict(kwargs).items()]
    return _short(f"{func}({', '.join(parts)})", 80)
