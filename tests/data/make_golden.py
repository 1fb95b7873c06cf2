"""Write the golden logs of this release's log format: ``tests/data/v<FORMAT_VERSION>/``.

Run it ON PURPOSE ONLY, when ``evflow._events.FORMAT_VERSION`` is bumped::

    .venv/bin/python tests/data/make_golden.py

It never overwrites an existing version's directory (``--force`` does, and is only for a
format that has not been released): the logs of older versions must stay exactly as they
were written, since ``tests/test_golden.py`` checks that this release still reads them to
the same metadata. What it writes:

- ``store/``: a file-store directory written by a real engine (closed cleanly): the
  workflows listed in ``SCENARIOS`` below;
- ``events.jsonl``: every event of every workflow, one JSON object per line with
  ``workflow_id``, ``seq``, ``type`` and ``msgpack`` (the base64 of ``encode_event``), so
  the event encoding is checked apart from the store's framing;
- ``expected.json``: for each workflow, ``get_metadata`` of the workflow and of every step,
  and ``repr`` of its output, as the engine that wrote the log reported them.

The steps are recorded as ``__main__:...`` (this script); the golden test only folds and
decodes the logs, it never resumes them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import evflow
from evflow._codec import encode_event
from evflow._events import FORMAT_VERSION
from evflow.stores import FileStore

HERE = Path(__file__).resolve().parent

#: Workflow ids, in the order they are written.
SCENARIOS = [
    "dag-with-continuation",
    "failed-then-resumed",
    "canceled",
    "attached-metadata",
    "actor",
    # format 2: durable time
    "slept",
    "sleep-interrupted",
    "published",
    "waited",
]

_flaky_fails = True
#: Set by ``wait_forever`` once it runs, so that the scenario cancels a running step.
_waiting: anyio.Event | None = None


# -- steps ---------------------------------------------------------------------------------------


@evflow.step(name="load", metadata={"stage": "extract"})
def load(n: int) -> list[int]:
    return list(range(n))


@evflow.step(name="square", max_retries=0, timeout=30, retry_delay=0.5)
async def square(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


@evflow.step(name="countdown")
async def countdown(n: int) -> Any:
    if n == 0:
        return "liftoff"
    return countdown.step(n - 1)


@evflow.step(name="guarded", catch_exceptions=True, max_retries=0)
def guarded() -> None:
    raise KeyError("missing")


@evflow.step(name="total", checkpoint=False)
def total(squares: list[int], extra: dict[str, Any], caught: Any) -> dict[str, Any]:
    _, error = caught
    return {
        "sum": sum(squares),
        "countdown": extra["countdown"],
        "pair": extra["pair"],
        "caught": repr(error),
    }


@evflow.step(name="prepare")
def prepare() -> str:
    return "ready"


@evflow.step(name="flaky", max_retries=1, retry_delay=0.01)
def flaky(prepared: str) -> str:
    if _flaky_fails:
        raise ValueError({"set", "args"})  # args msgpack cannot hold: the error is pickled too
    return f"{prepared} and done"


@evflow.step(name="wait_forever")
async def wait_forever() -> None:
    assert _waiting is not None
    _waiting.set()
    await anyio.sleep_forever()


@evflow.step(name="annotate", metadata={"static": True})
def annotate(n: int) -> int:
    evflow.attach_metadata({"progress": 0.5})
    evflow.attach_metadata({"progress": 1.0, "rows": n})
    return n


@evflow.step(name="annotate_async")
async def annotate_async(n: int) -> int:
    evflow.attach_metadata({"seen": [n, n]})
    return n + 1


@evflow.step(name="wake")
def wake(slept: None, until: None) -> str:
    return f"woke after {slept} and {until}"


@evflow.step(name="nap_again")
def nap_again() -> evflow.Node:
    return evflow.sleep(0.01)


@evflow.step(name="report")
def report(n: int) -> int:
    for done in range(1, n + 1):
        evflow.set_event("progress", {"done": done, "of": n})
    evflow.set_event("summary", ("rows", n))
    return n


@evflow.step(name="pause")
async def pause(label: str, seconds: float) -> str:
    await anyio.sleep(seconds)
    return label


@evflow.step(name="rest")
def rest(first: Any) -> Any:
    _ready, pending = first
    return evflow.wait(pending, num_returns=len(pending), timeout=30, name="rest_wait")


@evflow.virtual_actor
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, by: int) -> int:
        self.n += by
        return self.n

    def incr_twice(self, by: int) -> Any:
        self.n += by
        return self.incr.options(name="incr").step(by)  # type: ignore[attr-defined]


# -- scenarios -----------------------------------------------------------------------------------


async def first_session(engine: evflow.Engine) -> None:
    xs = load.step(4)  # used twice: runs once
    dag = total.step(square.step(xs), {"countdown": countdown.step(2), "pair": (xs, 1)}, guarded.step())
    await engine.run(dag, "dag-with-continuation", metadata={"owner": "golden", "tags": ["a", "b"]})

    with contextlib.suppress(evflow.WorkflowExecutionError):
        await engine.run(flaky.step(prepare.step()), "failed-then-resumed")

    global _waiting
    _waiting = anyio.Event()
    handle = await engine.run_async(wait_forever.step(), "canceled")
    await _waiting.wait()
    await handle.cancel()

    past = time.time() - 60
    slept = wake.step(evflow.sleep(0.05, name="nap", metadata={"why": "golden"}), evflow.sleep_until(past))
    await engine.run(slept, "slept")

    await engine.run_async(wake.step(evflow.sleep(0.2), nap_again.step()), "sleep-interrupted")
    while "wake_time" not in (await engine.get_metadata("sleep-interrupted", "sleep"))["stats"]:
        await anyio.sleep(0.01)
    # the engine closes mid-sleep: RESUMABLE, resumed in the second session


async def second_session(engine: evflow.Engine) -> None:
    """A later process: resumes the failed workflow, runs the rest."""
    global _flaky_fails
    _flaky_fails = False
    await engine.resume("failed-then-resumed")
    await engine.resume("sleep-interrupted")  # waits only for what is left of its sleep

    await engine.run(annotate_async.step(annotate.step(3)), "attached-metadata", metadata={"kind": "attach"})

    await engine.run(report.step(2), "published")

    first = evflow.wait([pause.step("slow", 0.1), pause.step("quick", 0.01), pause.step("mid", 0.05)])
    await engine.run(rest.step(first), "waited")

    counter = await Counter.get_or_create("actor", 10)  # type: ignore[attr-defined]
    await counter.incr.options(name="incr", metadata={"k": "v"}).run(5)
    await counter.incr_twice.options(name="twice").run(1)


async def describe(engine: evflow.Engine, workflow_id: str) -> dict[str, Any]:
    events = await engine.store.read(workflow_id)
    state = evflow.replay(events)
    out: dict[str, Any] = {
        "workflow": await engine.get_metadata(workflow_id),
        "steps": {name: await engine.get_metadata(workflow_id, name) for name in state.steps},
    }
    if out["workflow"]["status"] == "SUCCESSFUL":
        out["output_repr"] = repr(await engine.get_output(workflow_id))
    return out


async def produce(store: Path) -> tuple[dict[str, Any], list[str]]:
    """Run the scenarios on a new store; return the expected metadata and the export."""
    async with evflow.Engine(store) as engine:
        await first_session(engine)
    async with evflow.Engine(store) as engine:
        await second_session(engine)
        expected = {wid: await describe(engine, wid) for wid in SCENARIOS}
    lines = []
    async with FileStore(store, read_only=True) as reader:
        for wid in SCENARIOS:
            for event in await reader.read(wid):
                record = {
                    "workflow_id": wid,
                    "seq": event.seq,
                    "type": type(event).__name__,
                    "msgpack": base64.b64encode(encode_event(event)).decode(),
                }
                lines.append(json.dumps(record))
    return expected, lines


def write(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        expected, lines = anyio.run(produce, store)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copytree(store, target / "store")
    (target / "events.jsonl").write_text("\n".join(lines) + "\n")
    (target / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="overwrite this format version's golden logs")
    args = parser.parse_args()
    target = HERE / f"v{FORMAT_VERSION}"
    if target.exists() and not args.force:
        sys.exit(
            f"{target} exists: golden logs of a released format are never rewritten. Bump "
            "FORMAT_VERSION for a new format, or pass --force for one not yet released."
        )
    started = time.monotonic()
    write(target)
    print(f"wrote {target} in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
