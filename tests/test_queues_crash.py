"""Pending workflows survive SIGKILL of the engine's process and start after a restart,
in order (a real child process, killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import evflow

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
import queue_workflows  # noqa: E402

pytestmark = pytest.mark.slow


def test_pending_workflows_survive_sigkill_and_start_in_order(tmp_path: Path) -> None:
    store, side_effects = tmp_path / "store", tmp_path / "side-effects"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, queue_workflows; queue_workflows.main(sys.argv[1:])",
            str(store),
            str(side_effects),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert side_effects.read_text().split() == ["0"]  # only the first one started

    async def restart() -> dict[str, str]:
        async with evflow.Engine(store) as engine:  # no recover: pending work starts anyway
            with anyio.fail_after(60):
                for i in range(1, 6):
                    assert await engine.get_output(f"q-{i}") == i
            return {wid: status.value for wid, status in await engine.list_all()}

    statuses = anyio.run(restart)
    assert statuses == {"q-0": "RESUMABLE", **{f"q-{i}": "SUCCESSFUL" for i in range(1, 6)}}
    assert side_effects.read_text().split() == ["0", "1", "2", "3", "4", "5"]
    assert queue_workflows.one_at_a_time.concurrency == 1
