"""The one attempt loop, shared by every step kind.

For each step: ask its kind to prepare it, then attempt it until it succeeds, fails for
good or is cancelled. Retries wait ``retry_delay`` doubled each time, capped at
``MAX_RETRY_DELAY``; the ``timeout`` option limits each attempt; with
``catch_exceptions`` a step that fails for good records ``(None, exc)`` as its value.
Every attempt is recorded: StepStarted, then StepFailed (with ``will_retry``) or
StepFinished, emitted through the core.

This is the engine's hot path: a step costs no task and no await of its own here beyond
the attempt itself and the flush that makes its output durable.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .. import _context
from .._events import StepFailed, StepFinished, StepStarted
from ._dags import step_fields

if TYPE_CHECKING:
    from ._core import EngineCore
    from ._execution import Execution

__all__ = ["MAX_RETRY_DELAY", "check_startable", "fail_unstartable", "run_step"]

#: Cap, in seconds, of the doubling delay between retries.
MAX_RETRY_DELAY = 60.0


async def run_step(core: EngineCore, execution: Execution, name: str) -> list[str]:
    """Run step ``name`` of ``execution`` to its end; return the steps it made runnable
    (none when it failed for good: the execution then fails)."""
    state = execution.state
    spec = state.steps[name].spec
    opts = spec.options
    try:
        step = core.step_kind(opts.step_type).prepare(execution, spec)
    except Exception as exc:
        fail_unstartable(core, execution, name, exc)
        return []
    context = _context.StepContext(core, state.workflow_id, name)
    _context.current_step.set(context)
    lock = step.lock
    attempt = 0
    while True:
        attempt += 1
        context.attempt = attempt
        if lock is not None:
            await lock.acquire()
        try:
            fields = None
            lost = execution.run.lost
            if lost is not None:  # taken over meanwhile: its cancellation may not be here yet
                raise lost
            core.emit(state, (StepStarted, {"name": name, "attempt": attempt}))
            try:
                result = await step.attempt()
                if opts.catch_exceptions:
                    result = (result, None)
                fields = step.finish_fields(step_fields(execution, name, opts, result), True)
            except anyio.get_cancelled_exc_class():
                step.discard()
                raise
            except Exception as exc:
                step.discard()
                if anyio.current_effective_deadline() == -math.inf:
                    # Cancelled, and the step's own clean-up raised: the cancellation goes
                    # on (no StepFailed, no retry); its exception is dropped.
                    await anyio.lowlevel.checkpoint()
                will_retry = opts.max_retries == -1 or attempt <= opts.max_retries
                if not will_retry and opts.catch_exceptions:
                    try:
                        caught = step_fields(execution, name, opts, (None, exc))
                        fields = step.finish_fields(caught, False)
                    except Exception as exc2:
                        exc = exc2
                if fields is None:
                    info = core.error_info(exc)
                    core.emit(
                        state,
                        (
                            StepFailed,
                            {"name": name, "attempt": attempt, "will_retry": will_retry, "error": info},
                        ),
                    )
                    if not will_retry:
                        execution.fail(name, exc, info)
                        return []
            if fields is not None:
                core.emit(state, (StepFinished, fields))
                break
        finally:
            if lock is not None:
                lock.release()
        delay = min(opts.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
        if delay > 0:
            await anyio.sleep(delay)
    assert state.output is not None
    source = state.value_source(state.output)
    if source is None or source.name != name:
        await core.store.flush(state.workflow_id)
    # else: the workflow's output step. Nothing runs after it: its StepFinished becomes
    # durable with the WorkflowFinished that the core appends next, in one flush (and
    # should that flush fail, the core re-reads the workflow from the store).
    return execution.finished(name)


def check_startable(core: EngineCore, execution: Execution, names: list[str]) -> bool:
    """Check with its kind every step about to run, so that a log naming code that is
    not a step fails the workflow before any step runs; False when it did."""
    steps = execution.state.steps
    for name in names:
        spec = steps[name].spec
        try:
            core.step_kind(spec.options.step_type).check(spec)
        except (ImportError, LookupError) as exc:
            fail_unstartable(core, execution, name, exc)
            return False
    return True


def fail_unstartable(core: EngineCore, execution: Execution, name: str, exc: Exception) -> None:
    """Step ``name`` could not even be called: its one attempt starts and fails at once."""
    info = core.error_info(exc)
    core.emit(
        execution.state,
        (StepStarted, {"name": name, "attempt": 1}),
        (StepFailed, {"name": name, "attempt": 1, "will_retry": False, "error": info}),
    )
    execution.fail(name, exc, info)
