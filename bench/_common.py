"""Helpers shared by every workload script (stdlib only: peer venvs import it too).

A workload script prints one JSON object per figure on stdout, on a line starting with
``RESULT `` so that library chatter on stdout never confuses ``run.py``:

    RESULT {"system": "evflow", "key": "a.chain.sync", "values": [...], "unit": "steps/s", ...}

Temp stores are never deleted while figures are being measured: ``discard(path)`` defers
the deletion to the end of the process (or, under run.py, to the end of the whole suite).
On ext4 without a journal (this machine's root file system) the inode allocator skips,
and reads the inode-table block of, every inode freed in the last 60-300 s, so creating
a file right after thousands were deleted costs ~300-450 us of kernel CPU instead of
~13 us: deleting one run's store would slow down the next run's file creation.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "DISCARD_ENV",
    "MARK",
    "delete_discarded",
    "discard",
    "emit",
    "mem_mb",
    "median",
    "parse_results",
    "per_call_us",
    "recovery_run",
    "timed",
    "tmp_root",
]

MARK = "RESULT "


def emit(
    system: str, key: str, values: Sequence[float], unit: str, *, higher_is_better: bool, **extra: Any
) -> None:
    """Print one figure (all its runs) for run.py."""
    record = {
        "system": system,
        "key": key,
        "values": [float(v) for v in values],
        "unit": unit,
        "higher_is_better": higher_is_better,
        **extra,
    }
    sys.stdout.write(MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


def parse_results(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(MARK) :]) for line in text.splitlines() if line.startswith(MARK)]


def mem_mb() -> dict[str, float]:
    """This process's resident set now (rss) and its peak so far (hwm), in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                out["hwm"] = int(line.split()[1]) / 1024
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(x: float) -> str:
    """A figure with as many digits as it needs (1,906 / 273 / 17.1 / 0.51)."""
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fig(values: Sequence[float]) -> str:
    """``median [min-max]``."""
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    """Microseconds per call of a sync ``fn`` over ``calls`` calls."""
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls / 1000


def tmp_root() -> str:
    return os.environ.get("EVFLOW_BENCH_TMP") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "tmp"
    )


#: Set by run.py for its children: a file to which they append the paths they discard, one
#: per line, instead of deleting them at their exit; run.py deletes them when the suite ends.
DISCARD_ENV = "EVFLOW_BENCH_DISCARD_LIST"

_discarded: list[str] = []
_registered = [False]


def discard(path: str) -> None:
    """Delete the temp directory ``path`` later, at this process's exit (see the module
    docstring: deleting now would slow down the file creation of the next measured run)."""
    if not _registered[0]:
        atexit.register(delete_discarded)
        _registered[0] = True
    _discarded.append(path)


def delete_discarded() -> None:
    """Delete every discarded path now (or hand them to run.py, see DISCARD_ENV)."""
    paths = list(dict.fromkeys(_discarded))
    _discarded.clear()
    handoff = os.environ.get(DISCARD_ENV)
    if handoff and paths:
        try:
            with open(handoff, "a") as f:
                f.writelines(p + "\n" for p in paths)
            return
        except OSError:
            pass  # delete them here after all
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def recovery_run(
    python: str,
    script: str,
    victim_args: list[str],
    recover_args: list[str],
    kill_file: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> tuple[float, list[str]]:
    """SIGKILL the victim (and its process group) once it announces itself in ``kill_file``;
    then time a new process from its start to the printed end of the workflow.

    The victim's step KILL_AT creates ``kill_file`` and hangs; the recovering process
    prints ``END <time.time()> [more fields]`` once the workflow's result is back.
    Returns (seconds, the END line's other fields)."""
    env = {**os.environ, **(env or {}), "EVBENCH_KILL_FILE": kill_file}
    # A file, not a pipe: nobody reads the victim's chatter while it runs.
    with open(kill_file + ".victim-stderr", "wb") as err:
        victim = subprocess.Popen(
            [python, script, *victim_args],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(kill_file):
            if victim.poll() is not None:
                with open(kill_file + ".victim-stderr", "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the victim exited ({victim.returncode}) before its kill point: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the victim did not reach its kill point in {timeout} s")
            time.sleep(0.005)
    finally:
        # The whole group: a peer's helper processes (Ray's raylet, workers) die with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    t0 = time.time()
    proc = subprocess.run(
        [python, script, *recover_args], env=env, capture_output=True, text=True, timeout=timeout
    )
    ends = [line.split() for line in proc.stdout.splitlines() if line.startswith("END ")]
    if proc.returncode != 0 or not ends:
        raise RuntimeError(f"recovery failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return float(ends[-1][1]) - t0, ends[-1][2:]


def recovery_runs(
    script: str, runs: int, prefix: str, victim_mode: str, recover_mode: str, target: str = ""
) -> list[tuple[float, list[str]]]:
    """(e): ``runs`` measured ``recovery_run``s of ``script`` after one warm-up (page cache,
    .pyc files), each in a fresh temp dir (kept until exit). The modes get the store's path,
    ``target`` joined to that dir ("" = the dir itself), and the workflow id."""
    results = []
    for _ in range(runs + 1):
        os.makedirs(tmp_root(), exist_ok=True)
        directory = tempfile.mkdtemp(prefix=prefix, dir=tmp_root())
        try:
            store = os.path.join(directory, target) if target else directory
            results.append(
                recovery_run(
                    sys.executable,
                    script,
                    [victim_mode, store, "wf-e"],
                    [recover_mode, store, "wf-e"],
                    os.path.join(directory, "killed"),
                )
            )
        finally:
            discard(directory)
    return results[1:]
