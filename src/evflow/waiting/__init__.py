"""Durable time and waiting (SPEC section 8), built on the engine core.

``evflow.sleep`` / ``evflow.sleep_until`` / ``evflow.wait`` build nodes (``_nodes.py``);
the ``SLEEP`` step kind (``_sleep.py``) runs the first two with the engine's one timer
(``_timers.py``, a service of the core), the ``WAIT`` kind (``_wait.py``) the last. The
kinds register with the core when this package is imported (``evflow/__init__.py``
imports it); the core never imports this package.
"""

from . import _sleep as _sleep  # registers the SLEEP step kind
from . import _wait as _wait  # registers the WAIT step kind
from ._nodes import BuiltinStep as BuiltinStep
from ._nodes import sleep as sleep
from ._nodes import sleep_until as sleep_until
from ._nodes import wait as wait
from ._timers import TimerService as TimerService

__all__ = ["BuiltinStep", "TimerService", "sleep", "sleep_until", "wait"]
