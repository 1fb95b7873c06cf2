from __future__ import annotations

import threading
from typing import Any

import pytest


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core scenarios run on both anyio backends (``@pytest.mark.anyio`` tests)."""
    return str(request.param)


# pytest-timeout (pyproject.toml) dumps every thread's stack under its name when a test
# hangs; an async test's own frame is on no stack while its event loop waits, so the main
# thread carries the test's id in its name for the time of the test.
@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    threading.main_thread().name = f"MainThread, running {item.nodeid}"


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    threading.main_thread().name = "MainThread"
