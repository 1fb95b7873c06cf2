"""The in-memory side of one actor: its live instance, rebuilt from the recorded state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from .._codec import decode_value, encode_value
from .._latch import Latch
from .._projection import WorkflowState
from ._methods import class_info

__all__ = ["ActorRuntime", "encode_instance", "restore_instance"]


class ActorRuntime:
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
        self.custom_state = class_info(cls).custom_state
        #: The instance the writer steps run on, and the recorded state it was built from.
        self.instance: Any = None
        self.instance_state: bytes | None = None
        #: Actor method steps of one actor run one at a time, also within a chained DAG.
        self.lock = anyio.Lock()
        #: The latch of each submitted writer call somebody may wait on, by step name.
        self.outcomes: dict[str, Latch[Any]] = {}

    def live_instance(self) -> Any:
        """The instance writer steps run on, rebuilt from the recorded state if it moved."""
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
