"""Ray Workflows (ray==2.47.1, the last release with ``ray.workflow``) workloads, run by
run.py with the ray venv's python. A local Ray instance (num_cpus=2) with workflow
storage in a fresh temp dir under the same directory as the evflow stores.

    python peer_ray.py bench --runs 5 [--only a,b,c,e] [--b-sizes 200,2000]
    python peer_ray.py recover-victim DIR WID     # (e), killed by the parent
    python peer_ray.py recover DIR WID            # (e), the new process
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings

from _common import discard, emit, per_call_us, recovery_runs, tmp_root

warnings.filterwarnings("ignore")
# A 500-deep static DAG is pickled recursively by Ray (cloudpickle): the default limit
# of 1,000 frames is not enough.
sys.setrecursionlimit(100_000)

import ray  # noqa: E402
from ray import workflow  # noqa: E402

SYSTEM = "ray"
N_SEQ = 500
KILL_AT = 250


@ray.remote
def inc(x: int) -> int:
    return x + 1


@ray.remote
def chain(i: int, n: int):  # type: ignore[no-untyped-def]
    if i >= n:
        return i
    return workflow.continuation(chain.bind(i + 1, n))


@ray.remote
def inc_or_hang(x: int) -> int:
    # Step KILL_AT announces itself and hangs the first time (see evflow_steps.inc_or_hang).
    kill_file = os.environ.get("EVBENCH_KILL_FILE")
    if kill_file and x == KILL_AT - 1 and not os.path.exists(kill_file):
        with open(kill_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(kill_file + ".tmp", kill_file)
        time.sleep(3600)
    return x + 1


def dag(fn, n: int):  # type: ignore[no-untyped-def]
    node = fn.bind(0)
    for _ in range(n - 1):
        node = fn.bind(node)
    return node


def start(storage: str) -> None:
    ray.init(
        storage=storage,
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    logging.getLogger("ray.workflow").setLevel(logging.WARNING)
    logging.getLogger("ray").setLevel(logging.WARNING)


def bench(runs: int, only: set[str], b_sizes: list[int]) -> None:
    directory = tempfile.mkdtemp(prefix="ray-", dir=tmp_root())
    counter = iter(range(10**9))
    try:
        start(directory)

        def want(w: str) -> bool:
            return w in only

        if want("a"):
            for shape in ("chain", "dag"):

                def one(n: int, shape: str = shape) -> float:
                    node = chain.bind(1, n) if shape == "chain" else dag(inc, n)
                    t0 = time.perf_counter()
                    value = workflow.run(node, workflow_id=f"a-{shape}-{next(counter)}")
                    elapsed = time.perf_counter() - t0
                    assert value == n, value
                    return n / elapsed

                one(20)  # warm-up
                emit(
                    SYSTEM, f"a.{shape}", [one(N_SEQ) for _ in range(runs)], "steps/s", higher_is_better=True
                )

        if want("b"):
            for n in b_sizes:

                def many(n: int) -> float:
                    base = next(counter)
                    t0 = time.perf_counter()
                    refs = [
                        workflow.run_async(inc.bind(inc.bind(inc.bind(i))), workflow_id=f"b-{base}-{i}")
                        for i in range(n)
                    ]
                    results = ray.get(refs)
                    elapsed = time.perf_counter() - t0
                    assert results == [i + 3 for i in range(n)]
                    return n / elapsed

                many(10)  # warm-up
                emit(SYSTEM, f"b.{n}", [many(n) for _ in range(runs)], "workflows/s", higher_is_better=True)

        if want("c") or want("d"):
            wid = "c-target"
            assert workflow.run(inc.bind(inc.bind(inc.bind(0))), workflow_id=wid) == 3
            for key, call in (
                ("status", lambda: workflow.get_status(wid)),
                ("metadata", lambda: workflow.get_metadata(wid)),
            ):
                per_call_us(call, 20)
                emit(
                    SYSTEM,
                    f"c.{key}",
                    [per_call_us(call, 200) for _ in range(runs)],
                    "us/call",
                    higher_is_better=False,
                )
    finally:
        ray.shutdown()
        discard(directory)


def bench_e(runs: int) -> None:
    runs_e = recovery_runs(__file__, runs, "ray-e-", "recover-victim", "recover")
    emit(SYSTEM, "e.recovery", [seconds for seconds, _ in runs_e], "s", higher_is_better=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["bench", "recover-victim", "recover"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument("--b-sizes", default="200")
    args = parser.parse_args()
    os.makedirs(tmp_root(), exist_ok=True)
    if args.mode == "bench":
        sizes = [int(s) for s in args.b_sizes.split(",") if s]
        only = set(args.only.split(",")) if args.only else {"a", "b", "c", "e"}
        if only & {"a", "b", "c", "d"}:
            bench(args.runs, only, sizes)
        if "e" in only:
            bench_e(args.runs)
    elif args.mode == "recover-victim":
        directory, wid = args.rest
        start(directory)
        workflow.run(dag(inc_or_hang, N_SEQ), workflow_id=wid)
        sys.exit("the victim was not killed")
    else:
        directory, wid = args.rest
        start(directory)
        value = workflow.resume(wid)
        end = time.time()
        assert value == N_SEQ, value
        print(f"END {end!r}", flush=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
