"""The nodes of SPEC section 8 as users build them: ``sleep``, ``sleep_until``, ``wait``.

They are ordinary DAG nodes (dependencies, continuations, whole workflows), recorded
like step nodes with a ``step_type`` of their own, so the engine runs them with the step
kind registered for that type. Their arguments are checked here, when the node is built,
so that a bad one fails before anything is recorded.
"""

from __future__ import annotations

import math
from typing import Any

from .._codec import Ref
from .._step import DEFAULT_OPTIONS, Node, StepFunction, validate_options

__all__ = ["BuiltinStep", "sleep", "sleep_until", "wait"]


class BuiltinStep(StepFunction[..., Any]):
    """The step function of a built-in node: what ``record_dag`` reads of it.

    There is no user function behind it: ``path`` is only a label in the log (the step
    kind of ``step_type`` runs the step), and nothing is registered as importable.
    """

    def __init__(
        self, path: str, step_type: str, options: dict[str, Any], *, waits_for_arguments: bool = True
    ) -> None:
        # StepFunction.__init__ would register a callable as a recorded step function.
        self.waits_for_arguments = waits_for_arguments
        self.func = _not_callable
        self.path = path
        self.step_type = step_type
        self._options = options
        self.is_async = True
        self.__name__ = self.__qualname__ = path.rpartition(":")[2]
        self._default_name = self.__name__

    def effective_options(self) -> dict[str, Any]:
        return {**DEFAULT_OPTIONS, "max_retries": 0, **self._options, "step_type": self.step_type}

    def options(self, **options: Any) -> BuiltinStep:
        raise TypeError(f"evflow.{self.__name__}(...) takes name= and metadata= directly, not .options()")

    def __repr__(self) -> str:
        return f"<evflow {self.step_type} node function {self.name!r}>"


def _not_callable(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("a built-in evflow node is run by the engine, never called")


def builtin_node(
    path: str,
    step_type: str,
    default_name: str,
    name: str | None,
    metadata: dict[str, Any] | None,
    kwargs: dict[str, Any],
    *,
    args: tuple[Any, ...] = (),
    waits_for_arguments: bool = True,
) -> Node:
    """A node of a built-in step kind, its ``name``/``metadata`` checked as options are."""
    where = f"evflow.{default_name}()"
    options: dict[str, Any] = {"name": default_name if name is None else name}
    if metadata is not None:
        options["metadata"] = metadata
    checked = validate_options(options, where)
    function = BuiltinStep(path, step_type, checked, waits_for_arguments=waits_for_arguments)
    return Node(function, args, kwargs)


def check_seconds(value: Any, what: str, *, at_least_zero: bool) -> float:
    """A finite number of seconds as a float; ``TypeError`` for a non-number,
    ``ValueError`` for NaN, infinity or (with ``at_least_zero``) a negative one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (at_least_zero and number < 0):
        bound = "a finite number >= 0" if at_least_zero else "a finite number"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return number


SLEEP_PATH = "evflow:sleep"


def sleep(seconds: float, *, name: str | None = None, metadata: dict[str, Any] | None = None) -> Node:
    """A node that ends ``seconds`` after it starts; its value is ``None``.

    The wake time (its start plus ``seconds``) is recorded when the node starts, so a
    resumed workflow waits only for what is left of it. Sleeping holds no thread and no
    task of its own: one timer per engine wakes every sleeper. The default name is
    ``sleep`` (then ``sleep_1``, ...). Raises ``TypeError``/``ValueError`` for a bad
    ``seconds``, ``name`` or ``metadata``.
    """
    duration = check_seconds(seconds, "evflow.sleep(): seconds", at_least_zero=True)
    return builtin_node(SLEEP_PATH, "SLEEP", "sleep", name, metadata, {"seconds": duration})


def sleep_until(epoch: float, *, name: str | None = None, metadata: dict[str, Any] | None = None) -> Node:
    """A node that ends at ``epoch`` (``time.time()`` seconds); at once if that has passed.

    Like ``sleep`` (default name ``sleep``), with the wake time given.
    """
    wake_time = check_seconds(epoch, "evflow.sleep_until(): epoch", at_least_zero=False)
    return builtin_node(SLEEP_PATH, "SLEEP", "sleep", name, metadata, {"until": wake_time})


WAIT_PATH = "evflow:wait"


def wait(
    nodes: list[Any] | tuple[Any, ...],
    num_returns: int = 1,
    timeout: float | None = None,
    *,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Node:
    """A node that runs ``nodes`` concurrently and ends once ``num_returns`` of them have
    ended, or at ``timeout`` seconds after it starts (recorded, so a resume waits only for
    what is left); its value is ``(ready_values, pending)``.

    ``ready_values`` are the values of at most ``num_returns`` ended nodes, in the order
    they ended; ``pending`` stands for the others: references to their recorded steps,
    which keep running. Pass ``pending`` to another ``evflow.wait`` (returned from a step,
    a continuation) to go on waiting for them: none runs twice, also across resumes. A
    node that fails for good fails the workflow. The default name is ``wait``. Raises
    ``TypeError``/``ValueError`` for bad arguments, before anything is recorded.
    """
    if not isinstance(nodes, list | tuple):
        raise TypeError(f"evflow.wait(): nodes must be a list of nodes, not {type(nodes).__name__}")
    items = list(nodes)
    if not items:
        raise ValueError("evflow.wait(): nodes must not be empty")
    seen: set[object] = set()
    for item in items:
        if not isinstance(item, Node | Ref):
            raise TypeError(
                f"evflow.wait(): every item must be a node (or a pending node of an earlier wait), "
                f"not {type(item).__name__}"
            )
        key: object = ("ref", item.name) if isinstance(item, Ref) else id(item)
        if key in seen:
            raise ValueError(f"evflow.wait(): {item!r} is listed twice")
        seen.add(key)
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"evflow.wait(): num_returns must be an int, not {type(num_returns).__name__}")
    if not 1 <= num_returns <= len(items):
        raise ValueError(
            f"evflow.wait(): num_returns must be 1 to {len(items)} (the nodes given), got {num_returns}"
        )
    limit = None if timeout is None else check_seconds(timeout, "evflow.wait(): timeout", at_least_zero=True)
    return builtin_node(
        WAIT_PATH,
        "WAIT",
        "wait",
        name,
        metadata,
        {"num_returns": num_returns, "timeout": limit},
        args=(items,),
        waits_for_arguments=False,
    )
