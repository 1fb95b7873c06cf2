"""evflow workloads (a)-(g) of issue 5, default durability, embedded file store in a temp
dir under ``bench/results/tmp`` (same disk as the floor and the peers' databases).

    python bench/evflow_work.py bench [--runs 5] [--only a,b,c,d,e,f,g] [--no-info]

prints ``RESULT {json}`` lines (see _common.py). The other sub-commands are the child
processes of (e), (f) and (g); run.py never calls them directly.

Each figure is measured ``--runs`` times after one untimed warm-up; every (a)/(b) run gets
a fresh store directory and a fresh engine. Store directories are deleted only when the
process exits (``_common.discard``): deleting thousands of files slows down the file
creation of the next run on this file system. ``info`` figures (relaxed durability, store
counters) have no target: they help to tell fsync time from CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import floor
from _common import discard, emit, mem_mb, recovery_runs, tmp_root
from evflow_steps import Gate, achain, ainc, chain, inc, inc_or_hang, wait_gate

import evflow

SYSTEM = "evflow"
HERE = os.path.dirname(os.path.abspath(__file__))
N_SEQ = 500


def new_dir(prefix: str) -> str:
    os.makedirs(tmp_root(), exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=tmp_root())


def store_stats(engine: evflow.Engine) -> dict[str, Any]:
    stats = getattr(engine.store, "statistics", None)
    if stats is None:
        return {}
    s = stats()
    return {"batches": s.batches, "events": s.events, "fsyncs": s.fsyncs}


async def with_engine(
    fn: Callable[[evflow.Engine], Awaitable[float]], *, storage: str = "file", **engine_kw: Any
) -> tuple[float, dict[str, Any]]:
    """Run ``fn`` in an engine on a fresh store (``storage``: "file" or "memory"); return
    its figure and the store counters."""
    if storage == "memory":
        async with evflow.Engine("memory://", **engine_kw) as engine:
            return await fn(engine), {}
    directory = new_dir("evflow-")
    try:
        async with evflow.Engine(directory, **engine_kw) as engine:
            value = await fn(engine)
            stats = store_stats(engine)
        return value, stats
    finally:
        discard(directory)


def floor_sample(seconds: float = 0.5) -> float:
    """fsyncs/s of the floor loop right now, in the directory the stores use."""
    directory = new_dir("floor-")
    try:
        return floor.one_run(directory, seconds)
    finally:
        discard(directory)


# -- (a) sequential steps ----------------------------------------------------------------------


def seq_node(shape: str, flavour: str, n: int) -> evflow.Node:
    if shape == "chain":
        return (chain if flavour == "sync" else achain).step(1, n)
    fn = inc if flavour == "sync" else ainc
    node = fn.step(0)
    for _ in range(n - 1):
        node = fn.step(node)
    return node


#: CPU time (user + system, all threads of this process) per step of the last run_seq, us.
LAST_CPU_US_PER_STEP = [0.0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_seq(shape: str, flavour: str, n: int, engine: evflow.Engine) -> float:
    node = seq_node(shape, flavour, n)
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    value = await node.run(f"a-{shape}-{flavour}")
    elapsed = time.perf_counter() - t0
    LAST_CPU_US_PER_STEP[0] = (cpu_seconds() - c0) / n * 1e6
    assert value == n, value
    return n / elapsed


async def bench_a(runs: int, info: bool) -> None:
    # The disk is shared: a floor sample taken right before every measured run keeps
    # the "share of the floor" honest when another process uses the disk meanwhile.
    floors = []
    variants = [("chain", "sync"), ("chain", "async"), ("dag", "sync"), ("dag", "async")]
    for shape, flavour in variants:
        await with_engine(functools.partial(run_seq, shape, flavour, 50))  # warm-up
        vals, stats, cpu = [], [], []
        for _ in range(runs):
            floors.append(floor_sample())
            v, s = await with_engine(functools.partial(run_seq, shape, flavour, N_SEQ))
            vals.append(v)
            stats.append(s)
            cpu.append(LAST_CPU_US_PER_STEP[0])
        emit(SYSTEM, f"a.{shape}.{flavour}", vals, "steps/s", higher_is_better=True, store=stats[-1])
        if info:
            emit(SYSTEM, f"a.{shape}.{flavour}.cpu", cpu, "CPU us/step", higher_is_better=False, info=True)
    emit("floor", "floor.fsync.during_a", floors, "fsyncs/s", higher_is_better=True)
    if info:
        # Where a step's time goes: memory:// is the engine alone; relaxed adds the file
        # store's thread hop and writes; strict adds the fsync.
        for shape, flavour, storage, durability in [
            ("chain", "async", "file", "relaxed"),
            ("chain", "async", "memory", "strict"),
            ("chain", "sync", "memory", "strict"),
            ("dag", "async", "file", "relaxed"),
            ("dag", "async", "memory", "strict"),
        ]:
            fn = functools.partial(run_seq, shape, flavour, N_SEQ)
            await with_engine(fn, storage=storage, durability=durability)  # warm-up
            vals, cpu = [], []
            for _ in range(runs):
                vals.append((await with_engine(fn, storage=storage, durability=durability))[0])
                cpu.append(LAST_CPU_US_PER_STEP[0])
            tag = "relaxed" if durability == "relaxed" else storage
            emit(SYSTEM, f"a.{shape}.{flavour}.{tag}", vals, "steps/s", higher_is_better=True, info=True)
            emit(
                SYSTEM,
                f"a.{shape}.{flavour}.{tag}.cpu",
                cpu,
                "CPU us/step",
                higher_is_better=False,
                info=True,
            )


# -- (b) many concurrent workflows -------------------------------------------------------------


def three(i: int) -> evflow.Node:
    return ainc.step(ainc.step(ainc.step(i)))


async def run_many(n: int, engine: evflow.Engine, prefix: str = "b") -> float:
    """(b): start ``n`` workflows concurrently, then await them all. The driver is the
    one bench/peer_dbos.py uses for DBOS (``asyncio.gather`` of the starts, then of the
    results), so that both systems pay the same harness; an anyio task group with a task
    per start and per wait costs ~20-30 % of evflow's figure here (docs/performance.md)."""
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(three(i).run_async(f"{prefix}-{i}") for i in range(n)))
    results = await asyncio.gather(*(handle.result() for handle in handles))
    elapsed = time.perf_counter() - t0
    assert results == [i + 3 for i in range(n)]
    return n / elapsed


async def run_serial(n: int, engine: evflow.Engine, prefix: str = "bs") -> float:
    """(b), the simple app's pattern: await each ``run_async`` (its durable record) one
    after another, then each handle's result, as bench/peer_dbos.py does for DBOS. The
    workflows started first run while the later ones are being started."""
    t0 = time.perf_counter()
    handles = []
    for i in range(n):
        handles.append(await three(i).run_async(f"{prefix}-{i}"))
    results = [await handle.result() for handle in handles]
    elapsed = time.perf_counter() - t0
    assert results == [i + 3 for i in range(n)]
    return n / elapsed


async def bench_b(runs: int, info: bool) -> None:
    for n in (200, 2000):
        await with_engine(functools.partial(run_many, min(n, 200)))  # warm-up
        vals, stats = [], []
        for _ in range(runs):
            v, s = await with_engine(functools.partial(run_many, n))
            vals.append(v)
            stats.append(s)
        emit(SYSTEM, f"b.{n}", vals, "workflows/s", higher_is_better=True, store=stats[-1])
        await with_engine(functools.partial(run_serial, min(n, 200)))  # warm-up
        vals = [(await with_engine(functools.partial(run_serial, n)))[0] for _ in range(runs)]
        emit(SYSTEM, f"b.{n}.serial", vals, "workflows/s", higher_is_better=True)
    if info:
        fn = functools.partial(run_many, 2000)
        for storage, durability in (("file", "relaxed"), ("memory", "strict")):
            vals = [(await with_engine(fn, storage=storage, durability=durability))[0] for _ in range(runs)]
            tag = "relaxed" if durability == "relaxed" else storage
            emit(SYSTEM, f"b.2000.{tag}", vals, "workflows/s", higher_is_better=True, info=True)


# -- (c)/(d) metadata and status reads ---------------------------------------------------------

CALLS = 50_000


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int = CALLS) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        await call()
    return (time.perf_counter_ns() - t0) / calls / 1000


async def read_figures(runs: int, wid: str) -> dict[str, list[float]]:
    async def metadata() -> Any:
        return await evflow.get_metadata(wid)

    async def status() -> Any:
        return await evflow.get_status(wid)

    async def step_metadata() -> Any:
        return await evflow.get_metadata(wid, "evflow_steps.ainc")

    out: dict[str, list[float]] = {}
    for key, call in (("metadata", metadata), ("status", status), ("step_metadata", step_metadata)):
        await per_call_us(call, 2000)  # warm-up
        out[key] = [await per_call_us(call) for _ in range(runs)]
    return out


async def bench_cd(runs: int, want_d: bool) -> None:
    directory = new_dir("evflow-cd-")
    try:
        async with evflow.Engine(directory):
            wid = "target"
            assert await three(0).run(wid) == 3
            await run_many(10, None, prefix="small")  # type: ignore[arg-type]
            assert (await evflow.get_status(wid)) == "SUCCESSFUL"
            # Start each measurement with no garbage collection pending from the set-up
            # (creating 5,000 workflows leaves a full collection due, ~50 ms, that would
            # land in the calls measured): the figure is the lookup, as pyperf measures.
            gc.collect()
            small = await read_figures(runs, wid)
            emit(SYSTEM, "c.metadata", small["metadata"], "us/call", higher_is_better=False, others=10)
            emit(SYSTEM, "c.status", small["status"], "us/call", higher_is_better=False, others=10)
            emit(
                SYSTEM,
                "c.step_metadata",
                small["step_metadata"],
                "us/call",
                higher_is_better=False,
                others=10,
            )
            if want_d:
                for chunk in range(5):  # 4,990 more: 5,000 others in all
                    await run_many(998, None, prefix=f"big{chunk}")  # type: ignore[arg-type]
                assert len(await evflow.list_all()) == 5001
                # First right after the 5,000 ran, with whatever collection is due (as an
                # application sees it), then after a collection (the lookup alone).
                fresh = await read_figures(runs, wid)
                for key in ("metadata", "status", "step_metadata"):
                    ratios = [b / s for b, s in zip(fresh[key], small[key], strict=True)]
                    emit(SYSTEM, f"d.{key}.nogc.ratio", ratios, "x (5000/10)", higher_is_better=False)
                gc.collect()
                big = await read_figures(runs, wid)
                for key in ("metadata", "status"):
                    emit(SYSTEM, f"d.{key}.5000", big[key], "us/call", higher_is_better=False, others=5000)
                    ratios = [b / s for b, s in zip(big[key], small[key], strict=True)]
                    emit(SYSTEM, f"d.{key}.ratio", ratios, "x (5000/10)", higher_is_better=False)
    finally:
        discard(directory)


# -- (e) recovery after SIGKILL inside step 250 ------------------------------------------------


def dag_500() -> evflow.Node:
    node = inc_or_hang.step(0)
    for _ in range(N_SEQ - 1):
        node = inc_or_hang.step(node)
    return node


async def e_victim(directory: str, wid: str) -> None:
    async with evflow.Engine(directory):
        await dag_500().run(wid)
    sys.exit("the victim finished: it was never killed")


async def e_recover(directory: str, wid: str) -> None:
    t0 = time.perf_counter()
    async with evflow.Engine(directory):
        t1 = time.perf_counter()
        assert (await evflow.get_status(wid)) == "RESUMABLE"
        value = await evflow.resume(wid)
        end = time.time()
        t2 = time.perf_counter()
    assert value == N_SEQ, value
    print(f"END {end!r} {t1 - t0!r} {t2 - t1!r}", flush=True)


def bench_e(runs: int) -> None:
    # The store lives in a subdirectory: the kill file and the victim's log stay outside.
    runs_e = recovery_runs(__file__, runs, "evflow-e-", "e-victim", "e-recover", "store")
    emit(SYSTEM, "e.recovery", [seconds for seconds, _ in runs_e], "s", higher_is_better=False)
    opens = [float(fields[0]) for _, fields in runs_e]
    resumes = [float(fields[1]) for _, fields in runs_e]
    emit(SYSTEM, "e.recovery.open", opens, "s", higher_is_better=False, info=True)
    emit(SYSTEM, "e.recovery.resume", resumes, "s", higher_is_better=False, info=True)


# -- (f) cold open of 10,000 finished workflows ------------------------------------------------

N_COLD = 10_000


async def f_fill(directory: str, n: int) -> None:
    # Setup, not measured: relaxed durability writes the same logs without the fsyncs.
    async with evflow.Engine(directory, durability="relaxed"):
        done = 0
        while done < n:
            chunk = min(2000, n - done)
            await run_many(chunk, None, prefix=f"f{done}")  # type: ignore[arg-type]
            done += chunk


async def f_open(directory: str, expected: int) -> None:
    t0 = time.perf_counter()
    async with evflow.Engine(directory):
        listed = await evflow.list_all()
        t1 = time.perf_counter()
        mem = mem_mb()
    assert len(listed) == expected, len(listed)
    assert all(status == "SUCCESSFUL" for _, status in listed)
    print(f"COLD {t1 - t0!r} {mem['rss']!r} {mem['hwm']!r}", flush=True)


def bench_f(runs: int) -> None:
    directory = new_dir("evflow-f-")
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "f-fill", directory, str(N_COLD)], check=True)
        fill = time.perf_counter() - t0
        secs, rss, hwm, wall = [], [], [], []
        for i in range(runs + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "f-open", directory, str(N_COLD)],
                capture_output=True,
                text=True,
                check=True,
            )
            elapsed = time.perf_counter() - t0
            fields = next(line.split() for line in proc.stdout.splitlines() if line.startswith("COLD "))
            if i:
                secs.append(float(fields[1]))
                rss.append(float(fields[2]))
                hwm.append(float(fields[3]))
                wall.append(elapsed)
    finally:
        discard(directory)
    emit(SYSTEM, "f.open", secs, "s", higher_is_better=False, workflows=N_COLD, fill_seconds=fill)
    emit(SYSTEM, "f.rss", hwm, "MiB", higher_is_better=False, workflows=N_COLD)
    emit(SYSTEM, "f.process", wall, "s", higher_is_better=False, info=True)


# -- (g) 10,000 workflows in flight ------------------------------------------------------------

N_INFLIGHT = 10_000


#: (g) starts its workflows from this many tasks at a time, each starting its share one
#: after the other: the figure is the engine's memory for the workflows in flight, not the
#: harness's for 10,000 starter tasks (~3.4 KB each under anyio 4.16). The all-at-once
#: start is measured too, as the info figure g.rss_above_idle.concurrent_starts.
G_STARTERS = 100


async def g_inflight(directory: str, n: int, starters: int, trace: bool = False) -> None:
    """(g) in this process; ``trace``: print what tracemalloc saw allocated between idle
    and peak (slow: for bench/profile.py, not for the figures)."""
    import tracemalloc

    async with evflow.Engine(directory):
        # Warm-up: the same path once, so that idle includes every import and cache.
        Gate.reset(100)
        Gate.release.set()  # type: ignore[union-attr]
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(_run_gate, f"warm-{i}", i)
        gc.collect()
        idle = mem_mb()["rss"]
        if trace:
            tracemalloc.start(12)
            before = tracemalloc.take_snapshot()
        Gate.reset(n)
        t0 = time.perf_counter()
        handles: list[Any] = []

        async def start(first: int) -> None:
            for i in range(first, n, starters):
                handles.append(await wait_gate.step(i).run_async(f"g-{i}"))

        async with anyio.create_task_group() as tg:
            for first in range(min(starters, n)):
                tg.start_soon(start, first)
        await Gate.all_in.wait()  # type: ignore[union-attr]
        t_all = time.perf_counter() - t0
        peak = mem_mb()
        if trace:
            _print_growth(before, tracemalloc.take_snapshot(), n)
            tracemalloc.stop()
        Gate.release.set()  # type: ignore[union-attr]
        async with anyio.create_task_group() as tg:
            for h in handles:
                tg.start_soon(h.result)
        end = mem_mb()
    print(f"INFLIGHT {idle!r} {peak['rss']!r} {end['hwm']!r} {t_all!r}", flush=True)


def _print_growth(before: Any, after: Any, n: int) -> None:
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(keep), after.filter_traces(keep)
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    print(
        f"tracemalloc: {total / 2**20:.1f} MiB more Python heap at peak, {total / n:.0f} bytes per workflow"
    )
    print("by line (size, count, bytes per workflow):")
    for d in diff[:25]:
        frame = d.traceback[0]
        where = frame.filename.split("/site-packages/")[-1].split("/src/")[-1]
        size = f"{d.size_diff / 2**20:7.2f} MiB {d.count_diff:8d} {d.size_diff / n:7.0f} B"
        print(f"  {size}  {where}:{frame.lineno}")
    print("by the evflow line that allocated it, directly or through callees (innermost evflow frame):")
    by_caller: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)[::-1]  # most recent first
        frame = next((f for f in frames if "/evflow/" in f.filename), frames[0])
        where = frame.filename.split("/src/")[-1].split("/site-packages/")[-1] + f":{frame.lineno}"
        by_caller[where] = by_caller.get(where, 0) + stat.size_diff
    for where, size in sorted(by_caller.items(), key=lambda kv: -kv[1])[:30]:
        print(f"  {size / 2**20:7.2f} MiB {size / n:7.0f} B  {where}")


async def _run_gate(wid: str, i: int) -> None:
    assert await wait_gate.step(i).run(wid) == i


def g_run(starters: int) -> tuple[float, float, float]:
    """One (g) child process; (MiB above idle, idle MiB, seconds to start them all)."""
    directory = new_dir("evflow-g-")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "g-inflight", directory, str(N_INFLIGHT), str(starters)],
            capture_output=True,
            text=True,
        )
    finally:
        discard(directory)
    if proc.returncode != 0:
        raise RuntimeError(f"g-inflight failed: {proc.stderr[-3000:]}")
    fields = next(line.split() for line in proc.stdout.splitlines() if line.startswith("INFLIGHT "))
    idle, _rss_at_peak, hwm, seconds = map(float, fields[1:])
    return hwm - idle, idle, seconds


def bench_g(runs: int, info: bool) -> None:
    above, idles, t_all = [], [], []
    for _ in range(runs):
        a, idle, seconds = g_run(G_STARTERS)
        above.append(a)
        idles.append(idle)
        t_all.append(seconds)
    emit(
        SYSTEM,
        "g.rss_above_idle",
        above,
        "MiB",
        higher_is_better=False,
        workflows=N_INFLIGHT,
        starters=G_STARTERS,
    )
    emit(SYSTEM, "g.idle_rss", idles, "MiB", higher_is_better=False, info=True)
    emit(SYSTEM, "g.start_all", t_all, "s", higher_is_better=False, info=True)
    if info:
        concurrent = [g_run(N_INFLIGHT)[0] for _ in range(runs)]
        emit(
            SYSTEM, "g.rss_above_idle.concurrent_starts", concurrent, "MiB", higher_is_better=False, info=True
        )


# -- profiling target (bench/profile.py runs this under py-spy) -------------------------------


async def profile_target(what: str, repeat: int, durability: str) -> None:
    """Just the workload, ``repeat`` times, for a profiler: (a) as ``a.<shape>.<flavour>``,
    (b) as ``b.<n>``; ``durability`` "memory" means the memory store."""
    parts = what.split(".")
    storage = "memory" if durability == "memory" else "file"
    engine_kw = {} if durability == "memory" else {"durability": durability}
    for _ in range(repeat):
        if parts[0] == "a":
            fn = functools.partial(run_seq, parts[1], parts[2], N_SEQ)
        else:
            fn = functools.partial(run_many, int(parts[1]))
        value, stats = await with_engine(fn, storage=storage, **engine_kw)
        print(f"{what}: {value:.0f}/s {stats}", file=sys.stderr)


# -- entry point -------------------------------------------------------------------------------


async def bench(runs: int, only: set[str], info: bool) -> None:
    if "a" in only:
        await bench_a(runs, info)
    if "b" in only:
        await bench_b(runs, info)
    if "c" in only or "d" in only:
        await bench_cd(runs, "d" in only)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode", choices=["bench", "profile", "e-victim", "e-recover", "f-fill", "f-open", "g-inflight"]
    )
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="a,b,c,d,e,f,g")
    parser.add_argument("--no-info", action="store_true")
    args = parser.parse_args()
    if args.mode == "bench":
        only = set(args.only.split(","))
        anyio.run(bench, args.runs, only, not args.no_info)
        if "e" in only:
            bench_e(args.runs)
        if "f" in only:
            bench_f(args.runs)
        if "g" in only:
            bench_g(args.runs, not args.no_info)
    elif args.mode == "profile":
        anyio.run(profile_target, args.rest[0], int(args.rest[1]), args.rest[2])
    elif args.mode == "e-victim":
        anyio.run(e_victim, *args.rest)
    elif args.mode == "e-recover":
        anyio.run(e_recover, *args.rest)
    elif args.mode == "f-fill":
        anyio.run(f_fill, args.rest[0], int(args.rest[1]))
    elif args.mode == "f-open":
        anyio.run(f_open, args.rest[0], int(args.rest[1]))
    elif args.mode == "g-inflight":
        anyio.run(g_inflight, args.rest[0], int(args.rest[1]), int(args.rest[2]), args.rest[3:] == ["trace"])


if __name__ == "__main__":
    main()
