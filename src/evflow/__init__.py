"""evflow: a durable, event-sourced workflow engine for Python (asyncio and trio).

Steps are functions decorated with ``@evflow.step``; ``f.step(...)`` builds a lazy DAG
node and ``await node.run(workflow_id)`` runs it inside ``async with evflow.Engine(...)``.
Every state change is an event in the workflow's log; status, metadata and stats are
folded from that log (``evflow.replay``).
"""

from ._api import WorkflowHandle as WorkflowHandle
from ._api import attach_metadata as attach_metadata
from ._api import cancel as cancel
from ._api import delete as delete
from ._api import fork as fork
from ._api import get_actor as get_actor
from ._api import get_current_attempt as get_current_attempt
from ._api import get_current_step_name as get_current_step_name
from ._api import get_current_workflow_id as get_current_workflow_id
from ._api import get_event as get_event
from ._api import get_metadata as get_metadata
from ._api import get_output as get_output
from ._api import get_status as get_status
from ._api import list_all as list_all
from ._api import prune as prune
from ._api import resume as resume
from ._api import resume_all as resume_all
from ._api import resume_async as resume_async
from ._api import send as send
from ._api import set_event as set_event
from ._diff import WorkflowDiff as WorkflowDiff
from ._diff import diff as diff
from ._errors import CorruptLogError as CorruptLogError
from ._errors import DuplicateWorkflowError as DuplicateWorkflowError
from ._errors import EvflowError as EvflowError
from ._errors import NoEngineError as NoEngineError
from ._errors import QueueFullError as QueueFullError
from ._errors import SequenceConflictError as SequenceConflictError
from ._errors import StepError as StepError
from ._errors import StepNotFoundError as StepNotFoundError
from ._errors import StoreError as StoreError
from ._errors import StoreLockedError as StoreLockedError
from ._errors import WorkflowCancellationError as WorkflowCancellationError
from ._errors import WorkflowExecutionError as WorkflowExecutionError
from ._errors import WorkflowNotFoundError as WorkflowNotFoundError
from ._errors import WorkflowNotRunningError as WorkflowNotRunningError
from ._errors import WorkflowRunningError as WorkflowRunningError
from ._errors import WorkflowTimeoutError as WorkflowTimeoutError
from ._projection import StepStatus as StepStatus
from ._projection import WorkflowState as WorkflowState
from ._projection import WorkflowStatus as WorkflowStatus
from ._projection import replay as replay
from ._replay import read_events as read_events
from ._step import Node as Node
from ._step import StepFunction as StepFunction
from ._step import step as step
from .actors import virtual_actor as virtual_actor
from .engine import Engine as Engine
from .engine import Queue as Queue
from .schedules import scheduled as scheduled
from .stores import Store as Store
from .waiting import EventListener as EventListener
from .waiting import sleep as sleep
from .waiting import sleep_until as sleep_until
from .waiting import wait as wait
from .waiting import wait_for_event as wait_for_event

__version__ = "0.1.0"

__all__ = [
    "CorruptLogError",
    "DuplicateWorkflowError",
    "Engine",
    "EventListener",
    "EvflowError",
    "NoEngineError",
    "Node",
    "Queue",
    "QueueFullError",
    "SequenceConflictError",
    "StepError",
    "StepFunction",
    "StepNotFoundError",
    "StepStatus",
    "Store",
    "StoreError",
    "StoreLockedError",
    "WorkflowCancellationError",
    "WorkflowDiff",
    "WorkflowExecutionError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowNotRunningError",
    "WorkflowRunningError",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowTimeoutError",
    "attach_metadata",
    "cancel",
    "delete",
    "diff",
    "fork",
    "get_actor",
    "get_current_attempt",
    "get_current_step_name",
    "get_current_workflow_id",
    "get_event",
    "get_metadata",
    "get_output",
    "get_status",
    "list_all",
    "prune",
    "read_events",
    "replay",
    "resume",
    "resume_all",
    "resume_async",
    "scheduled",
    "send",
    "set_event",
    "sleep",
    "sleep_until",
    "step",
    "virtual_actor",
    "wait",
    "wait_for_event",
]
