"""Virtual actors: durable objects whose writer method calls are steps of one workflow.

``@evflow.virtual_actor`` makes a class an actor class (validated here, when applied);
``await Cls.get_or_create(actor_id, ...)`` / ``await evflow.get_actor(actor_id)`` give an
``ActorHandle``, and ``handle.method.run(...)`` calls a method durably.

How a call maps onto the engine (docs/actors.md has the user-facing story):

- The actor is a workflow of kind ``"actor"`` whose first event records the class path and
  the initial state. A writer call is recorded when submitted (``ActorCallSubmitted``) and
  is a step of that workflow (``step_type="ACTOR_METHOD"``), named like any step.
- One worker task per busy actor, in the engine's task group, runs the calls in submission
  order. Each call is a run: ``WorkflowStarted(resume=True)``, the call's DAG run by the
  engine's own ``_execute`` (so chained calls are continuations), then ``WorkflowFinished``
  or ``WorkflowFailed``. The fold makes the head call the run's ``output``.
- The engine hands every ``ACTOR_METHOD`` step to ``ActorSupport.run_step``: it runs the
  method on the live instance under the actor's lock and records the encoded state in the
  step's ``StepFinished``. A failed attempt drops the instance, so the next attempt (or
  call) starts again from the last recorded state.
- Readonly calls run on a fresh instance rebuilt from the recorded state and record nothing.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

import anyio

from . import _context
from ._api import WorkflowHandle
from ._codec import decode_value, encode_value, error_info, import_object, import_path
from ._engine import MAX_RETRY_DELAY, _call, _Run, _substitute
from ._errors import (
    WorkflowCancellationError,
    WorkflowExecutionError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from ._events import (
    FORMAT_VERSION,
    ActorCallSubmitted,
    StepFailed,
    StepFinished,
    StepOptions,
    StepSpec,
    StepStarted,
    WorkflowFinished,
    WorkflowStarted,
)
from ._projection import WorkflowState, WorkflowStatus, allocate_names, apply
from ._step import DEFAULT_OPTIONS, Node, StepFunction, iter_nodes, validate_options, validate_workflow_id

if TYPE_CHECKING:
    from ._engine import Engine, _Execution

__all__ = [
    "ActorCallHandle",
    "ActorHandle",
    "ActorMethod",
    "ActorMethodCaller",
    "ActorMethodNode",
    "ActorSupport",
    "BoundActorMethod",
    "resolve_actor_class",
    "virtual_actor",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Options an actor method call accepts (``checkpoint`` does not apply: a writer call's
#: output and the actor's state are always recorded).
WRITER_OPTIONS = frozenset({"name", "metadata", "max_retries", "retry_delay", "catch_exceptions", "timeout"})
#: A readonly call records nothing, so only the per-attempt timeout applies.
READONLY_OPTIONS = frozenset({"timeout"})

_READONLY_MARK = "__evflow_readonly__"
_ACTOR_MARK = "__evflow_actor__"

#: Actor classes by import path, so that an actor recorded in this process runs with the
#: very class even where the path does not import (a class defined in a test function).
_classes: dict[str, type[Any]] = {}


# -- decoration ------------------------------------------------------------------------------


class _ClassInfo:
    """What decoration learned about an actor class."""

    __slots__ = ("custom_state", "path")

    def __init__(self, path: str, custom_state: bool) -> None:
        self.path = path
        self.custom_state = custom_state


def _info(cls: type[Any]) -> _ClassInfo:
    info = cls.__dict__.get(_ACTOR_MARK)
    if not isinstance(info, _ClassInfo):
        raise TypeError(f"{cls.__qualname__} is not decorated with @evflow.virtual_actor")
    return info


class _VirtualActorDecorator:
    """``@evflow.virtual_actor`` on a class; ``@evflow.virtual_actor.readonly`` on a method."""

    def __call__(self, cls: type[T]) -> type[T]:
        """Make ``cls`` a virtual actor class (validated now).

        Raises ``ValueError`` when the class defines only one of ``__getstate__`` and
        ``__setstate__``, keeps its state in neither (``__slots__`` without them), has an
        ``async def __init__``, or defines ``get_or_create`` itself.
        """
        if not isinstance(cls, type):
            raise TypeError(f"@evflow.virtual_actor decorates a class, not {type(cls).__name__}")
        where = f"@evflow.virtual_actor {cls.__qualname__}"
        if _ACTOR_MARK in cls.__dict__:
            raise ValueError(f"{where}: the class is already a virtual actor class")
        has_get = getattr(cls, "__getstate__", object.__getstate__) is not object.__getstate__
        has_set = hasattr(cls, "__setstate__")
        if has_get != has_set:
            defined, missing = (
                ("__getstate__", "__setstate__") if has_get else ("__setstate__", "__getstate__")
            )
            raise ValueError(
                f"{where}: defines {defined} but not {missing}; define both (the actor's state is "
                "what __getstate__ returns) or neither (the state is the instance __dict__)"
            )
        if not has_get and cls.__dictoffset__ == 0:
            raise ValueError(
                f"{where}: instances have no __dict__ (__slots__); define __getstate__ and "
                "__setstate__ to say what the actor's state is"
            )
        if inspect.iscoroutinefunction(cls.__init__):
            raise ValueError(f"{where}: __init__ must be a plain (sync) method")
        if "get_or_create" in cls.__dict__:
            raise ValueError(f"{where}: get_or_create is reserved for creating the actor")
        methods: dict[str, ActorMethod] = {}
        for attr in dir(cls):
            if attr.startswith("_"):
                continue
            raw = inspect.getattr_static(cls, attr)
            if isinstance(raw, ActorMethod):
                methods[attr] = ActorMethod(raw.func, attr, cls, raw.readonly)
            elif inspect.isfunction(raw):
                methods[attr] = ActorMethod(raw, attr, cls, bool(getattr(raw, _READONLY_MARK, False)))
        for attr, method in methods.items():
            setattr(cls, attr, method)
        path = import_path(cls)
        setattr(cls, _ACTOR_MARK, _ClassInfo(path, has_get))
        setattr(cls, "get_or_create", classmethod(_get_or_create))  # noqa: B010 - a class attribute
        _classes[path] = cls
        return cls

    @staticmethod
    def readonly(func: F) -> F:
        """Mark an actor method read-only: it runs on a copy of the recorded state,
        concurrently with other readonly calls, and records nothing."""
        if not callable(func):
            raise TypeError(f"@evflow.virtual_actor.readonly decorates a method, not {type(func).__name__}")
        setattr(func, _READONLY_MARK, True)
        return func


virtual_actor = _VirtualActorDecorator()


async def _get_or_create(cls: type[Any], actor_id: str, *args: Any, **kwargs: Any) -> ActorHandle:
    """The actor ``actor_id``, created as ``cls(*args, **kwargs)`` if it does not exist yet
    (an existing actor's arguments are ignored). Uses the current engine."""
    support = _context.current_engine()._actor_support()
    assert isinstance(support, ActorSupport)
    return await support.get_or_create(cls, actor_id, args, kwargs)


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
    if not isinstance(obj, type) or not isinstance(obj.__dict__.get(_ACTOR_MARK), _ClassInfo):
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


def _merge_options(
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
            self._method, self._instance, _merge_options(self._options, options, self._method, where)
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
        return ActorMethodNode(_ActorStep(method, self._options), args, kwargs)

    def __repr__(self) -> str:
        return f"<evflow bound actor method {self._method.default_name!r}>"


class _ActorStep(StepFunction[..., Any]):
    """The step function of an actor method node, as ``Engine._record_dag`` reads it."""

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

    def options(self, **options: Any) -> _ActorStep:
        where = f"{self.name}.options()"
        return _ActorStep(self.method, _merge_options(self._options, options, self.method, where))

    def step(self, *args: Any, **kwargs: Any) -> ActorMethodNode:
        self.method.check_args(args, kwargs, f"{self.name}.step()")
        return ActorMethodNode(self, args, kwargs)


class ActorMethodNode(Node):
    """A chained actor method call: only meaningful as the return value of a writer method."""

    __slots__ = ()

    async def run(self, workflow_id: str | None = None, *, metadata: dict[str, Any] | None = None) -> Any:
        raise TypeError(_NODE_RUN_MESSAGE)

    async def run_async(
        self, workflow_id: str | None = None, *, metadata: dict[str, Any] | None = None
    ) -> WorkflowHandle:
        raise TypeError(_NODE_RUN_MESSAGE)


_NODE_RUN_MESSAGE = (
    "an actor method node runs only when a writer method of the same actor returns it; "
    "call methods from outside with `await handle.method.run(...)`"
)


def _nodes_of(root: Node) -> Iterator[Node]:
    seen = {id(root)}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        yield node
        for child in (*iter_nodes(node.args), *iter_nodes(node.kwargs)):
            if id(child) not in seen:
                seen.add(id(child))
                queue.append(child)


# -- handles, as seen from outside ------------------------------------------------------------


class ActorHandle:
    """A virtual actor: ``await handle.method.run(...)``, ``await handle.method.run_async(...)``."""

    __slots__ = ("_cls", "_support", "actor_id")

    def __init__(self, support: ActorSupport, actor_id: str, cls: type[Any]) -> None:
        self._support = support
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
                return ActorMethodCaller(self._support, self.actor_id, method, {})
        raise AttributeError(f"virtual actor {self._cls.__qualname__} has no method {attr!r}")

    def __repr__(self) -> str:
        return f"<ActorHandle {self._cls.__qualname__} {self.actor_id!r}>"


class ActorMethodCaller:
    """``handle.method``: ``.run(...)``, ``.run_async(...)``, ``.options(...)``; not callable."""

    __slots__ = ("_actor_id", "_method", "_options", "_support")

    def __init__(
        self, support: ActorSupport, actor_id: str, method: ActorMethod, options: dict[str, Any]
    ) -> None:
        self._support = support
        self._actor_id = actor_id
        self._method = method
        self._options = options

    def options(self, **options: Any) -> ActorMethodCaller:
        """A copy with ``options`` merged over the current ones: ``name``, ``metadata``,
        ``max_retries``, ``retry_delay``, ``catch_exceptions``, ``timeout`` for a writer
        method, only ``timeout`` for a readonly one (``TypeError`` otherwise)."""
        where = f"{self._method.default_name}.options()"
        merged = _merge_options(self._options, options, self._method, where)
        return ActorMethodCaller(self._support, self._actor_id, self._method, merged)

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method and return its value once the outcome is recorded.

        Raises ``WorkflowExecutionError`` (the method's exception as ``__cause__``) when
        it fails and ``WorkflowCancellationError`` when the actor is canceled first.
        """
        if self._method.readonly:
            return await self._support.call_readonly(
                self._actor_id, self._method, self._options, args, kwargs
            )
        handle = await self.run_async(*args, **kwargs)
        return await handle.result()

    async def run_async(self, *args: Any, **kwargs: Any) -> ActorCallHandle:
        """Submit the call; returns its handle once the call is durably recorded (a
        readonly call is started in the engine's task group and records nothing)."""
        if self._method.readonly:
            return await self._support.start_readonly(
                self._actor_id, self._method, self._options, args, kwargs
            )
        return await self._support.submit(self._actor_id, self._method, self._options, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        attr = self._method.attr
        raise TypeError(
            f"actor method {self._method.default_name!r} cannot be called directly; use "
            f"`await handle.{attr}.run(...)` or `await handle.{attr}.run_async(...)`"
        )

    def __repr__(self) -> str:
        return f"<evflow actor method {self._method.default_name!r} of {self._actor_id!r}>"


class _Outcome:
    """Where a call's value or error lands once it is known."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.value = value
            self.error = error
            self.done.set()


class ActorCallHandle(WorkflowHandle):
    """One submitted actor call: ``await handle`` / ``await handle.result()`` give its value.

    ``name`` is the call's step name (None for a readonly call, which has no step);
    ``status()``, ``metadata()`` and ``cancel()`` act on the whole actor.
    """

    __slots__ = ("_outcome", "name")

    def __init__(self, workflow_id: str, engine: Engine, name: str | None, outcome: _Outcome) -> None:
        super().__init__(workflow_id, engine)
        self.name = name
        self._outcome = outcome

    def __repr__(self) -> str:
        return f"<ActorCallHandle {self.workflow_id!r} {self.name!r}>"

    async def result(self) -> Any:
        """Wait until the call's outcome is recorded; return its value (raises as ``run``)."""
        await self._outcome.done.wait()
        if self._outcome.error is not None:
            raise self._outcome.error
        return self._outcome.value


# -- the engine side --------------------------------------------------------------------------


class _ActorRuntime:
    """In-memory companion of one actor: its live instance and the calls waited on."""

    __slots__ = (
        "allow_pickle",
        "cls",
        "custom_state",
        "instance",
        "instance_state",
        "lock",
        "outcomes",
        "state",
    )

    def __init__(self, state: WorkflowState, cls: type[Any], allow_pickle: bool) -> None:
        self.state = state
        self.cls = cls
        self.allow_pickle = allow_pickle
        self.custom_state = _info(cls).custom_state
        #: The instance the writer steps run on, and the recorded state it was built from.
        self.instance: Any = None
        self.instance_state: bytes | None = None
        #: Actor method steps of one actor run one at a time, also within a chained DAG.
        self.lock = anyio.Lock()
        self.outcomes: dict[str, _Outcome] = {}

    def live_instance(self) -> Any:
        recorded = self.state.actor_state
        if self.instance is None or self.instance_state is not recorded:
            self.instance = restore_instance(self.cls, self.custom_state, recorded, self.allow_pickle)
            self.instance_state = recorded
        return self.instance

    def discard(self) -> None:
        """Forget the live instance (its mutations are not to be kept)."""
        self.instance = None
        self.instance_state = None


def restore_instance(cls: type[Any], custom_state: bool, recorded: bytes | None, allow_pickle: bool) -> Any:
    """A new instance of ``cls`` holding the recorded state (``__init__`` is not called)."""
    if recorded is None:
        raise ValueError(f"the log of this {cls.__qualname__} actor holds no state")
    value = decode_value(recorded, allow_pickle=allow_pickle)
    new: Callable[..., Any] = cls.__new__  # as pickle does: __init__ is not run again
    instance = new(cls)
    if custom_state:
        instance.__setstate__(value)
    else:
        instance.__dict__.update(value)
    return instance


def encode_instance(instance: Any, custom_state: bool, *, allow_pickle: bool, what: str) -> bytes:
    """The recorded form of an actor's state (``__getstate__()`` or ``__dict__``)."""
    value = instance.__getstate__() if custom_state else dict(instance.__dict__)
    return encode_value(value, allow_pickle=allow_pickle, what=what)


class ActorSupport:
    """The engine's virtual-actor machinery (one per engine, made on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runtimes: dict[str, _ActorRuntime] = {}

    # -- lookup ----------------------------------------------------------------------------------

    def _actor_state(self, actor_id: str) -> WorkflowState:
        state = self.engine._state(actor_id)
        if state.kind != "actor":
            raise TypeError(f"workflow {actor_id!r} is not a virtual actor")
        return state

    def _runtime(self, state: WorkflowState) -> _ActorRuntime:
        runtime = self._runtimes.get(state.workflow_id)
        if runtime is None or runtime.state is not state:
            assert state.actor_class is not None
            runtime = _ActorRuntime(
                state,
                resolve_actor_class(state.actor_class, allow_import=self.engine.allow_pickle),
                self.engine.allow_pickle,
            )
            self._runtimes[state.workflow_id] = runtime
        return runtime

    async def get_actor(self, actor_id: str) -> ActorHandle:
        """A handle on an existing actor; ``WorkflowNotFoundError`` if absent, ``TypeError``
        if the workflow is not an actor."""
        state = self._actor_state(actor_id)
        return ActorHandle(self, actor_id, self._runtime(state).cls)

    async def get_or_create(
        self, cls: type[Any], actor_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorHandle:
        """The actor ``actor_id``, first recorded with ``cls(*args, **kwargs)``'s state."""
        engine = self.engine
        info = _info(cls)
        validate_workflow_id(actor_id)
        engine._require_open()
        try:
            state = engine._state(actor_id)
        except WorkflowNotFoundError:
            pass
        else:
            if state.kind != "actor":
                raise TypeError(f"workflow {actor_id!r} exists and is not a virtual actor")
            if state.actor_class != info.path:
                raise TypeError(f"actor {actor_id!r} is a {state.actor_class}, not a {info.path}")
            return ActorHandle(self, actor_id, cls)
        # No await from the check above until the state is registered: a concurrent
        # get_or_create of the same id finds it.
        instance = cls(*args, **kwargs)
        encoded = encode_instance(
            instance,
            info.custom_state,
            allow_pickle=engine.allow_pickle,
            what=f"the state of actor {actor_id!r}",
        )
        first = WorkflowStarted(
            seq=1,
            time=time.time(),
            workflow_id=actor_id,
            kind="actor",
            actor_class=info.path,
            actor_state=encoded,
            version=FORMAT_VERSION,
            owner=engine.engine_id,
        )
        engine.store.append_nowait(actor_id, [first])
        engine._states[actor_id] = apply(None, first)
        await engine.store.flush()
        return ActorHandle(self, actor_id, cls)

    # -- writer calls ------------------------------------------------------------------------------

    async def submit(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle:
        """Record a writer call and queue it; returns once the submission is durable."""
        engine = self.engine
        engine._require_open()
        state = self._actor_state(actor_id)
        runtime = self._runtime(state)
        where = f"actor {actor_id!r} call {method.default_name}"
        method.check_args(args, kwargs, where)
        if next(iter_nodes((args, kwargs)), None) is not None:
            raise TypeError(f"{where}: arguments of an actor call cannot be nodes; pass values")
        effective = {**DEFAULT_OPTIONS, **options}
        base = options.get("name") or method.default_name
        name = allocate_names(state, [base])[0]
        encoded = encode_value(
            (list(args), kwargs), allow_pickle=engine.allow_pickle, what=f"the arguments of step {name!r}"
        )
        spec = StepSpec(
            name=name,
            func=method.path,
            args=encoded,
            user_metadata=effective["metadata"],
            options=StepOptions(
                name=base,
                step_type="ACTOR_METHOD",
                max_retries=effective["max_retries"],
                retry_delay=effective["retry_delay"],
                catch_exceptions=effective["catch_exceptions"],
                timeout=effective["timeout"],
            ),
        )
        engine._emit(state, (ActorCallSubmitted, {"step": spec}))
        outcome = runtime.outcomes[name] = _Outcome()
        if actor_id not in engine._runs:
            self._start_worker(state)
        await engine.store.flush()
        return ActorCallHandle(actor_id, engine, name, outcome)

    def _start_worker(self, state: WorkflowState) -> None:
        """Open a run for the head call and start the actor's worker (never blocks)."""
        engine = self.engine
        wtg = engine._require_open()
        wid = state.workflow_id
        run = engine._runs[wid] = _Run(wid)
        state.live = True
        engine._exceptions.pop(wid, None)
        engine._emit(state, (WorkflowStarted, {"workflow_id": wid, "resume": True}))
        wtg.start_soon(self._work, state, run)

    async def _work(self, state: WorkflowState, run: _Run) -> None:
        """Run the actor's calls one per run, in submission order, until none is left."""
        engine = self.engine
        wid = state.workflow_id
        try:
            while True:
                head = state.output
                await engine._execute(state, run)
                if head is not None:
                    self._settle(state, head)
                if (
                    run.cancel_requested
                    or state.run_status is WorkflowStatus.RUNNING  # interrupted, or the store failed
                    or not state.actor_calls
                    or not engine.is_open
                ):
                    break
                # The next call opens its own run at once (no await since the last one
                # ended), so nothing can see the actor idle while calls wait.
                run = engine._runs[wid] = _Run(wid)
                state.live = True
                engine._exceptions.pop(wid, None)
                engine._emit(state, (WorkflowStarted, {"workflow_id": wid, "resume": True}))
        finally:
            runtime = self._runtimes.get(wid)
            if runtime is not None and runtime.outcomes and wid not in engine._runs:
                self._settle_rest(state, runtime)

    def _settle(self, state: WorkflowState, name: str) -> None:
        runtime = self._runtimes.get(state.workflow_id)
        outcome = runtime.outcomes.pop(name, None) if runtime is not None else None
        if outcome is None:
            return
        status = state.run_status
        if status is WorkflowStatus.SUCCESSFUL:
            try:
                outcome.settle(value=self.engine._output_value(state))
            except Exception as exc:  # an undecodable output fails this call's waiters only
                outcome.settle(error=exc)
        elif status is WorkflowStatus.FAILED:
            outcome.settle(error=self.engine._failure(state, None))
        elif status is WorkflowStatus.CANCELED:
            outcome.settle(error=WorkflowCancellationError(state.workflow_id))
        else:
            outcome.settle(error=WorkflowNotRunningError(state.workflow_id, state.status.value))

    def _settle_rest(self, state: WorkflowState, runtime: _ActorRuntime) -> None:
        """The worker stopped with calls unsettled: canceled, or interrupted (RESUMABLE)."""
        pending = set(state.actor_calls)
        for name, outcome in list(runtime.outcomes.items()):
            if name in pending:
                outcome.settle(error=WorkflowNotRunningError(state.workflow_id, state.status.value))
            else:
                outcome.settle(error=WorkflowCancellationError(state.workflow_id))
            del runtime.outcomes[name]

    async def resume_actor(self, state: WorkflowState) -> WorkflowHandle:
        """Run the calls submitted but not finished, in order, from the last recorded state.

        Returns a handle whose result is the value of the last call once none is left
        (``None`` for an actor never called). An actor being run is attached to.
        """
        engine = self.engine
        wid = state.workflow_id
        if wid not in engine._runs:
            if state.actor_calls:
                self._start_worker(state)
                await engine.store.flush()
            elif state.run_status is WorkflowStatus.RUNNING:
                # A run with no call left (its end was never recorded): just close it.
                engine._emit(
                    state, (WorkflowStarted, {"workflow_id": wid, "resume": True}), (WorkflowFinished, {})
                )
                await engine.store.flush()
        return engine._handle(wid)

    # -- running a method step ------------------------------------------------------------------

    async def run_step(self, execution: _Execution, name: str) -> list[str]:
        """Run actor method step ``name`` of a call (the engine's ``_run_step`` for actors).

        Same retry, timeout and catch_exceptions rules as any step; each attempt runs on
        the live instance under the actor's lock, and a failed attempt drops the instance
        so that the next one starts from the last recorded state. Returns the steps this
        one made runnable, as ``Engine._run_step`` does.
        """
        engine = self.engine
        state = execution.state
        spec = state.steps[name].spec
        opts = spec.options
        try:
            runtime = self._runtime(state)
            method = _method_for(runtime.cls, state, spec)
            args, kwargs = _substitute(
                decode_value(spec.args, allow_pickle=engine.allow_pickle), execution.value
            )
        except Exception as exc:
            info = error_info(exc, allow_pickle=engine.allow_pickle)
            engine._emit(
                state, (StepFailed, {"name": name, "attempt": 1, "will_retry": False, "error": info})
            )
            execution.fail(name, exc, info)
            return []
        _context.current_step.set(_context.StepContext(engine, state.workflow_id, name))
        what = f"the state of actor {state.workflow_id!r} after step {name!r}"
        attempt = 0
        while True:
            attempt += 1
            async with runtime.lock:
                fields: dict[str, Any] | None = None
                engine._emit(state, (StepStarted, {"name": name, "attempt": attempt}))
                try:
                    instance = runtime.live_instance()
                    result = await _call(
                        method.func, method.is_async, [instance, *args], kwargs, name, opts.timeout
                    )
                    if isinstance(result, Node):
                        _check_chain(state, result)
                    if opts.catch_exceptions:
                        result = (result, None)
                    recorded = encode_instance(
                        instance, runtime.custom_state, allow_pickle=engine.allow_pickle, what=what
                    )
                    fields = {**engine._finish_step(execution, name, opts, result), "actor_state": recorded}
                except anyio.get_cancelled_exc_class():
                    runtime.discard()
                    raise
                except Exception as exc:
                    runtime.discard()
                    will_retry = opts.max_retries == -1 or attempt <= opts.max_retries
                    if not will_retry and opts.catch_exceptions:
                        try:
                            caught = engine._finish_step(execution, name, opts, (None, exc))
                            fields = {**caught, "actor_state": state.actor_state}
                        except Exception as exc2:
                            exc = exc2
                    if fields is None:
                        info = error_info(exc, allow_pickle=engine.allow_pickle)
                        engine._emit(
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
                    engine._emit(state, (StepFinished, fields))
                    if runtime.instance is not None:
                        runtime.instance_state = state.actor_state
                    break
            delay = min(opts.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
            if delay > 0:
                await anyio.sleep(delay)
        await engine.store.flush()
        return execution.finished(name)

    # -- readonly calls --------------------------------------------------------------------------

    async def call_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a readonly method on a fresh instance built from the latest recorded state.

        Records nothing. Raises ``WorkflowExecutionError`` (cause: the method's exception)
        when it raises, ``TypeError`` when it returns a node.
        """
        engine = self.engine
        engine._require_open()
        state = self._actor_state(actor_id)
        runtime = self._runtime(state)
        where = f"actor {actor_id!r} readonly call {method.default_name}"
        method.check_args(args, kwargs, where)
        instance = restore_instance(
            runtime.cls, runtime.custom_state, state.actor_state, runtime.allow_pickle
        )
        try:
            result = await _call(
                method.func,
                method.is_async,
                [instance, *args],
                kwargs,
                method.default_name,
                options.get("timeout"),
            )
        except Exception as exc:
            error = WorkflowExecutionError(actor_id, method.default_name, f"{type(exc).__name__}: {exc}")
            raise error from exc
        if isinstance(result, Node):
            raise TypeError(f"{where}: a readonly method cannot return a node (chaining records state)")
        return result

    async def start_readonly(
        self,
        actor_id: str,
        method: ActorMethod,
        options: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ActorCallHandle:
        """Start a readonly call in the engine's task group; returns its handle at once."""
        engine = self.engine
        wtg = engine._require_open()
        self._actor_state(actor_id)
        method.check_args(args, kwargs, f"actor {actor_id!r} readonly call {method.default_name}")
        outcome = _Outcome()

        async def call() -> None:
            try:
                outcome.settle(value=await self.call_readonly(actor_id, method, options, args, kwargs))
            except Exception as exc:
                outcome.settle(error=exc)
            finally:
                outcome.settle(error=WorkflowNotRunningError(actor_id, "interrupted"))

        wtg.start_soon(call)
        return ActorCallHandle(actor_id, engine, None, outcome)


def _method_for(cls: type[Any], state: WorkflowState, spec: StepSpec) -> ActorMethod:
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


def _check_chain(state: WorkflowState, root: Node) -> None:
    for node in _nodes_of(root):
        function = node.function
        if isinstance(function, _ActorStep) and function.method.path.rpartition(".")[0] != state.actor_class:
            raise TypeError(
                f"actor {state.workflow_id!r} ({state.actor_class}) returned a node of "
                f"{function.method.default_name}: chain only this actor's own methods"
            )
