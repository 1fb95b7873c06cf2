"""Step functions for the CLI and replay tests.

They live in an importable module (imported as ``cli_workflows``: the tests put this
directory on ``sys.path`` / ``PYTHONPATH``) so that a CLI subprocess can resume them.
``wait_file`` blocks until a gate file exists and first writes ``<gate>.started``, which
lets a test (or another process) know the step is running without any timing.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import evflow


@evflow.step(name="add", metadata={"team": "cli"})
def add(left: Any, right: Any) -> Any:  # Any: takes nodes in DAGs (see StepFunction.step typing)
    return left + right


@evflow.step(name="halve")
async def halve(value: Any) -> Any:
    evflow.attach_metadata({"halved": True})
    if value > 1:
        return halve.step(value // 2)  # a continuation
    return value


@evflow.step(name="fail", max_retries=0)
def fail(value: Any) -> int:
    raise ValueError(f"boom {value}")


async def _wait_for_file(path: str) -> None:
    file = anyio.Path(path)
    while True:  # another process creates it: polling is the portable way to notice
        if await file.exists():
            return
        await anyio.sleep(0.01)


@evflow.step(name="wait_file")
async def wait_file(gate: str, value: Any) -> Any:
    await anyio.Path(gate + ".started").touch()
    await _wait_for_file(gate)
    return value


def ok_dag() -> evflow.Node:
    """SUCCESSFUL: add(add(1, 2), 3) -> 6, then halve it twice through continuations."""
    return halve.step(add.step(add.step(1, 2), 3))


def failing_dag() -> evflow.Node:
    return fail.step(add.step(2, 2))


def gated_dag(gate: str) -> evflow.Node:
    """add(1, 1), then waits for the gate file; its output is 2."""
    return wait_file.step(gate, add.step(1, 1))


async def wait_started(gate: str) -> None:
    """Until ``wait_file`` has started on this gate."""
    await _wait_for_file(gate + ".started")


def serve(storage: str, gate: str, workflow_id: str) -> None:
    """Run ``gated_dag`` as ``workflow_id`` in an engine on ``storage`` (a subprocess)."""

    async def main() -> None:
        async with evflow.Engine(storage):
            output = await gated_dag(gate).run(workflow_id, metadata={"served": True})
            print(f"output {output}", flush=True)

    anyio.run(main)


if __name__ == "__main__":  # pragma: no cover - imported by name in subprocesses instead
    sys.exit("import this module: python -c 'import cli_workflows; cli_workflows.serve(...)'")
