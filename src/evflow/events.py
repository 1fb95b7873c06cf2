"""The event types of a workflow's log (see docs/event-log.md).

``evflow.read_events`` yields these; ``evflow.replay`` folds them.
"""

from ._events import EVENT_TYPES as EVENT_TYPES
from ._events import FORMAT_VERSION as FORMAT_VERSION
from ._events import ActorCallSubmitted as ActorCallSubmitted
from ._events import AnyEvent as AnyEvent
from ._events import ErrorInfo as ErrorInfo
from ._events import Event as Event
from ._events import EventPublished as EventPublished
from ._events import ForkOrigin as ForkOrigin
from ._events import MessageReceived as MessageReceived
from ._events import MetadataAttached as MetadataAttached
from ._events import StepCopy as StepCopy
from ._events import StepFailed as StepFailed
from ._events import StepFinished as StepFinished
from ._events import StepOptions as StepOptions
from ._events import StepSpec as StepSpec
from ._events import StepStarted as StepStarted
from ._events import TimerStarted as TimerStarted
from ._events import WorkflowCanceled as WorkflowCanceled
from ._events import WorkflowFailed as WorkflowFailed
from ._events import WorkflowFinished as WorkflowFinished
from ._events import WorkflowStarted as WorkflowStarted

__all__ = [
    "EVENT_TYPES",
    "FORMAT_VERSION",
    "ActorCallSubmitted",
    "AnyEvent",
    "ErrorInfo",
    "Event",
    "EventPublished",
    "ForkOrigin",
    "MessageReceived",
    "MetadataAttached",
    "StepFailed",
    "StepFinished",
    "StepCopy",
    "StepOptions",
    "StepSpec",
    "StepStarted",
    "TimerStarted",
    "WorkflowCanceled",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowStarted",
]
