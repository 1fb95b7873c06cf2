"""``evflow.diff`` and ``evflow diff`` (SPEC section 11): two runs aligned step by step.

The function is pure over two event lists; the logs here are recorded by real engines
(memory store) or built by hand where a difference must be exact (durations, attempts).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import evflow
import history_workflows as hw
from evflow._codec import encode_value
from evflow.events import (
    AnyEvent,
    StepFinished,
    StepOptions,
    StepSpec,
    StepStarted,
    WorkflowFinished,
    WorkflowStarted,
)
from test_cli import evflow_cli


async def record(*runs: tuple[str, evflow.Node]) -> dict[str, list[AnyEvent]]:
    """Run each DAG to its end on a memory store; the logs by id."""
    logs: dict[str, list[AnyEvent]] = {}
    async with evflow.Engine("memory://") as engine:
        for wid, node in runs:
            try:
                await node.run(wid)
            except evflow.WorkflowExecutionError:
                pass
            logs[wid] = [event async for event in evflow.read_events(engine.store, wid)]
    return logs


def spec(name: str, *args: object, deps: tuple[str, ...] = ()) -> StepSpec:
    return StepSpec(
        name=name,
        func=f"pipeline:{name}",
        args=encode_value((list(args), {})),
        options=StepOptions(name=name),
        deps=list(deps),
    )


def log(wid: str, steps: list[tuple[StepSpec, float, float, int, object]]) -> list[AnyEvent]:
    """A SUCCESSFUL run: each step (spec, start, end, attempts, output) in order."""
    events: list[AnyEvent] = [
        WorkflowStarted(
            seq=1, time=0.0, workflow_id=wid, output=steps[-1][0].name, steps=[s[0] for s in steps]
        )
    ]
    for step, start, end, attempts, output in steps:
        for attempt in range(1, attempts + 1):
            events.append(StepStarted(seq=len(events) + 1, time=start, name=step.name, attempt=attempt))
        events.append(
            StepFinished(seq=len(events) + 1, time=end, name=step.name, output=encode_value(output))
        )
    events.append(WorkflowFinished(seq=len(events) + 1, time=steps[-1][2]))
    return events


def test_two_runs_of_the_same_code_and_inputs_are_identical() -> None:
    flag = "/nonexistent/flag"
    logs = anyio.run(record, ("a", hw.checkout("order-1", flag)), ("b", hw.checkout("order-1", flag)))
    result = evflow.diff(logs["a"], logs["b"])
    assert result.identical
    assert result.first_divergence is None
    assert result.rows == []
    assert result.to_json()["identical"] is True


def test_a_fork_differs_from_its_failed_source_only_where_it_ran_again(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"

    async def main() -> tuple[list[AnyEvent], list[AnyEvent]]:
        async with evflow.Engine("memory://") as engine:
            with pytest.raises(evflow.WorkflowExecutionError):
                await hw.checkout("order-7", str(flag)).run("src")
            flag.touch()
            await (await engine.fork("src", "fixed", from_step="charge")).result()
            return (
                [e async for e in evflow.read_events(engine.store, "src")],
                [e async for e in evflow.read_events(engine.store, "fixed")],
            )

    source, fork = anyio.run(main)
    result = evflow.diff(source, fork)
    assert not result.identical
    assert result.first_divergence == "charge"
    assert [row["step"] for row in result.rows] == ["charge", "receipt"]  # fetch was copied: same
    charge = result.rows[0]
    assert charge["status"] == {"a": "FAILED", "b": "SUCCESSFUL"}
    assert charge["output"] == {"a": None, "b": "1250"}
    assert charge["error"] == {"a": "ValueError: card declined", "b": None}
    assert "inputs" not in charge
    assert result.rows[1]["status"] == {"a": "PENDING", "b": "SUCCESSFUL"}


def test_differing_inputs_outputs_and_steps_only_in_one_run() -> None:
    logs = anyio.run(
        record,
        ("a", hw.receipt.step(hw.fetch.step("order-1"))),
        ("b", hw.receipt.step(hw.charge.step(hw.fetch.step("order-2"), "/nonexistent"))),
    )
    result = evflow.diff(logs["a"], logs["b"])
    assert result.first_divergence == "fetch"
    by_step = {row["step"]: row for row in result.rows}
    assert by_step["fetch"]["inputs"] == {"a": "fetch('order-1')", "b": "fetch('order-2')"}
    assert by_step["fetch"]["output"]["a"] == "{'order': 'order-1', 'amount': 1250}"
    assert by_step["charge"] == {"step": "charge", "only_in": "b"}
    assert by_step["receipt"]["inputs"] == {"a": "receipt(<fetch>)", "b": "receipt(<charge>)"}
    # aligned in run order, the step only in b right after the one before it in b
    assert [row["step"] for row in result.rows] == ["fetch", "charge", "receipt"]


def test_attempts_and_durations_beyond_the_tolerance() -> None:
    load, save = spec("load", 1), spec("save", deps=("load",))
    a = log("a", [(load, 10.0, 11.0, 1, 5), (save, 11.0, 11.5, 1, "ok")])
    b = log("b", [(load, 20.0, 21.2, 1, 5), (save, 21.2, 25.0, 3, "ok")])
    result = evflow.diff(a, b)
    assert result.rows == [{"step": "save", "attempts": {"a": 1, "b": 3}, "duration": {"a": 0.5, "b": 3.8}}]
    assert result.first_divergence == "save"
    assert evflow.diff(a, b, tolerance=0.1).first_divergence == "load"  # 1.0 s against 1.2 s
    assert evflow.diff(a, b, tolerance=None).rows == [{"step": "save", "attempts": {"a": 1, "b": 3}}]
    with pytest.raises(ValueError, match="tolerance"):
        evflow.diff(a, b, tolerance=-1)


def test_diff_on_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"

    async def main() -> None:
        async with evflow.Engine(str(store)):
            for wid, order in (("a", "order-1"), ("same", "order-1"), ("b", "order-2")):
                await hw.receipt.step(hw.fetch.step(order)).run(wid)

    anyio.run(main)
    same = evflow_cli(store, "diff", "a", "same")
    assert same.code == 0, same.err
    assert same.out.strip() == "identical: a and same agree on every step"
    differ = evflow_cli(store, "diff", "a", "b")
    assert differ.code == 1
    lines = [" ".join(line.split()) for line in differ.out.splitlines()]
    assert "first divergence: fetch" in lines
    assert "fetch inputs fetch('order-1') fetch('order-2')" in lines
    as_json = evflow_cli(store, "--json", "diff", "a", "b")
    assert as_json.code == 1
    data = as_json.json()
    assert data["identical"] is False and data["first_divergence"] == "fetch"
    assert [row["step"] for row in data["rows"]] == ["fetch", "receipt"]
    missing = evflow_cli(store, "diff", "a", "ghost")
    assert (missing.code, missing.err.strip()) == (1, "not found: ghost")
    assert evflow_cli(store, "diff", "a").code == 2
