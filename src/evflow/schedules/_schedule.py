"""``@evflow.scheduled``: cron schedules (SPEC section 9), declared at import time.

A schedule is a function ``(at: float) -> Node`` and a cron expression (``croniter``, UTC,
an optional sixth field of seconds). Each fire time ``at`` (epoch seconds) names one
workflow, ``"<name>@<ISO-8601 UTC fire time>"``: that id is what makes a fire time start
once, across restarts and engines. The fire-time arithmetic lives here; the
``ScheduleService`` (``_service.py``) starts the workflows while an engine is open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from croniter import CroniterError, croniter

from .._step import Node, default_step_name, validate_workflow_id
from ..engine import Queue

__all__ = ["MAX_CATCH_UP", "Schedule", "declared_schedules", "scheduled"]

#: With ``catch_up=True``, at most this many missed fire times start (the latest ones);
#: older ones are skipped, so a long outage of a fast schedule cannot flood the engine.
MAX_CATCH_UP = 1000

_ID_TIME = "%Y-%m-%dT%H:%M:%SZ"

_schedules: dict[str, Schedule] = {}


def declared_schedules() -> list[Schedule]:
    """Every schedule declared in this process."""
    return list(_schedules.values())


class Schedule:
    """A function that builds a workflow for each fire time of a cron expression.

    Calling it calls the function. Made by ``@evflow.scheduled``; it registers itself.
    """

    def __init__(
        self,
        func: Callable[[float], Node],
        cron: str,
        *,
        queue: Queue | None,
        catch_up: bool,
        name: str | None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"@evflow.scheduled decorates a function, not {type(func).__name__}")
        self.name = default_step_name(func) if name is None else name
        if not isinstance(self.name, str) or not self.name or "@" in self.name:
            raise ValueError(f"a schedule's name must be a non-empty str without '@', not {self.name!r}")
        if not isinstance(cron, str):
            raise TypeError(f"schedule {self.name!r}: the cron expression must be a str, not {cron!r}")
        try:
            croniter(cron, 0.0)
        except (CroniterError, ValueError, KeyError) as exc:
            raise ValueError(f"schedule {self.name!r}: invalid cron expression {cron!r}: {exc}") from None
        if queue is not None and not isinstance(queue, Queue):
            raise TypeError(f"schedule {self.name!r}: queue must be an evflow.Queue, not {queue!r}")
        validate_workflow_id(self.workflow_id(0.0))  # a name too long for an id fails here
        self.func = func
        self.cron = cron
        self.queue = queue
        self.catch_up = bool(catch_up)
        self.__name__ = getattr(func, "__name__", self.name)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__doc__ = getattr(func, "__doc__", None)
        _schedules[self.name] = self  # a reloaded module declares it again

    def __repr__(self) -> str:
        return f"<Schedule {self.name!r} {self.cron!r}>"

    def __call__(self, at: float) -> Node:
        return self.func(at)

    # -- fire times (epoch seconds; cron fire times are whole seconds) -------------------------

    def workflow_id(self, at: float) -> str:
        """The id of the workflow of fire time ``at``: ``"<name>@2030-01-01T00:15:00Z"``."""
        return f"{self.name}@{datetime.fromtimestamp(at, UTC).strftime(_ID_TIME)}"

    def fire_time(self, workflow_id: str) -> float | None:
        """The fire time a workflow id of this schedule names (None: not one of its ids)."""
        prefix = f"{self.name}@"
        if not workflow_id.startswith(prefix):
            return None
        try:
            return datetime.strptime(workflow_id[len(prefix) :], _ID_TIME).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None

    def newest(self, workflow_ids: Iterable[str]) -> float | None:
        """The latest fire time among the ids of this schedule's workflows (None: none)."""
        times = [t for t in map(self.fire_time, workflow_ids) if t is not None]
        return max(times) if times else None

    def next_after(self, now: float) -> float:
        """The first fire time after ``now``."""
        return float(croniter(self.cron, _utc(math.floor(now))).get_next(float))

    def due(self, after: float, now: float) -> list[float]:
        """The fire times in ``(after, now]`` to start, oldest first: every one (at most
        ``MAX_CATCH_UP``, the latest) with ``catch_up``, else only the latest."""
        limit = MAX_CATCH_UP if self.catch_up else 1
        it = croniter(self.cron, _utc(math.floor(now) + 1))  # get_prev: strictly before
        out: list[float] = []
        while len(out) < limit:
            at = float(it.get_prev(float))
            if at <= after:
                break
            out.append(at)
        out.reverse()
        return out


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def scheduled(
    cron: str,
    *,
    queue: Queue | None = None,
    catch_up: bool = False,
    name: str | None = None,
) -> Callable[[Callable[[float], Node]], Schedule]:
    """Start a workflow ``func(at)`` at each fire time ``at`` of ``cron`` (UTC) while an
    engine is open, with the id ``"<name>@<ISO-8601 UTC fire time>"`` (each fire time
    starts once). Fire times missed while no engine ran start once each with
    ``catch_up`` (at most ``MAX_CATCH_UP``), else only the latest. With ``queue``, the
    workflow is enqueued on it instead. ``name`` defaults to ``module.qualname``.

    Raises ``ValueError`` naming an invalid cron expression, when applied.
    """
    if not isinstance(cron, str):
        raise TypeError(f"@evflow.scheduled needs a cron expression (a str), not {cron!r}")
    if not croniter.is_valid(cron):
        try:
            croniter(cron, 0.0)
        except (CroniterError, ValueError, KeyError) as exc:
            raise ValueError(f"invalid cron expression {cron!r}: {exc}") from None
        raise ValueError(f"invalid cron expression {cron!r}")

    def decorate(func: Callable[[float], Node]) -> Schedule:
        return Schedule(func, cron, queue=queue, catch_up=catch_up, name=name)

    return decorate
