"""The ``FUNCTION`` step kind: a function decorated with ``@evflow.step``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._codec import decode_value
from .._events import StepSpec
from .._step import resolve_step_function
from ._calls import call, substitute
from ._kinds import register_step_kind

if TYPE_CHECKING:
    from ._core import EngineCore
    from ._execution import Execution

__all__ = ["FunctionKind", "FunctionStep"]


class FunctionStep:
    """A function step ready to run: each attempt calls it with the same arguments."""

    __slots__ = ("args", "func", "is_async", "kwargs", "name", "timeout")

    #: Nothing to hold across an attempt.
    lock: anyio.Lock | None = None

    def __init__(
        self,
        func: Callable[..., Any],
        is_async: bool,
        args: list[Any],
        kwargs: dict[str, Any],
        spec: StepSpec,
    ) -> None:
        self.func = func
        self.is_async = is_async
        self.args = args
        self.kwargs = kwargs
        self.name = spec.name
        self.timeout = spec.options.timeout

    def attempt(self) -> Awaitable[Any]:
        return call(self.func, self.is_async, self.args, self.kwargs, self.name, self.timeout)

    def finish_fields(self, fields: dict[str, Any], succeeded: bool) -> dict[str, Any]:
        return fields

    def discard(self) -> None:
        pass


class FunctionKind:
    """Resolves the recorded function (only ``@evflow.step`` functions; with
    ``allow_pickle=False`` only those already imported) and its arguments."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        #: Whether each resolved function is async, by recorded path (inspect is not free).
        self.is_async: dict[str, bool] = {}

    def check(self, spec: StepSpec) -> None:
        resolve_step_function(spec.func, allow_import=self.core.allow_pickle)

    def prepare(self, execution: Execution, spec: StepSpec) -> FunctionStep:
        func = resolve_step_function(spec.func, allow_import=self.core.allow_pickle)
        args, kwargs = substitute(
            decode_value(spec.args, allow_pickle=self.core.allow_pickle), execution.value
        )
        is_async = self.is_async.get(spec.func)
        if is_async is None:
            is_async = self.is_async[spec.func] = inspect.iscoroutinefunction(func)
        return FunctionStep(func, is_async, args, kwargs, spec)


register_step_kind("FUNCTION", FunctionKind)
