"""Ray-style event listeners: ``evflow.wait_for_event(ListenerClass, *args)``.

A listener class subclasses ``evflow.EventListener``; defining the subclass registers it
by its import path (``module:qualname``), which is what a log records. A log is data,
never code: a recorded path is only ever resolved to a registered subclass, anything
else it names is refused before anything runs (as step functions are, ``_step``).
"""

from __future__ import annotations

from typing import Any

from .._codec import import_object, import_path

__all__ = ["EventListener", "overrides_checkpointed", "resolve_listener"]

#: Listener classes by import path, filled only by subclassing ``EventListener``.
_registry: dict[str, type[EventListener]] = {}


class EventListener:
    """Base of the listener classes ``evflow.wait_for_event`` accepts, as
    ``ray.workflow.EventListener``.

    The engine makes an instance with no arguments and awaits
    ``poll_for_event(*args, **kwargs)``: its value is the event, recorded as the value of
    the node. ``event_checkpointed(event)`` is awaited once the event is durable (in a
    step of its own that follows the node's, so after a crash it may be called again, but
    never before the event is recorded); override it to acknowledge the event at its
    source. After the event is recorded, a resume never polls again.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _registry[import_path(cls)] = cls

    async def poll_for_event(self, *args: Any, **kwargs: Any) -> Any:
        """Wait for the event and return it (any value a step may return)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define `async def poll_for_event(...)`")

    async def event_checkpointed(self, event: Any) -> None:
        """Called once ``event`` is durable; does nothing unless overridden."""


def overrides_checkpointed(cls: type[EventListener]) -> bool:
    """Whether the class defines its own ``event_checkpointed``."""
    return cls.event_checkpointed is not EventListener.event_checkpointed


def resolve_listener(path: str, *, allow_import: bool) -> type[EventListener]:
    """The listener class recorded as ``path``; raises ``ImportError`` naming it.

    Only a subclass of ``evflow.EventListener`` is ever returned. ``allow_import=False``
    (an engine with ``allow_pickle=False``) imports nothing: the class must have been
    defined in this process, i.e. its module imported by the application.
    """
    cls = _registry.get(path)
    if cls is not None:
        return cls
    if not allow_import:
        raise ImportError(
            f"event listener {path!r} is not an evflow.EventListener subclass this process has "
            "imported, and an engine opened with allow_pickle=False imports no module that a log "
            "names: import the module that defines it before resuming"
        )
    try:
        obj = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"event listener {path!r} cannot be imported: {exc}") from exc
    if isinstance(obj, type) and issubclass(obj, EventListener):
        return obj
    raise ImportError(
        f"event listener {path!r} is a {type(obj).__name__}, not a subclass of evflow.EventListener: "
        "refused (a log can only name listener classes)"
    )
