"""``@evflow.virtual_actor``: makes a class a virtual actor class, validated when applied.

``await Cls.get_or_create(actor_id, ...)`` (added by the decorator) creates or opens the
actor through the current engine's ``ActorService``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .._codec import import_path
from ..engine import current_engine
from ._handles import ActorHandle
from ._methods import ACTOR_MARK, READONLY_MARK, ActorMethod, ClassInfo, register_class
from ._service import ActorService

__all__ = ["virtual_actor"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


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
        if ACTOR_MARK in cls.__dict__:
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
                methods[attr] = ActorMethod(raw, attr, cls, bool(getattr(raw, READONLY_MARK, False)))
        for attr, method in methods.items():
            setattr(cls, attr, method)
        path = import_path(cls)
        setattr(cls, ACTOR_MARK, ClassInfo(path, has_get))
        setattr(cls, "get_or_create", classmethod(_get_or_create))  # noqa: B010 - a class attribute
        register_class(path, cls)
        return cls

    @staticmethod
    def readonly(func: F) -> F:
        """Mark an actor method read-only: it runs on a copy of the recorded state,
        concurrently with other readonly calls, and records nothing."""
        if not callable(func):
            raise TypeError(f"@evflow.virtual_actor.readonly decorates a method, not {type(func).__name__}")
        setattr(func, READONLY_MARK, True)
        return func


virtual_actor = _VirtualActorDecorator()


async def _get_or_create(cls: type[Any], actor_id: str, *args: Any, **kwargs: Any) -> ActorHandle:
    """The actor ``actor_id``, created as ``cls(*args, **kwargs)`` if it does not exist yet
    (an existing actor's arguments are ignored). Uses the current engine."""
    actors = current_engine().service(ActorService)
    return await actors.get_or_create(cls, actor_id, args, kwargs)
