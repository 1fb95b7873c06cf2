"""The public surface is curated: these lists change only on purpose."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import evflow
import evflow.events
import evflow.stores

PUBLIC = {
    evflow: [
        "CorruptLogError",
        "DuplicateWorkflowError",
        "Engine",
        "EventListener",
        "EvflowError",
        "NoEngineError",
        "Queue",
        "QueueFullError",
        "Node",
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
    ],
    evflow.stores: ["ChangeFeed", "FileStore", "MemoryStore", "PostgresStore", "Store"],
    evflow.events: [
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
    ],
}


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_all_is_pinned(module: ModuleType) -> None:
    assert sorted(module.__all__) == sorted(PUBLIC[module])
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_public_classes_and_functions_have_docstrings(module: ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_errors_share_one_root_and_mix_in_builtins() -> None:
    for name in evflow.__all__:
        obj = getattr(evflow, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, evflow.EvflowError), name
    assert issubclass(evflow.WorkflowNotFoundError, LookupError)
    assert issubclass(evflow.StepNotFoundError, LookupError)
    assert issubclass(evflow.NoEngineError, RuntimeError)


def test_engine_mirrors_every_module_level_function() -> None:
    mirrored = [
        "cancel", "delete", "get_actor", "get_event", "get_metadata", "get_output", "get_status",
        "list_all", "resume", "resume_all", "resume_async",
    ]  # fmt: skip
    for name in mirrored:
        assert inspect.iscoroutinefunction(getattr(evflow.Engine, name)), name
        assert inspect.iscoroutinefunction(getattr(evflow, name)), name
    assert inspect.iscoroutinefunction(evflow.Engine.run)
    assert inspect.iscoroutinefunction(evflow.Engine.run_async)


def test_engine_mirrors_the_history_functions() -> None:
    for name in ("fork", "prune"):
        assert inspect.iscoroutinefunction(getattr(evflow.Engine, name)), name
        assert inspect.iscoroutinefunction(getattr(evflow, name)), name
    assert not inspect.iscoroutinefunction(evflow.diff)  # pure, like replay
