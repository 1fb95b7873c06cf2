"""Real ``evflow worker`` processes on a fresh PostgreSQL schema, for the scale-out tests.

``Cluster`` makes the schema (and the steps' side table), starts and kills workers, and
reads the logs and the side table back. Each worker is ``python -m evflow --storage URL
worker --import scale_workflows ...`` with ``SCALE_WORKER`` naming it in the side table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
import scale_workflows  # noqa: E402
from pg_schema import DSN  # noqa: E402


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[str]
    log: Path
    started: float
    killed: float | None = None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    schema: str
    tmp: Path
    workers: dict[str, Worker] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{DSN}?schema={self.schema}"

    def store(self) -> evflow.Store:
        return evflow.stores.PostgresStore(DSN, schema=self.schema)

    def start(self, name: str, *args: str, queues: tuple[str, ...] = ("scale-jobs",)) -> Worker:
        """Start worker ``name`` (its engine id is ``name`` too)."""
        env = self._env(name)
        log = self.tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "evflow", "--storage", self.url, "worker", "--import", "scale_workflows"]
        for queue in queues:
            cmd += ["--queue", queue]
        cmd += ["--engine-id", name, *args]
        with log.open("w") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env
            )
        worker = self.workers[name] = Worker(name, proc, log, time.time())
        return worker

    def run_one(self, name: str, workflow_id: str, steps: int, pause: float, interval: float) -> Worker:
        """A process whose own engine (``recover=True``) runs one chain, then serves on."""
        log = self.tmp / f"{name}.log"
        code = "import sys, scale_workflows; scale_workflows.main(sys.argv[1:])"
        cmd = [sys.executable, "-c", code, self.url, workflow_id]
        cmd += [str(steps), str(pause), str(interval)]
        with log.open("w") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=self._env(name),
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        worker = self.workers[name] = Worker(name, proc, log, time.time())
        assert line.strip() == "started", worker.stderr()
        return worker

    def _env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            "SCALE_SCHEMA": self.schema,
            "SCALE_WORKER": name,
            "SCALE_DSN": DSN,
        }

    def wait_serving(self, worker: Worker, timeout: float = 60) -> None:
        """Block until the worker says it serves (its engine is open)."""
        deadline = time.monotonic() + timeout
        while "serving" not in worker.stderr():
            if worker.proc.poll() is not None:
                raise AssertionError(
                    f"worker {worker.name} exited {worker.proc.returncode}: {worker.stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.name} did not start: {worker.stderr()}")
            time.sleep(0.05)

    def kill(self, worker: Worker, sig: int = signal.SIGKILL) -> None:
        worker.killed = time.time()
        worker.proc.send_signal(sig)
        worker.proc.wait(timeout=60)
        if worker.proc.stdout is not None:
            worker.proc.stdout.close()

    def stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
                worker.proc.send_signal(signal.SIGKILL)
                worker.proc.wait(timeout=60)
            if worker.proc.stdout is not None:
                worker.proc.stdout.close()


def sql(query: str, *args: Any) -> list[Any]:
    """Run one query on the test server (a connection of its own) and return the rows."""
    import asyncio

    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(DSN, timeout=10)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@contextlib.contextmanager
def new_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh schema with the side table; every worker is killed and the schema dropped after."""
    pytest.importorskip("asyncpg")
    schema = f"evflow_scale_{uuid.uuid4().hex[:10]}"
    try:
        sql(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # no server here
        pytest.skip(f"PostgreSQL not reachable at {DSN}: {exc}")
    import asyncio

    import asyncpg

    async def make() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await scale_workflows.create_side_table(conn, schema)
        finally:
            await conn.close()

    asyncio.run(make())
    os.environ["SCALE_SCHEMA"] = schema
    made = Cluster(schema, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()
        os.environ.pop("SCALE_SCHEMA", None)
        sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def durable_finish_reruns(events: list[Any], rows: list[Any]) -> list[Any]:
    """The side rows of executions that started after their step's StepFinished was
    recorded (a durable finish must never run again): ``rows`` of one workflow."""
    finished = {e.name: e.time for e in events if type(e).__name__ == "StepFinished"}
    return [r for r in rows if r[6] in finished and r[4] > finished[r[6]]]


def side_rows(cluster: Cluster) -> list[Any]:
    return sql(
        f"SELECT workflow_id, step, worker, pid, started, ended, name "
        f"FROM {scale_workflows.side_table(cluster.schema)} ORDER BY id"
    )


async def output_once_taken_over(engine: evflow.Engine, wid: str) -> Any:
    """``get_output``, waiting out the moments between an owner's death and its takeover
    (RESUMABLE then, which ``get_output`` reports at once)."""
    with anyio.fail_after(60):
        while True:
            try:
                return await engine.get_output(wid)
            except evflow.WorkflowNotRunningError:
                await anyio.sleep(0.05)
