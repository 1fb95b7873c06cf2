"""The exception tree of evflow.

::

    EvflowError
    ├── WorkflowNotFoundError (LookupError)
    ├── StepNotFoundError (LookupError)
    ├── WorkflowExecutionError         the step's exception (or the StoreError) is its __cause__
    ├── WorkflowCancellationError
    │   └── WorkflowTimeoutError (TimeoutError)   its ``timeout=`` deadline passed
    ├── DuplicateWorkflowError         a queue's ``dedup_id`` is held by a live workflow
    ├── QueueFullError                 ``max_pending_workflows`` workflows already wait
    ├── WorkflowRunningError
    ├── WorkflowNotRunningError
    ├── NoEngineError (RuntimeError)
    ├── StepError                      a recorded exception whose type cannot be rebuilt
    ├── UnencodableError (TypeError)   a value neither msgpack nor (allowed) pickle can record
    ├── BadExportError (ValueError)    ``evflow import`` input that is not an export
    └── StoreError
        ├── StoreLockedError           another live process writes this store
        ├── CorruptLogError            a damaged record (names workflow and position)
        │   └── LogFoldError           intact records whose events do not fold (names the seq)
        └── SequenceConflictError      an append whose sequence number is already taken
"""

from __future__ import annotations

__all__ = [
    "BadExportError",
    "CorruptLogError",
    "DuplicateWorkflowError",
    "EvflowError",
    "LogFoldError",
    "NoEngineError",
    "QueueFullError",
    "SequenceConflictError",
    "StepError",
    "StepNotFoundError",
    "StoreError",
    "StoreLockedError",
    "UnencodableError",
    "WorkflowCancellationError",
    "WorkflowExecutionError",
    "WorkflowNotFoundError",
    "WorkflowNotRunningError",
    "WorkflowRunningError",
    "WorkflowTimeoutError",
]


class EvflowError(Exception):
    """Root of every error evflow raises on purpose."""


class WorkflowNotFoundError(EvflowError, LookupError):
    """No workflow with this id exists in the store."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} not found")
        self.workflow_id = workflow_id


class StepNotFoundError(EvflowError, LookupError):
    """The workflow has no step with this name."""

    def __init__(self, workflow_id: str, name: str) -> None:
        super().__init__(f"workflow {workflow_id!r} has no step named {name!r}")
        self.workflow_id = workflow_id
        self.name = name


class WorkflowExecutionError(EvflowError):
    """A workflow failed; the failing step's exception is the ``__cause__``.

    Also raised for a run the store could not record, with the ``StoreError`` as the
    ``__cause__`` (the workflow is then RESUMABLE, see docs/storage.md).
    """

    def __init__(self, workflow_id: str, step: str | None = None, message: str = "") -> None:
        where = f" at step {step!r}" if step else ""
        text = f"workflow {workflow_id!r} failed{where}"
        super().__init__(f"{text}: {message}" if message else text)
        self.workflow_id = workflow_id
        self.step = step


class WorkflowCancellationError(EvflowError):
    """The workflow was canceled."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} was canceled")
        self.workflow_id = workflow_id


class WorkflowTimeoutError(WorkflowCancellationError, TimeoutError):
    """The workflow was canceled because its ``timeout=`` deadline passed."""

    def __init__(self, workflow_id: str, deadline: float) -> None:
        EvflowError.__init__(self, f"workflow {workflow_id!r} was canceled: its deadline {deadline} passed")
        self.workflow_id = workflow_id
        self.deadline = deadline


class DuplicateWorkflowError(EvflowError):
    """A pending or running workflow of the queue already holds this ``dedup_id``."""

    def __init__(self, queue: str, dedup_id: str, holder: str) -> None:
        super().__init__(
            f"queue {queue!r}: dedup_id {dedup_id!r} is held by workflow {holder!r}, "
            "which is pending or running; nothing was recorded"
        )
        self.queue = queue
        self.dedup_id = dedup_id
        self.workflow_id = holder


class QueueFullError(EvflowError):
    """``max_pending_workflows`` workflows already wait in this engine; nothing was recorded."""

    def __init__(self, workflow_id: str, limit: int) -> None:
        super().__init__(
            f"workflow {workflow_id!r} not recorded: {limit} workflows are already pending "
            "(max_pending_workflows); retry later or raise the limit"
        )
        self.workflow_id = workflow_id
        self.limit = limit


class WorkflowRunningError(EvflowError):
    """The operation is not allowed while the workflow runs."""

    def __init__(self, workflow_id: str, what: str = "") -> None:
        tail = f": {what}" if what else ""
        super().__init__(f"workflow {workflow_id!r} is running{tail}")
        self.workflow_id = workflow_id


class WorkflowNotRunningError(EvflowError):
    """Waiting on a workflow that no live engine runs (resume it first)."""

    def __init__(self, workflow_id: str, status: str, hint: str | None = None) -> None:
        if hint is None:
            hint = f"call evflow.resume({workflow_id!r}) to run it"
        super().__init__(f"workflow {workflow_id!r} is {status} and not running; {hint}")
        self.workflow_id = workflow_id
        self.status = status


class NoEngineError(EvflowError, RuntimeError):
    """A module-level function was called with no engine open."""

    def __init__(self) -> None:
        super().__init__(
            "no evflow engine is open in this context; wrap the call in "
            "`async with evflow.Engine(storage): ...` or call the method on an engine"
        )


class StepError(EvflowError):
    """Stands in for a recorded step exception whose original type cannot be rebuilt."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class UnencodableError(EvflowError, TypeError):
    """A value can be neither msgpack-encoded nor pickled (or pickling is refused)."""


class BadExportError(EvflowError, ValueError):
    """The input of ``evflow import`` is not an export: names the file and line."""


class StoreError(EvflowError):
    """The store could not do what was asked."""


class StoreLockedError(StoreError):
    """Another live process holds the file store's writer lock."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"store {path!r} is locked by {holder}; one engine writes a file store at a time "
            "(use PostgreSQL for several engines, or read it with the CLI)"
        )
        self.path = path
        self.pid = pid


class CorruptLogError(StoreError):
    """A damaged record in the middle of a workflow's log."""

    def __init__(self, workflow_id: str, position: int, what: str) -> None:
        super().__init__(f"workflow {workflow_id!r}: damaged log at byte {position}: {what}")
        self.workflow_id = workflow_id
        self.position = position
        self.what = what


class LogFoldError(CorruptLogError):
    """A log whose records are intact but whose events do not fold (``seq`` names the
    offending event; ``position`` is 0: the fault is not at a byte)."""

    def __init__(self, workflow_id: str, seq: int, what: str) -> None:
        super().__init__(workflow_id, 0, what)
        self.seq = seq
        self.args = (f"workflow {workflow_id!r}: the log does not fold at seq {seq}: {what}",)


class LeaseExpiredError(StoreError):
    """A shared store refused an append because this engine's lease ran out (the process
    was paused, or cut off from the server, for longer than the lease): another engine
    may own the workflow now."""


class SequenceConflictError(StoreError):
    """An append's sequence number does not follow the stored log."""

    def __init__(self, workflow_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"workflow {workflow_id!r}: append at seq {expected} but the log is at seq {actual} "
            "(another engine wrote this workflow)"
        )
        self.workflow_id = workflow_id
        self.expected = expected
        self.actual = actual
