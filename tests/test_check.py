"""``evflow check`` (SPEC section 11): can the current code resume every unfinished
workflow? A workflow fails with one version of a module; the module is then changed on
disk, and ``check`` (a fresh process: the current code) names what no longer fits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

import evflow
import history_workflows as hw
from evflow._check import check_workflow, steps_to_rerun
from evflow._codec import encode_value
from evflow.events import ActorCallSubmitted, StepOptions, StepSpec, WorkflowStarted
from test_cli import evflow_cli

PIPELINE_V1 = """
import evflow

@evflow.step(name="fetch")
def fetch(order_id):
    return {"order": order_id, "amount": 1250}

@evflow.step(name="charge", max_retries=0)
def charge(order, fee):
    raise ValueError("card declined")

@evflow.step(name="receipt")
def receipt(amount):
    return f"paid {amount}"

def checkout(order_id):
    return receipt.step(charge.step(fetch.step(order_id), fee=3))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with a store holding FAILED ``order-7`` (at charge) and SUCCESSFUL
    ``done``, written by ``pipeline.py`` version 1 (a module of its own per test)."""
    module = f"pipeline_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "module_name").write_text(module)
    (tmp_path / f"{module}.py").write_text(PIPELINE_V1)
    sys.path.insert(0, str(tmp_path))
    try:
        pipeline = __import__(module)

        async def main() -> None:
            async with evflow.Engine(str(tmp_path / "store")):
                with pytest.raises(evflow.WorkflowExecutionError):
                    await pipeline.checkout("order-7").run("order-7")
                await pipeline.fetch.step("order-8").run("done")

        anyio.run(main)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    return tmp_path


def change(project: Path, old: str, new: str) -> str:
    module = (project / "module_name").read_text()
    path = project / f"{module}.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return module


def check(project: Path, *args: str) -> tuple[int, list[str]]:
    result = evflow_cli(project / "store", "check", *args, cwd=project)
    assert "Traceback" not in result.err
    return result.code, [" ".join(line.split()) for line in (result.out + result.err).splitlines()]


def test_unchanged_or_fixed_code_passes(project: Path) -> None:
    assert check(project) == (0, ["ok: 1 workflow checked, 2 steps to run again"])
    module = change(project, 'raise ValueError("card declined")', 'return order["amount"] + fee')
    assert check(project, "--import", module) == (0, ["ok: 1 workflow checked, 2 steps to run again"])


def test_a_changed_signature_is_named(project: Path) -> None:
    module = change(project, "def charge(order, fee):", "def charge(order, fee, currency):")
    code, lines = check(project, "--import", module)
    assert code == 1
    assert lines == [
        "order-7 charge: charge(order, fee, currency) does not accept the recorded arguments: "
        "missing a required argument: 'currency'",
        "1 problem (1 workflow checked, 2 steps to run again)",
    ]
    # a keyword argument that is no longer accepted
    change(project, "def charge(order, fee, currency):", "def charge(order, cost=0):")
    code, lines = check(project, "order-7")
    assert code == 1 and "unexpected keyword argument 'fee'" in lines[0]


def test_a_step_that_no_longer_imports_or_is_no_step(project: Path) -> None:
    module = change(project, '@evflow.step(name="receipt")\n', "")
    code, lines = check(project, "--import", module)
    assert code == 1
    assert lines[0].startswith(
        f"order-7 receipt: step function '{module}:receipt' is a function, not a function"
    )
    change(project, "def receipt(amount):", "def receipt_renamed(amount):")
    code, lines = check(project)
    assert code == 1
    assert lines[0].startswith(f"order-7 receipt: step function '{module}:receipt' cannot be imported")


def test_finished_workflows_are_not_checked_and_ids_can_be_named(project: Path) -> None:
    change(project, "def fetch(order_id):", "def fetch():")  # only the finished steps use it
    assert check(project)[0] == 0
    assert check(project, "done") == (0, ["ok: 1 workflow checked, 0 steps to run again"])
    code, lines = check(project, "ghost")
    assert code == 1 and "not found: ghost" in lines
    code, lines = check(project, "--import", "no_such_module_here")
    assert code == 1 and lines[0].startswith("error: cannot import no_such_module_here: ModuleNotFoundError")


def test_a_continuation_reruns_only_its_failed_child(tmp_path: Path) -> None:
    async def main() -> evflow.WorkflowState:
        async with evflow.Engine("memory://") as engine:
            with pytest.raises(evflow.WorkflowExecutionError):
                await hw.countdown.step(2, str(tmp_path / "flag")).run("count")
            return evflow.replay([e async for e in evflow.read_events(engine.store, "count")])

    state = anyio.run(main)
    assert steps_to_rerun(state) == ["countdown_2"]
    assert check_workflow(state) == []


def test_an_actors_waiting_calls_are_checked_against_its_class() -> None:
    def call(name: str, method: str, *args: object) -> StepSpec:
        return StepSpec(
            name=name,
            func=f"history_workflows:Counter.{method}",
            args=encode_value((list(args), {})),
            options=StepOptions(name=name, step_type="ACTOR_METHOD"),
        )

    now = time.time()
    events = [
        WorkflowStarted(
            seq=1, time=now, workflow_id="counter", kind="actor", actor_class="history_workflows:Counter"
        ),
        ActorCallSubmitted(seq=2, time=now, step=call("incr", "incr", 1)),
        ActorCallSubmitted(seq=3, time=now, step=call("incr_1", "incr", 1, 2)),
        ActorCallSubmitted(seq=4, time=now, step=call("gone", "decr", 1)),
    ]
    state = evflow.replay(events, live=False)
    assert steps_to_rerun(state) == ["incr", "incr_1", "gone"]
    problems = [(p.step, p.what) for p in check_workflow(state)]
    assert problems[0][0] == "incr_1" and problems[0][1] == (
        "Counter.incr(by) does not accept the recorded arguments: too many positional arguments"
    )
    assert problems[1] == (
        "gone",
        "virtual actor class history_workflows:Counter has no method 'decr' (step 'gone')",
    )
    assert len(problems) == 2
