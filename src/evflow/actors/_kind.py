"""The ``ACTOR_METHOD`` step kind: a writer method call of a virtual actor.

The core's attempt loop runs it like any step (retries, timeout, catch_exceptions);
each attempt runs the method on the actor's live instance under the actor's lock, the
StepFinished records the actor's new state, and a failed attempt drops the instance so
that the next one (or the next call) starts again from the last recorded state.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import anyio

from .._codec import decode_value
from .._events import StepSpec
from .._projection import WorkflowState
from .._step import Node
from ..engine import EngineCore, Execution, call, register_step_kind, substitute
from ._methods import ActorMethod, check_chain, method_for
from ._runtime import ActorRuntime, encode_instance
from ._service import ActorService

__all__ = ["ActorMethodKind", "ActorMethodStep"]


class ActorMethodStep:
    """One actor method step ready to run."""

    __slots__ = (
        "allow_pickle",
        "args",
        "instance",
        "kwargs",
        "lock",
        "method",
        "name",
        "runtime",
        "state",
        "timeout",
    )

    def __init__(
        self,
        runtime: ActorRuntime,
        method: ActorMethod,
        args: list[Any],
        kwargs: dict[str, Any],
        spec: StepSpec,
        allow_pickle: bool,
    ) -> None:
        self.runtime = runtime
        self.state: WorkflowState = runtime.state
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.name = spec.name
        self.timeout = spec.options.timeout
        self.allow_pickle = allow_pickle
        #: Writer steps of one actor run one at a time, also within a chained DAG.
        self.lock: anyio.Lock | None = runtime.lock
        self.instance: Any = None

    def attempt(self) -> Awaitable[Any]:
        return self._attempt()

    async def _attempt(self) -> Any:
        instance = self.runtime.live_instance()
        method = self.method
        result = await call(
            method.func, method.is_async, [instance, *self.args], self.kwargs, self.name, self.timeout
        )
        if isinstance(result, Node):
            check_chain(self.state, result)
        self.instance = instance
        return result

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        recorded: bytes | None
        if succeeded:
            recorded = encode_instance(
                self.instance,
                self.runtime.custom_state,
                allow_pickle=self.allow_pickle,
                what=f"the state of actor {self.state.workflow_id!r} after step {self.name!r}",
            )
        else:  # a caught exception: the instance was dropped, the recorded state stands
            recorded = self.state.actor_state
        if self.runtime.instance is not None:
            # the live instance is the state about to be recorded (the identity check of
            # ActorRuntime.live_instance rebuilds it if that record never gets folded)
            self.runtime.instance_state = recorded
        return {**fields, "actor_state": recorded}

    def discard(self) -> None:
        self.runtime.discard()


class ActorMethodKind:
    """Resolves the actor's method (only this actor's own writer methods) and arguments."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.actors = core.service(ActorService)

    def check(self, spec: StepSpec) -> None:
        pass  # an actor method is checked against its class when it runs

    def prepare(self, execution: Execution, spec: StepSpec) -> ActorMethodStep:
        runtime = self.actors.runtime(execution.state)
        method = method_for(runtime.cls, execution.state, spec)
        allow_pickle = self.core.allow_pickle
        args, kwargs = substitute(decode_value(spec.args, allow_pickle=allow_pickle), execution.value)
        return ActorMethodStep(runtime, method, args, kwargs, spec, allow_pickle)


register_step_kind("ACTOR_METHOD", ActorMethodKind)
