from __future__ import annotations

import pytest


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core scenarios run on both anyio backends (``@pytest.mark.anyio`` tests)."""
    return str(request.param)
