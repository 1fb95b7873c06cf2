"""Can the current code resume a workflow? (SPEC section 11, ``evflow check``.)

For each step a resume would run again (no checkpointed value), the recorded function
must resolve to an ``@evflow.step`` function (an actor method: the actor's class and a
writer method of it) and its signature must accept the recorded arguments; dependencies
are bound as placeholders, since their values do not exist yet. Importing the modules a
log names runs their code, as a resume would: check only stores you trust.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from ._codec import decode_value
from ._projection import WorkflowState, WorkflowStatus
from ._step import resolve_step_function
from .actors._methods import method_for, resolve_actor_class
from .engine._kinds import step_kind_factory

__all__ = ["UNFINISHED", "CheckProblem", "check_workflow", "steps_to_rerun"]

#: The statuses ``evflow check`` looks at by default: what may run again. PENDING (queued,
#: not started) counts where this release knows it.
UNFINISHED = frozenset({"RESUMABLE", "FAILED", "RUNNING", "PENDING"})


class CheckProblem(NamedTuple):
    """One reason the current code cannot resume a workflow: where, and what."""

    workflow_id: str
    step: str | None
    what: str


def steps_to_rerun(state: WorkflowState) -> list[str]:
    """The steps a resume of the workflow would run (those without a recorded value that
    its output needs), in DAG order; for an actor, its waiting calls."""
    if state.kind == "actor":
        return [name for name in state.actor_calls if not state.steps[name].finished]
    if state.output is None or state.status is WorkflowStatus.SUCCESSFUL:
        return []
    out: list[str] = []
    seen: set[str] = set()
    work = [state.output]
    while work:
        name = work.pop(0)
        if name in seen or name not in state.steps:
            continue
        seen.add(name)
        step = state.steps[name]
        src = state.value_source(name)
        if src is not None and src.output is not None:
            continue  # its value is recorded
        if step.finished and step.continuation_output is not None:
            work.append(step.continuation_output)  # the parent is done; its child is not
            continue
        out.append(name)
        work.extend(step.spec.deps)
    return out


def check_workflow(state: WorkflowState) -> list[CheckProblem]:
    """The problems the current code would hit resuming the workflow ([] when none)."""
    wid = state.workflow_id
    problems: list[CheckProblem] = []
    actor_class: type[Any] | None = None
    if state.kind == "actor":
        try:
            actor_class = resolve_actor_class(state.actor_class or "", allow_import=True)
        except ImportError as exc:
            return [CheckProblem(wid, None, str(exc))]
    for name in steps_to_rerun(state):
        spec = state.steps[name].spec
        step_type = spec.options.step_type

        def problem(what: str, name: str = name) -> None:
            problems.append(CheckProblem(wid, name, what))

        try:
            step_kind_factory(step_type)
        except LookupError as exc:
            problem(str(exc))
            continue
        signature: inspect.Signature | None = None
        leading: tuple[Any, ...] = ()
        where = spec.func
        try:
            if step_type == "FUNCTION":
                signature = inspect.signature(resolve_step_function(spec.func, allow_import=True))
            elif step_type == "ACTOR_METHOD" and actor_class is not None:
                signature = method_for(actor_class, state, spec).signature
                leading = (None,)  # self
        except (ImportError, AttributeError, TypeError) as exc:
            problem(" ".join(str(exc).split()))
            continue
        if signature is None:
            continue  # a step kind of the engine's own: no user code to check
        try:
            args, kwargs = decode_value(spec.args, allow_pickle=True)
        except Exception as exc:  # unpickling may raise anything (a moved class)
            problem(f"its recorded arguments cannot be decoded: {type(exc).__name__}: {exc}")
            continue
        try:
            signature.bind(*leading, *args, **kwargs)
        except TypeError as exc:
            shown = _signature_text(where, signature, drop_first=bool(leading))
            problem(f"{shown} does not accept the recorded arguments: {exc}")
    return problems


def _signature_text(path: str, signature: inspect.Signature, *, drop_first: bool) -> str:
    params = [
        p.replace(annotation=inspect.Parameter.empty)
        for p in list(signature.parameters.values())[1 if drop_first else 0 :]
    ]
    name = path.rpartition(":")[2] or path
    return f"{name}{signature.replace(parameters=params, return_annotation=inspect.Signature.empty)}"
