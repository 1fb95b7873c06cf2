"""Virtual actors: durable objects whose writer method calls are steps of one workflow.

``@evflow.virtual_actor`` makes a class an actor class (``_decorator.py``, validated when
applied); ``await Cls.get_or_create(actor_id, ...)`` / ``await evflow.get_actor(actor_id)``
give an ``ActorHandle`` (``_handles.py``), and ``handle.method.run(...)`` calls a method
durably. The engine side is the ``ActorService`` (``_service.py``, the ``"actor"``
workflow kind) and the ``ACTOR_METHOD`` step kind (``_kind.py``), both registered with the
engine core when this package is imported; the core never imports this package.
"""

from . import _kind as _kind  # registers the ACTOR_METHOD step kind
from ._decorator import virtual_actor as virtual_actor
from ._handles import ActorCallHandle as ActorCallHandle
from ._handles import ActorHandle as ActorHandle
from ._handles import ActorMethodCaller as ActorMethodCaller
from ._methods import ActorMethod as ActorMethod
from ._methods import ActorMethodNode as ActorMethodNode
from ._methods import BoundActorMethod as BoundActorMethod
from ._methods import resolve_actor_class as resolve_actor_class
from ._runtime import encode_instance as encode_instance
from ._runtime import restore_instance as restore_instance
from ._service import ActorService as ActorService

__all__ = [
    "ActorCallHandle",
    "ActorHandle",
    "ActorMethod",
    "ActorMethodCaller",
    "ActorMethodNode",
    "ActorService",
    "BoundActorMethod",
    "encode_instance",
    "resolve_actor_class",
    "restore_instance",
    "virtual_actor",
]
