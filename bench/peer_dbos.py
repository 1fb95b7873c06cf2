"""DBOS Transact workloads, run by run.py with the dbos venv's python.

The system database is SQLite (DBOS's default backend, its default settings) in a fresh
temp dir under the same directory as the evflow stores.

    python peer_dbos.py bench --runs 5 [--only a,b,c,e]
    python peer_dbos.py recover-victim DB WID     # (e), killed by the parent
    python peer_dbos.py recover DB WID            # (e), the new process
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid

from _common import discard, emit, per_call_us, recovery_runs, tmp_root

SYSTEM = "dbos"
N_SEQ = 500
KILL_AT = 250

from dbos import DBOS, DBOSConfig, SetWorkflowID  # noqa: E402

logging.getLogger("dbos").setLevel(logging.WARNING)


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.step()
async def ainc(x: int) -> int:
    return x + 1


@DBOS.workflow()
def seq_sync(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@DBOS.workflow()
async def seq_async(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await ainc(x)
    return x


@DBOS.workflow()
async def three(i: int) -> int:
    return await ainc(await ainc(await ainc(i)))


@DBOS.step()
def inc_or_hang(x: int) -> int:
    # Step KILL_AT announces itself and hangs the first time (see evflow_steps.inc_or_hang).
    kill_file = os.environ.get("EVBENCH_KILL_FILE")
    if kill_file and x == KILL_AT - 1 and not os.path.exists(kill_file):
        with open(kill_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(kill_file + ".tmp", kill_file)
        time.sleep(3600)
    return x + 1


@DBOS.workflow()
def recoverable(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc_or_hang(x)
    return x


def launch(db_path: str) -> None:
    config: DBOSConfig = {
        "name": "evflow-bench",
        "system_database_url": f"sqlite:///{db_path}",
        "run_admin_server": False,
        "application_version": "bench",
        "log_level": "WARNING",
        "executor_id": "local",
    }
    DBOS(config=config)
    DBOS.launch()


def bench(runs: int, only: set[str]) -> None:
    import asyncio

    directory = tempfile.mkdtemp(prefix="dbos-", dir=tmp_root())
    try:
        launch(os.path.join(directory, "dbos.sqlite"))

        def want(w: str) -> bool:
            return w in only

        if want("a"):
            seq_sync(20)  # warm-up
            vals = [N_SEQ / _timed(lambda: seq_sync(N_SEQ)) for _ in range(runs)]
            emit(SYSTEM, "a.seq.sync", vals, "steps/s", higher_is_better=True)
            asyncio.run(seq_async(20))
            vals = []
            for _ in range(runs):
                t0 = time.perf_counter()
                asyncio.run(seq_async(N_SEQ))
                vals.append(N_SEQ / (time.perf_counter() - t0))
            emit(SYSTEM, "a.seq.async", vals, "steps/s", higher_is_better=True)

        if want("b"):
            for n in (200, 2000):
                vals = [asyncio.run(_many(n)) for _ in range(runs)]
                emit(SYSTEM, f"b.{n}", vals, "workflows/s", higher_is_better=True)
                vals = [asyncio.run(_serial(n)) for _ in range(runs)]
                emit(SYSTEM, f"b.{n}.serial", vals, "workflows/s", higher_is_better=True)

        if want("c") or want("d"):
            wid = f"c-{uuid.uuid4()}"
            with SetWorkflowID(wid):
                seq_sync(3)
            assert DBOS.get_workflow_status(wid).status == "SUCCESS"
            calls = 2000
            per_call_us(lambda: DBOS.get_workflow_status(wid), 200)
            vals = [per_call_us(lambda: DBOS.get_workflow_status(wid), calls) for _ in range(runs)]
            emit(SYSTEM, "c.status", vals, "us/call", higher_is_better=False)
    finally:
        DBOS.destroy()
        discard(directory)


def bench_e(runs: int) -> None:
    runs_e = recovery_runs(__file__, runs, "dbos-e-", "recover-victim", "recover", "dbos.sqlite")
    emit(SYSTEM, "e.recovery", [seconds for seconds, _ in runs_e], "s", higher_is_better=False)


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def _many(n: int) -> float:
    import asyncio

    t0 = time.perf_counter()
    handles = await asyncio.gather(*(DBOS.start_workflow_async(three, i) for i in range(n)))
    results = await asyncio.gather(*(h.get_result() for h in handles))
    elapsed = time.perf_counter() - t0
    assert results == [i + 3 for i in range(n)]
    return n / elapsed


async def _serial(n: int) -> float:
    # Each start awaited (DBOS has recorded the workflow) before the next, then each result.
    t0 = time.perf_counter()
    handles = [await DBOS.start_workflow_async(three, i) for i in range(n)]
    results = [await h.get_result() for h in handles]
    elapsed = time.perf_counter() - t0
    assert results == [i + 3 for i in range(n)]
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["bench", "recover-victim", "recover"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    os.makedirs(tmp_root(), exist_ok=True)
    if args.mode == "bench":
        only = set(args.only.split(",")) if args.only else {"a", "b", "c", "e"}
        if only & {"a", "b", "c", "d"}:
            bench(args.runs, only)
        if "e" in only:
            bench_e(args.runs)
    elif args.mode == "recover-victim":
        db, wid = args.rest
        launch(db)
        with SetWorkflowID(wid):
            recoverable(N_SEQ)
        sys.exit("the victim was not killed")
    else:
        db, wid = args.rest
        launch(db)  # recovers PENDING workflows of this executor in the background
        value = DBOS.retrieve_workflow(wid).get_result()
        end = time.time()
        assert value == N_SEQ, value
        print(f"END {end!r}", flush=True)
        DBOS.destroy()


if __name__ == "__main__":
    main()
