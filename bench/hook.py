"""The cost of the engine core's event-listener hook (``EngineCore.add_event_listener``).

With no listener the hook is one falsy check of a list per ``emit`` (and per run's end);
this prints what an ``emit`` costs on memory:// with no listener, with a no-op listener,
and with ``evflow.otel.instrument`` feeding an SDK tracer provider that exports nowhere,
and what the check alone costs. Run by hand; it is no test threshold.

    python bench/hook.py [--events 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from typing import Any

import anyio

import evflow
from evflow._events import Event, MetadataAttached
from evflow._projection import WorkflowState
from evflow.engine import EngineCore


class _Core:
    """A service that hands the core to this script."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core


class _NoOp:
    def event_folded(self, state: WorkflowState, event: Event) -> None:
        pass

    def run_closed(self, workflow_id: str) -> None:
        pass


@evflow.step(name="idle")
async def idle() -> None:
    await anyio.sleep_forever()


async def _per_emit_us(mode: str, n: int) -> float:
    async with evflow.Engine("memory://") as engine:
        core = engine.service(_Core).core
        if mode == "no-op listener":
            core.add_event_listener(_NoOp())
        elif mode == "otel (SDK, no exporter)":
            from opentelemetry.sdk.trace import TracerProvider

            from evflow.otel import instrument

            instrument(engine, tracer_provider=TracerProvider())
        await idle.step().run_async("w")  # a live run, so that otel has a run span to look up
        state = core.state("w")
        fields: dict[str, Any] = {"metadata": {"k": 1}, "step": None}
        t0 = time.perf_counter()
        for _ in range(n):
            core.emit(state, (MetadataAttached, fields))
        return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    modes = ["no listener", "no-op listener", "otel (SDK, no exporter)"]
    if not hasattr(EngineCore, "add_event_listener"):  # a build from before the hook
        modes = modes[:1]
    for mode in modes:
        values = [anyio.run(_per_emit_us, mode, args.events) for _ in range(args.runs)]
        print(f"emit, {mode:<24} {statistics.median(values):6.3f} us (median of {args.runs})")
    listeners: list[object] = []
    check = min(timeit.repeat("if listeners: pass", globals={"listeners": listeners}, number=1_000_000))
    print(f"the check alone               {check * 1e3:6.3f} ns")


if __name__ == "__main__":
    main()
