"""``evflow ui``: a real server in a subprocess, over a file store that is free, held by
another engine (then read-only, and it says so), or opened with ``--read-only``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

import evflow
from evflow.engine import Engine


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def evflow_ui(store: Path, *args: str) -> Iterator[tuple[httpx.Client, Path]]:
    """``evflow ui`` in a subprocess; yields a client for it and the file its stderr goes to."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err = store.parent / f"ui-{port}.err"
    with err.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evflow", "--storage", str(store), "ui", "--port", str(port), *args],
            stderr=err_file,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60  # a bound on start-up, not a measurement
            while True:
                try:
                    client.get("/api/info")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, err.read_text()
                    assert time.monotonic() < deadline, "evflow ui did not start"
                    time.sleep(0.05)
            yield client, err
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_ui_on_a_free_store_can_change_workflows(tmp_path: Path) -> None:
    store = tmp_path / "store"

    async def populate() -> None:
        async with Engine(store) as engine:
            await engine.run(add.step(1, 2), "wf")

    anyio.run(populate)
    with evflow_ui(store) as (client, err):
        assert client.get("/api/info").json()["read_only"] is False
        assert client.get("/api/workflows").json() == [{"workflow_id": "wf", "status": "SUCCESSFUL"}]
        assert client.post("/api/workflows/wf/cancel").json()["status"] == "SUCCESSFUL"
        assert client.get("/").status_code == 200
    assert "serving" in err.read_text()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ui_on_a_held_store_is_read_only_and_says_so(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with Engine(store) as engine:
        await engine.run(add.step(1, 2), "wf")
        with evflow_ui(store) as (client, err):
            assert client.get("/api/info").json()["read_only"] is True
            assert client.get("/api/workflows/wf").json()["status"] == "SUCCESSFUL"
            refused = client.post("/api/workflows/wf/cancel")
            assert refused.status_code == 403 and refused.json()["error"] == "read_only"
        text = err.read_text()
        assert "held by another process" in text and "read-only" in text, text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ui_read_only_never_takes_the_lock(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with Engine(store) as engine:
        await engine.run(add.step(1, 2), "wf")
    with evflow_ui(store, "--read-only") as (client, _proc):
        assert client.get("/api/info").json()["read_only"] is True
        async with Engine(store) as engine:  # the dashboard holds no lock
            await engine.run(add.step(2, 2), "wf-2")
        ids = [w["workflow_id"] for w in client.get("/api/workflows").json()]
        assert ids == ["wf", "wf-2"]
