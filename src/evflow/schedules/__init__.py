"""Cron schedules (SPEC section 9), built on the engine core.

``@evflow.scheduled`` declares a schedule at import time (``_schedule.py``); the
``ScheduleService`` (``_service.py``, an open service of the core) starts each fire
time's workflow while an engine is open, on the engine's one timer. The service
registers when this package is imported (``evflow/__init__.py`` imports it); the core
never imports this package.
"""

from ._schedule import MAX_CATCH_UP as MAX_CATCH_UP
from ._schedule import Schedule as Schedule
from ._schedule import declared_schedules as declared_schedules
from ._schedule import scheduled as scheduled
from ._service import ScheduleService as ScheduleService

__all__ = ["MAX_CATCH_UP", "Schedule", "ScheduleService", "declared_schedules", "scheduled"]
