"""The engine: a small core (``EngineCore``) that step kinds and services plug into, and
the public ``Engine`` built on it (docs/architecture.md).

Importing the package registers the ``FUNCTION`` step kind.
"""

from .._handle import WorkflowControl as WorkflowControl
from .._handle import WorkflowHandle as WorkflowHandle
from . import _function as _function  # registers the FUNCTION step kind
from ._attempts import MAX_RETRY_DELAY as MAX_RETRY_DELAY
from ._calls import call as call
from ._calls import substitute as substitute
from ._core import EngineCore as EngineCore
from ._core import EventListener as EventListener
from ._core import is_store_failure as is_store_failure
from ._engine import Engine as Engine
from ._engine import StatusFilter as StatusFilter
from ._engine import current_engine as current_engine
from ._engine import default_engine as default_engine
from ._execution import Execution as Execution
from ._kinds import OpenService as OpenService
from ._kinds import PreparedStep as PreparedStep
from ._kinds import StepKind as StepKind
from ._kinds import StepKindFactory as StepKindFactory
from ._kinds import WorkflowKindService as WorkflowKindService
from ._kinds import register_open_service as register_open_service
from ._kinds import register_step_kind as register_step_kind
from ._kinds import register_workflow_kind as register_workflow_kind
from ._messages import MailboxService as MailboxService
from ._messages import check_topic as check_topic
from ._published import check_event_key as check_event_key
from ._queues import Queue as Queue
from ._run import LiveRun as LiveRun

__all__ = [
    "MAX_RETRY_DELAY",
    "Engine",
    "EngineCore",
    "EventListener",
    "Execution",
    "LiveRun",
    "MailboxService",
    "OpenService",
    "PreparedStep",
    "Queue",
    "StatusFilter",
    "StepKind",
    "StepKindFactory",
    "WorkflowControl",
    "WorkflowHandle",
    "WorkflowKindService",
    "call",
    "check_event_key",
    "check_topic",
    "current_engine",
    "default_engine",
    "is_store_failure",
    "register_open_service",
    "register_step_kind",
    "register_workflow_kind",
    "substitute",
]
