"""Actor classes and their methods: the class registry, ``ActorMethod`` (what
``@evflow.virtual_actor`` puts on the class), and the nodes a method returns to chain.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, overload

from .._codec import import_object, import_path
from .._events import StepSpec
from .._projection import WorkflowState
from .._step import DEFAULT_OPTIONS, Node, StepFunction, iter_nodes, validate_options

if TYPE_CHECKING:
    from ..engine import WorkflowHandle

__all__ = [
    "ACTOR_MARK",
    "READONLY_MARK",
    "READONLY_OPTIONS",
    "WRITER_OPTIONS",
    "ActorMethod",
    "ActorMethodNode",
    "ActorStep",
    "BoundActorMethod",
    "ClassInfo",
    "check_chain",
    "class_info",
    "merge_options",
    "method_for",
    "nodes_of",
    "register_class",
    "resolve_actor_class",
]

#: Options an actor method call accepts (``checkpoint`` does not apply: a writer call's
#: output and the actor's state are always recorded).
WRITER_OPTIONS = frozenset({"name", "metadata", "max_retries", "retry_delay", "catch_exceptions", "timeout"})
#: A readonly call records nothing, so only the per-attempt timeout applies.
READONLY_OPTIONS = frozenset({"timeout"})

#: The attribute that marks a readonly method, and the one that holds a class's ClassInfo.
READONLY_MARK = "__evflow_readonly__"
ACTOR_MARK = "__evflow_actor__"

#: Actor classes by import path, so that an actor recorded in this process runs with the
#: very class even where the path does not import (a class defined in a test function).
_classes: dict[str, type[Any]] = {}


def register_class(path: str, cls: type[Any]) -> None:
    """Remember a decorated actor class under its import path."""
    _classes[path] = cls


class ClassInfo:
    """What decoration learned about an actor class."""

    __slots__ = ("custom_state", "path")

    def __init__(self, path: str, custom_state: bool) -> None:
        self.path = path
        self.custom_state = custom_state


def class_info(cls: type[Any]) -> ClassInfo:
    info = cls.__dict__.get(ACTOR_MARK)
    if not isinstance(info, ClassInfo):
        raise TypeError(f"{cls.__qualname__} is not decorated with @evflow.virtual_actor")
    return info


def resolve_actor_class(path: str, *, allow_import: bool) -> type[Any]:
    """The actor class recorded as ``module:qualname``; raises ``ImportError`` naming it.

    Only a class decorated with ``@evflow.virtual_actor`` is returned. ``allow_import=False``
    (an engine with ``allow_pickle=False``) imports nothing: the class must have been
    decorated in this process.
    """
    cls = _classes.get(path)
    if cls is not None:
        return cls
    if not allow_import:
        raise ImportError(
            f"virtual actor class {path!r} is not an @evflow.virtual_actor class this process "
            "has imported, and an engine opened with allow_pickle=False imports no module that "
            "a log names: import the module that defines it first"
        )
    try:
        obj = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"virtual actor class {path!r} cannot be imported: {exc}") from exc
    if not isinstance(obj, type) or not isinstance(obj.__dict__.get(ACTOR_MARK), ClassInfo):
        raise ImportError(f"{path!r} is not a class decorated with @evflow.virtual_actor")
    return obj


# -- methods, as seen from inside the class ----------------------------------------------------


class ActorMethod:
    """A method of an actor class (a descriptor put there by ``@evflow.virtual_actor``).

    On an instance it gives a ``BoundActorMethod``: call it as a plain method, or
    ``self.method.step(...)`` for a node that chains the call.
    """

    def __init__(self, func: Callable[..., Any], attr: str, owner: type[Any], readonly: bool) -> None:
        self.func = func
        self.attr = attr
        self.owner = owner
        self.readonly = readonly
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        #: The default step name, ``module.Class.method`` (``<locals>`` written ``locals``).
        self.default_name = f"{owner.__module__}.{owner.__qualname__}.{attr}".replace("<locals>", "locals")
        #: Recorded as the step's ``func``: ``module:Class.method``.
        self.path = f"{import_path(owner)}.{attr}"
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> ActorMethod: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> BoundActorMethod: ...
    def __get__(
        self, instance: object | None, owner: type[Any] | None = None
    ) -> ActorMethod | BoundActorMethod:
        if instance is None:
            return self
        return BoundActorMethod(self, instance, {})

    def __call__(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        """``Cls.method(instance, ...)``: a plain call, nothing recorded."""
        return self.func(instance, *args, **kwargs)

    def check_args(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> None:
        """Raise ``TypeError`` when the arguments do not fit the method's signature."""
        try:
            self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{where}: {exc}") from None

    def __repr__(self) -> str:
        return f"<evflow actor method {self.default_name!r}>"


def merge_options(
    current: dict[str, Any], options: dict[str, Any], method: ActorMethod, where: str
) -> dict[str, Any]:
    accepted = READONLY_OPTIONS if method.readonly else WRITER_OPTIONS
    unknown = set(options) - accepted
    if unknown:
        kind = "a readonly call records nothing, so" if method.readonly else "an actor call"
        raise TypeError(
            f"{where}: {kind} accepts only the option(s) {sorted(accepted)}, not {sorted(unknown)}"
        )
    checked = validate_options(options, where)
    merged = {**current, **checked}
    if "metadata" in checked:
        merged["metadata"] = {**current.get("metadata", {}), **checked["metadata"]}
    return merged


class BoundActorMethod:
    """``self.method`` inside an actor: callable as usual, plus ``.options()`` and ``.step()``."""

    __slots__ = ("_instance", "_method", "_options")

    def __init__(self, method: ActorMethod, instance: Any, options: dict[str, Any]) -> None:
        self._method = method
        self._instance = instance
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method.func(self._instance, *args, **kwargs)

    def options(self, **options: Any) -> BoundActorMethod:
        """A copy with ``options`` merged over the current ones (``metadata`` dicts merge too)."""
        where = f"{self._method.default_name}.options()"
        return BoundActorMethod(
            self._method, self._instance, merge_options(self._options, options, self._method, where)
        )

    def step(self, *args: Any, **kwargs: Any) -> ActorMethodNode:
        """A node calling this method on the same actor; return it from a writer method to
        chain the call (a continuation). Raises ``TypeError`` for a readonly method or
        arguments that do not fit."""
        method = self._method
        if method.readonly:
            raise TypeError(
                f"readonly method {method.default_name!r} cannot be chained with .step(); "
                f"call it directly (self.{method.attr}(...)) or make it a writer method"
            )
        method.check_args(args, kwargs, f"{method.default_name}.step()")
        return ActorMethodNode(ActorStep(method, self._options), args, kwargs)

    def __repr__(self) -> str:
        return f"<evflow bound actor method {self._method.default_name!r}>"


class ActorStep(StepFunction[..., Any]):
    """The step function of an actor method node, as ``engine._dags.record_dag`` reads it."""

    def __init__(self, method: ActorMethod, options: dict[str, Any]) -> None:
        super().__init__(method.func, options)
        self.method = method
        self.path = method.path

    @property
    def name(self) -> str:
        name = self._options.get("name")
        return name if isinstance(name, str) else self.method.default_name

    def effective_options(self) -> dict[str, Any]:
        return {**DEFAULT_OPTIONS, **self._options, "name": self.name, "step_type": "ACTOR_METHOD"}

    def options(self, **options: Any) -> ActorStep:
        where = f"{self.name}.options()"
        return ActorStep(self.method, merge_options(self._options, options, self.method, where))

    def step(self, *args: Any, **kwargs: Any) -> ActorMethodNode:
        self.method.check_args(args, kwargs, f"{self.name}.step()")
        return ActorMethodNode(self, args, kwargs)


class ActorMethodNode(Node):
    """A chained actor method call: only meaningful as the return value of a writer method."""

    __slots__ = ()

    async def run(
        self,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> Any:
        raise TypeError(_NODE_RUN_MESSAGE)

    async def run_async(
        self,
        workflow_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name (SPEC section 9)
    ) -> WorkflowHandle:
        raise TypeError(_NODE_RUN_MESSAGE)


_NODE_RUN_MESSAGE = (
    "an actor method node runs only when a writer method of the same actor returns it; "
    "call methods from outside with `await handle.method.run(...)`"
)


def nodes_of(root: Node) -> Iterator[Node]:
    seen = {id(root)}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        yield node
        for child in (*iter_nodes(node.args), *iter_nodes(node.kwargs)):
            if id(child) not in seen:
                seen.add(id(child))
                queue.append(child)


# -- checks made when a call runs ---------------------------------------------------------------


def method_for(cls: type[Any], state: WorkflowState, spec: StepSpec) -> ActorMethod:
    owner, _, attr = spec.func.rpartition(".")
    if owner != state.actor_class:
        raise TypeError(
            f"step {spec.name!r} calls {spec.func!r}, which is not a method of actor "
            f"{state.workflow_id!r} ({state.actor_class})"
        )
    method = inspect.getattr_static(cls, attr, None)
    if not isinstance(method, ActorMethod):
        raise AttributeError(
            f"virtual actor class {state.actor_class} has no method {attr!r} (step {spec.name!r})"
        )
    if method.readonly:
        raise TypeError(f"step {spec.name!r}: readonly method {attr!r} cannot run as a recorded step")
    return method


def check_chain(state: WorkflowState, root: Node) -> None:
    for node in nodes_of(root):
        function = node.function
        if isinstance(function, ActorStep) and function.method.path.rpartition(".")[0] != state.actor_class:
            raise TypeError(
                f"actor {state.workflow_id!r} ({state.actor_class}) returned a node of "
                f"{function.method.default_name}: chain only this actor's own methods"
            )
