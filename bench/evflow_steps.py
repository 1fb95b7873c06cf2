"""Step functions of the evflow workloads, in a module of their own so that they are
recorded by a stable import path (``evflow_steps:inc``) and a second process (recovery)
can resume them."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

import evflow

#: (e) The step that receives this value is step number KILL_AT of the 500-step DAG.
KILL_AT = 250


@evflow.step
def inc(x: int) -> int:
    return x + 1


@evflow.step
async def ainc(x: int) -> int:
    return x + 1


@evflow.step
def chain(i: int, n: int) -> Any:
    """Step ``i`` of a chain of ``n`` continuations (returns the next step)."""
    if i >= n:
        return i
    return chain.step(i + 1, n)


@evflow.step
async def achain(i: int, n: int) -> Any:
    if i >= n:
        return i
    return achain.step(i + 1, n)


@evflow.step
async def inc_or_hang(x: int) -> int:
    """(e) Step KILL_AT of the first process announces itself and waits for SIGKILL;
    ``$EVBENCH_KILL_FILE`` existing means that already happened (the recovering run)."""
    kill_file = os.environ.get("EVBENCH_KILL_FILE")
    # Blocking calls on purpose: the whole process freezes inside the step until SIGKILL.
    if kill_file and x == KILL_AT - 1 and not os.path.exists(kill_file):  # noqa: ASYNC240
        with open(kill_file + ".tmp", "w") as f:  # noqa: ASYNC230
            f.write(str(os.getpid()))
        os.rename(kill_file + ".tmp", kill_file)
        while True:
            time.sleep(3600)  # noqa: ASYNC251
    return x + 1


class Gate:
    """(g) Shared by the waiting steps of one process: ``all_in`` is set once ``expected``
    steps are waiting; they all go on when ``release`` is set."""

    release: anyio.Event | None = None
    all_in: anyio.Event | None = None
    expected = 0
    entered = 0

    @classmethod
    def reset(cls, expected: int) -> None:
        cls.release = anyio.Event()
        cls.all_in = anyio.Event()
        cls.expected = expected
        cls.entered = 0


@evflow.step
async def wait_gate(i: int) -> int:
    assert Gate.release is not None and Gate.all_in is not None
    Gate.entered += 1
    if Gate.entered == Gate.expected:
        Gate.all_in.set()
    await Gate.release.wait()
    return i


class Nap:
    """scale_out.py (3): how many ``nap`` steps entered in this process."""

    entered = 0


@evflow.step
async def nap(x: int) -> int:
    """scale_out.py (3): sleep ``$EVBENCH_NAP_SECONDS`` (default 0.5) and return ``x``. In
    the victim (``$EVBENCH_NAP_HANG_AFTER`` = K) every nap sleeps for good, and the K-th to
    enter creates ``$EVBENCH_KILL_FILE``: all K workflows are in flight, kill now."""
    hang_after = int(os.environ.get("EVBENCH_NAP_HANG_AFTER", "0"))
    if hang_after:
        Nap.entered += 1
        if Nap.entered == hang_after:
            kill_file = os.environ["EVBENCH_KILL_FILE"]
            with open(kill_file + ".tmp", "w") as f:  # noqa: ASYNC230
                f.write(str(os.getpid()))
            os.rename(kill_file + ".tmp", kill_file)
        await anyio.sleep_forever()
    await anyio.sleep(float(os.environ.get("EVBENCH_NAP_SECONDS", "0.5")))
    return x
