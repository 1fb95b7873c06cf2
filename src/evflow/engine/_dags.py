"""Recording DAGs: the specs of a DAG's nodes, named as SPEC section 2 says, and the
StepFinished fields of a step's result (an output, or a continuation's DAG)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .._codec import Ref, encode_value
from .._events import StepOptions, StepSpec
from .._projection import WorkflowState, allocate_names
from .._step import Node, iter_nodes, step_spec

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["record_dag", "step_fields"]


def record_dag(state: WorkflowState | None, root: Node, *, allow_pickle: bool) -> tuple[list[StepSpec], str]:
    """Specs for the DAG under ``root``, named breadth-first from it, and the root's
    name (validates and encodes everything first; raises before anything is recorded)."""
    order = [root]
    seen = {id(root)}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        for child in (*iter_nodes(node.args), *iter_nodes(node.kwargs)):
            if id(child) not in seen:
                seen.add(id(child))
                order.append(child)
                queue.append(child)
    names = allocate_names(state, [node.function.name for node in order])
    name_of = {id(node): name for node, name in zip(order, names, strict=True)}

    def refs(value: Any) -> str | None:
        return name_of.get(id(value)) if isinstance(value, Node) else None

    specs = []
    for node, name in zip(order, names, strict=True):
        args = encode_value(
            (list(node.args), node.kwargs),
            allow_pickle=allow_pickle,
            refs=refs,
            what=f"the arguments of step {name!r}",
        )
        recorded = _recorded_refs(state, (node.args, node.kwargs), name)
        function = node.function
        if function.waits_for_arguments:
            children = (*iter_nodes(node.args), *iter_nodes(node.kwargs))
            deps = list(dict.fromkeys([*(name_of[id(c)] for c in children), *recorded]))
        else:
            deps = []
        specs.append(step_spec(name, function.path, args, function.effective_options(), deps))
    return specs, names[0]


def _recorded_refs(state: WorkflowState | None, value: Any, where: str) -> list[str]:
    """Names of the already-recorded steps that ``Ref`` values inside ``value`` refer to
    (the pending nodes ``evflow.wait`` gives back); ``ValueError`` for an unknown one."""
    found: list[str] = []
    work = [value]
    while work:
        item = work.pop()
        t = type(item)
        if t is Ref:
            if state is None or item.name not in state.steps:
                raise ValueError(
                    f"step {where!r} refers to step {item.name!r}, which this workflow has not "
                    "recorded (a pending node of evflow.wait is only meaningful in its own workflow)"
                )
            found.append(item.name)
        elif t is list or t is tuple:
            work.extend(reversed(item))
        elif t is dict:
            work.extend(reversed(list(item.values())))
    return found


def step_fields(execution: Execution, name: str, opts: StepOptions, result: Any) -> dict[str, Any]:
    """The StepFinished fields for step ``name``'s result: a node is a continuation (its
    DAG is recorded), else the encoded output (kept in the run if not checkpointed)."""
    allow_pickle = execution.core.allow_pickle
    if isinstance(result, Node):
        specs, output = record_dag(execution.state, result, allow_pickle=allow_pickle)
        return {"name": name, "continuation": specs, "continuation_output": output}
    if not opts.checkpoint:
        execution.run.values[name] = result
        return {"name": name}
    return {
        "name": name,
        "output": encode_value(result, allow_pickle=allow_pickle, what=f"the output of step {name!r}"),
    }
