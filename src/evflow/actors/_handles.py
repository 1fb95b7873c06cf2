"""Handles on actors, as seen from outside: ``ActorHandle``, ``handle.method``
(``ActorMethodCaller``) and one call's ``ActorCallHandle``."""

from __future__ import annotations

import inspect
from typing import Any, NoReturn, Protocol

import anyio

from .._latch import Latch
from ..engine import WorkflowControl, WorkflowHandle
from ._methods import ActorMethod, merge_options

__all__ = ["ActorCallHandle", "ActorCalls", "ActorHandle", "ActorMethodCaller"]


class ActorCalls(Protocol):
    """What a handle asks of the engine's actor service (``ActorService`` is it)."""

    async def submit(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle: ...

    async def call_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any: ...

    async def start_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle: ...


class ActorHandle:
    """A virtual actor: ``await handle.method.run(...)``, ``await handle.method.run_async(...)``."""

    __slots__ = ("_actors", "_cls", "actor_id")

    def __init__(self, actors: ActorCalls, actor_id: str, cls: type[Any]) -> None:
        self._actors = actors
        self.actor_id = actor_id
        self._cls = cls

    @property
    def workflow_id(self) -> str:
        """The actor's id is its workflow id."""
        return self.actor_id

    def __getattr__(self, attr: str) -> ActorMethodCaller:
        if not attr.startswith("_"):
            method = inspect.getattr_static(self._cls, attr, None)
            if isinstance(method, ActorMethod):
                return ActorMethodCaller(self._actors, self.actor_id, method, {})
        raise AttributeError(f"virtual actor {self._cls.__qualname__} has no method {attr!r}")

    def __repr__(self) -> str:
        return f"<ActorHandle {self._cls.__qualname__} {self.actor_id!r}>"


class ActorMethodCaller:
    """``handle.method``: ``.run(...)``, ``.run_async(...)``, ``.options(...)``; not callable."""

    __slots__ = ("_actor_id", "_actors", "_method", "_options")

    def __init__(
        self, actors: ActorCalls, actor_id: str, method: ActorMethod, options: dict[str, Any]
    ) -> None:
        self._actors = actors
        self._actor_id = actor_id
        self._method = method
        self._options = options

    def options(self, **options: Any) -> ActorMethodCaller:
        """A copy with ``options`` merged over the current ones: ``name``, ``metadata``,
        ``max_retries``, ``retry_delay``, ``catch_exceptions``, ``timeout`` for a writer
        method, only ``timeout`` for a readonly one (``TypeError`` otherwise)."""
        where = f"{self._method.default_name}.options()"
        merged = merge_options(self._options, options, self._method, where)
        return ActorMethodCaller(self._actors, self._actor_id, self._method, merged)

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method and return its value once the outcome is recorded.

        Raises ``WorkflowExecutionError`` (the method's exception as ``__cause__``) when
        it fails and ``WorkflowCancellationError`` when the actor is canceled first.
        """
        if self._method.readonly:
            return await self._actors.call_readonly(self._actor_id, self._method, self._options, args, kwargs)
        handle = await self.run_async(*args, **kwargs)
        return await handle.result()

    async def run_async(self, *args: Any, **kwargs: Any) -> ActorCallHandle:
        """Submit the call; returns its handle once the call is durably recorded (a
        readonly call is started in the engine's task group and records nothing)."""
        if self._method.readonly:
            return await self._actors.start_readonly(
                self._actor_id, self._method, self._options, args, kwargs
            )
        return await self._actors.submit(self._actor_id, self._method, self._options, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        attr = self._method.attr
        raise TypeError(
            f"actor method {self._method.default_name!r} cannot be called directly; use "
            f"`await handle.{attr}.run(...)` or `await handle.{attr}.run_async(...)`"
        )

    def __repr__(self) -> str:
        return f"<evflow actor method {self._method.default_name!r} of {self._actor_id!r}>"


class ActorCallHandle(WorkflowHandle):
    """One submitted actor call: ``await handle`` / ``await handle.result()`` give its value.

    ``name`` is the call's step name (None for a readonly call, which has no step);
    ``status()``, ``metadata()`` and ``cancel()`` act on the whole actor.
    """

    __slots__ = ("_outcome", "name")

    def __init__(
        self, workflow_id: str, engine: WorkflowControl, name: str | None, outcome: Latch[Any]
    ) -> None:
        super().__init__(workflow_id, engine)
        self.name = name
        self._outcome = outcome

    def __repr__(self) -> str:
        return f"<ActorCallHandle {self.workflow_id!r} {self.name!r}>"

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the contract's name (SPEC section 9)
        """Wait until the call's outcome is recorded; return its value (raises as ``run``).

        ``timeout``: seconds to wait at most, then ``TimeoutError`` (the call goes on).
        """
        if timeout is None:
            return await self._outcome.wait()
        with anyio.fail_after(timeout):
            return await self._outcome.wait()
