"""``@evflow.step``: step functions, their options, and lazy DAG nodes."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar, overload

import msgspec

from ._codec import import_object, import_path
from ._context import current_runner
from ._events import StepOptions, StepSpec
from ._handle import WorkflowHandle

__all__ = [
    "DEFAULT_OPTIONS",
    "Node",
    "StepFunction",
    "default_step_name",
    "iter_nodes",
    "resolve_step_function",
    "step",
    "step_spec",
    "validate_metadata",
    "validate_options",
    "validate_workflow_id",
]

P = ParamSpec("P")
R = TypeVar("R")

MAX_WORKFLOW_ID_LENGTH = 256

#: Option defaults (``name`` defaults to the function's ``module.qualname``).
DEFAULT_OPTIONS: dict[str, Any] = {
    "metadata": {},
    "max_retries": 3,
    "retry_delay": 0.0,
    "catch_exceptions": False,
    "timeout": None,
    "checkpoint": True,
}

#: Step functions by import path, filled only by ``@evflow.step``: what a recorded path
#: may resolve to. A DAG recorded in this process resumes with the very function even
#: where the import path does not import (a test's local step).
_registry: dict[str, Callable[..., Any]] = {}


def validate_metadata(metadata: Any, where: str) -> dict[str, Any]:
    """Return a copy of user metadata; ``ValueError`` unless a dict with str keys and JSON values."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata must be a dict, not {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise ValueError(f"{where}: metadata keys must be str, got {key!r}")
    try:
        text = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: metadata must be JSON-serialisable: {exc}") from None
    copied: dict[str, Any] = json.loads(text)
    try:
        msgspec.msgpack.encode(copied)  # as the log holds it, so that no later write fails
    except (OverflowError, UnicodeEncodeError) as exc:
        raise ValueError(
            f"{where}: metadata must be JSON that the event log can hold (integers from -2**63 "
            f"to 2**64-1, text without lone surrogates): {exc}"
        ) from None
    return copied


def validate_workflow_id(workflow_id: Any) -> str:
    """Check a workflow id: a non-empty str of at most 256 characters, without NUL and
    encodable as UTF-8 (no lone surrogate); else ``ValueError`` (``TypeError`` if no str)."""
    if not isinstance(workflow_id, str):
        raise TypeError(f"workflow id must be a str, not {type(workflow_id).__name__}")
    if not workflow_id:
        raise ValueError("workflow id must not be empty")
    if len(workflow_id) > MAX_WORKFLOW_ID_LENGTH:
        raise ValueError(
            f"workflow id is {len(workflow_id)} characters long; the limit is {MAX_WORKFLOW_ID_LENGTH}"
        )
    if "\x00" in workflow_id:
        raise ValueError(f"workflow id {workflow_id!r} contains a NUL character")
    if not workflow_id.isascii():
        # The log and the stores keep ids as UTF-8, which a lone surrogate is not.
        try:
            workflow_id.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"workflow id {workflow_id!r} is not valid Unicode text (a lone surrogate at "
                f"index {exc.start}); ids are stored as UTF-8"
            ) from None
    return workflow_id


def validate_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Check step options; raise ``ValueError``/``TypeError`` naming the bad one."""
    unknown = set(options) - set(DEFAULT_OPTIONS) - {"name"}
    if unknown:
        raise TypeError(
            f"{where}: unknown step option(s) {sorted(unknown)}; "
            f"accepted: {sorted([*DEFAULT_OPTIONS, 'name'])}"
        )
    out = dict(options)
    if "name" in out and (not isinstance(out["name"], str) or not out["name"]):
        raise ValueError(f"{where}: name must be a non-empty str, got {out['name']!r}")
    if "metadata" in out:
        out["metadata"] = validate_metadata(out["metadata"], where)
    if "max_retries" in out:
        value = out["max_retries"]
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"{where}: max_retries must be an int >= -1 (-1 = unbounded), got {value!r}")
    if "retry_delay" in out:
        value = out["retry_delay"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise ValueError(f"{where}: retry_delay must be a finite number of seconds >= 0, got {value!r}")
        out["retry_delay"] = float(value)
    if "timeout" in out and out["timeout"] is not None:
        value = out["timeout"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
            or math.isinf(value)
        ):
            raise ValueError(f"{where}: timeout must be None or a number of seconds > 0, got {value!r}")
        out["timeout"] = float(value)
    for flag in ("catch_exceptions", "checkpoint"):
        if flag in out and not isinstance(out[flag], bool):
            raise ValueError(f"{where}: {flag} must be a bool, got {out[flag]!r}")
    return out


def step_spec(name: str, func: str, args: bytes, options: dict[str, Any], deps: list[str]) -> StepSpec:
    """The recorded spec of step ``name``: ``options`` are its effective options (every
    option with its default filled in, ``name`` the base name, ``step_type`` if not
    ``"FUNCTION"``), ``args`` its encoded arguments, ``deps`` the steps they refer to."""
    return StepSpec(
        name=name,
        func=func,
        args=args,
        deps=deps,
        user_metadata=options["metadata"],
        options=StepOptions(
            name=options["name"],
            step_type=options.get("step_type", "FUNCTION"),
            max_retries=options["max_retries"],
            retry_delay=options["retry_delay"],
            catch_exceptions=options["catch_exceptions"],
            timeout=options["timeout"],
            checkpoint=options["checkpoint"],
        ),
    )


def default_step_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` with ``<locals>`` written ``locals``."""
    return f"{func.__module__}.{func.__qualname__}".replace("<locals>", "locals")


def resolve_step_function(path: str, *, allow_import: bool) -> Callable[..., Any]:
    """The step function recorded as ``module:qualname``; raises ``ImportError`` naming it.

    A log is data, never code: only a function decorated with ``@evflow.step`` is ever
    returned, anything else the path names is refused. ``allow_import=False`` (an engine
    with ``allow_pickle=False``) imports nothing: the step must have been decorated in
    this process, i.e. its module imported by the application.
    """
    func = _registry.get(path)
    if func is not None:
        return func
    if not allow_import:
        raise ImportError(
            f"step function {path!r} is not an @evflow.step function this process has "
            "imported, and an engine opened with allow_pickle=False imports no module that "
            "a log names: import the module that defines it before resuming"
        )
    try:
        obj = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"step function {path!r} cannot be imported: {exc}") from exc
    if isinstance(obj, StepFunction):
        return obj.func
    raise ImportError(
        f"step function {path!r} is a {type(obj).__name__}, not a function decorated with "
        "@evflow.step: refused (a log can only name steps)"
    )


class StepFunction(Generic[P, R]):
    """A function decorated with ``@evflow.step``: call ``.step(...)`` to get a node."""

    #: Whether the nodes among a node's arguments are its dependencies (it runs after
    #: them, with their values). False for a node whose step kind runs them itself
    #: (``evflow.wait``): they are recorded with the DAG, not as its ``deps``.
    waits_for_arguments = True

    def __init__(self, func: Callable[P, R], options: dict[str, Any]) -> None:
        if not callable(func):
            raise TypeError(f"@evflow.step needs a function, not {type(func).__name__}")
        self.func = func
        self.path = import_path(func)
        self._options = options
        self._signature = inspect.signature(func)
        self.is_async = inspect.iscoroutinefunction(func)
        # One string for every step recorded from this function, not one per workflow.
        self._default_name = default_step_name(func)
        _registry[self.path] = func
        self.__name__ = getattr(func, "__name__", "step")
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    @property
    def name(self) -> str:
        """The base step name."""
        name = self._options.get("name")
        return name if isinstance(name, str) else self._default_name

    def effective_options(self) -> dict[str, Any]:
        """Every option with defaults filled in."""
        return {**DEFAULT_OPTIONS, **self._options, "name": self.name}

    def options(self, **options: Any) -> StepFunction[P, R]:
        """A copy with ``options`` merged over the current ones (``metadata`` dicts merge too)."""
        checked = validate_options(options, f"{self.name}.options()")
        merged = {**self._options, **checked}
        if "metadata" in checked:
            merged["metadata"] = {**self._options.get("metadata", {}), **checked["metadata"]}
        return StepFunction(self.func, merged)

    def step(self, *args: Any, **kwargs: Any) -> Node:
        """A lazy node calling the function with these arguments; nothing runs yet.

        Raises ``TypeError`` when the arguments do not fit the signature.
        """
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}.step(): {exc}") from None
        return Node(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"step {self.name!r} cannot be called directly; use {self.__name__}.step(...) to build "
            f"a node and run it with `await node.run()`"
        )

    def __repr__(self) -> str:
        return f"<evflow step {self.name!r}>"


class Node:
    """A lazy call of a step: the unit of a DAG. Run it with ``await node.run()``."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(
        self, function: StepFunction[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"<evflow node {self.function.name!r}>"

    async def run(
        self,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any:
        """Run this DAG as a workflow to the end and return its output.

        Raises ``WorkflowExecutionError`` (the step's exception as ``__cause__``) on
        failure and ``WorkflowCancellationError`` if canceled (``WorkflowTimeoutError``
        when canceled by its ``timeout``: seconds from now, a deadline recorded at start).
        """
        return await current_runner().run(self, workflow_id, metadata=metadata, timeout=timeout)

    async def run_async(
        self,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle:
        """Start this DAG as a workflow; returns a handle once it is durably recorded."""
        return await current_runner().run_async(self, workflow_id, metadata=metadata, timeout=timeout)


def iter_nodes(value: Any) -> Iterator[Node]:
    """Nodes inside a value (lists, tuples and dicts at any depth), in argument order."""
    if isinstance(value, Node):
        yield value
    elif type(value) in (list, tuple):
        for item in value:
            yield from iter_nodes(item)
    elif type(value) is dict:
        for item in value.values():
            yield from iter_nodes(item)


@overload
def step(func: Callable[P, R], /) -> StepFunction[P, R]: ...
@overload
def step(
    *,
    name: str | None = ...,
    metadata: dict[str, Any] | None = ...,
    max_retries: int = ...,
    retry_delay: float = ...,
    catch_exceptions: bool = ...,
    timeout: float | None = ...,
    checkpoint: bool = ...,
) -> Callable[[Callable[P, R]], StepFunction[P, R]]: ...
def step(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function (sync or async) a workflow step: ``@evflow.step`` or ``@evflow.step(**options)``.

    Options are validated here (``ValueError`` for bad metadata, ``TypeError`` for an
    unknown option); see ``StepFunction.options`` for their meaning.
    """
    if func is not None:
        if options:
            raise TypeError("use @evflow.step or @evflow.step(**options)")
        return StepFunction(func, {})
    where = f"@evflow.step({', '.join(options)})"
    checked = validate_options({k: v for k, v in options.items() if not (k == "name" and v is None)}, where)

    def decorate(f: Callable[P, R]) -> StepFunction[P, R]:
        return StepFunction(f, checked)

    return decorate
