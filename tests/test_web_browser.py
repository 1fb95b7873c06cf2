"""The dashboard in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright): the list, a workflow's page, the as-of slider, cancel, live updates, the token,
and user data that must render as text.

``.ci/run`` installs chromium when it can; these tests skip, saying why, only where no
browser can be had. ``EVFLOW_SCREENSHOTS=1`` writes the screenshots of docs/web.md to
docs/img/ (otherwise to a temporary directory). The first paint of a 1,000-workflow list is
printed (run with ``-s`` to see it), never asserted: bench/web_first_paint.py measures it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
import evflow.web
from evflow.engine import Engine

CHROMIUM = os.environ.get("EVFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMG = Path(__file__).parent.parent / "docs" / "img"
#: How long Playwright waits for the page to show something (a bound, not a measurement).
WAIT_MS = 30_000

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    reason = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    pytest.skip(reason, allow_module_level=True)

expect = playwright_api.expect

# Playwright's async API and uvicorn run on asyncio only.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

GATES: dict[str, anyio.Event] = {}
XSS_ID = "<script>window.__xss=1</script><img src=x onerror=window.__xss=2>"
XSS_META = {"note": "<img src=x onerror=window.__xss=3>", "html": "<b>bold?</b>"}


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


@evflow.step(max_retries=1)
def flaky(value: int) -> int:
    flaky_calls.append(value)
    if len(flaky_calls) % 2:
        raise ValueError("first attempt fails")
    return value


flaky_calls: list[int] = []


@evflow.step
async def gate(name: str) -> str:
    await GATES[name].wait()
    return name


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """The app on a real HTTP server (uvicorn) on a free port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
    sock.close()


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(WAIT_MS)
            yield page
            assert errors == [], errors
        finally:
            await browser.close()


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("EVFLOW_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


async def test_list_workflow_page_and_slider(tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    flaky_calls.clear()
    async with Engine("memory://") as engine:
        await engine.run(add.step(add.step(1, 2), flaky.step(3)), "order-7", metadata=XSS_META)
        await engine.run(add.step(1, 1), XSS_ID)
        with pytest.raises(evflow.WorkflowExecutionError):
            await engine.run(flaky.options(max_retries=0).step(1), "report-3")
        async with serving(evflow.web.app(engine)) as base, browser_page() as page:
            await page.goto(base + "/")
            rows = page.locator("tr[data-id]")
            await expect(rows).to_have_count(3)
            # ids are text, whatever they hold
            link = page.locator("td.id a", has_text="<script>")
            await expect(link).to_have_text(XSS_ID)
            assert await page.evaluate("window.__xss") is None
            assert await page.locator("main script, main img, main b").count() == 0
            await expect(page.locator("button[data-filter=FAILED]")).to_have_text("FAILED (1)")
            await page.screenshot(path=str(shots / "web-list.png"))

            await page.click("button[data-filter=FAILED]")
            await expect(rows).to_have_count(1)
            await page.click("button[data-filter=ALL]")
            await expect(rows).to_have_count(3)

            await link.click()
            await expect(page.locator("#workflow-id")).to_have_text(XSS_ID)
            await page.goto(base + "/#/")
            await page.click("td.id a >> text=order-7")
            status = page.locator("#status .badge")
            await expect(status).to_have_text("SUCCESSFUL")
            await expect(page.locator("#metadata")).to_contain_text("<img src=x onerror=window.__xss=3>")
            await expect(page.locator("#timeline .tl-row")).to_have_count(3)
            await expect(page.locator("#timeline .k-retry")).to_have_count(1)  # the failed first attempt
            await expect(page.locator("#dag g[data-step]")).to_have_count(3)
            assert await page.evaluate("window.__xss") is None
            await page.screenshot(path=str(shots / "web-workflow.png"), full_page=True)

            slider = page.locator("#asof")
            await slider.fill("1")
            await expect(status).to_have_text("RUNNING")
            await expect(page.locator("#asof-label")).to_contain_text("event 1 of")
            await expect(page.locator("#metadata")).not_to_contain_text("end_time")
            last = await slider.get_attribute("max")
            assert last is not None
            await slider.fill(last)
            await expect(status).to_have_text("SUCCESSFUL")


async def test_cancel_and_live_updates(tmp_path: Path) -> None:
    GATES["cancel"] = anyio.Event()
    GATES["live"] = anyio.Event()
    async with Engine("memory://") as engine:
        await engine.run_async(gate.step("cancel"), "stuck")
        await engine.run_async(gate.step("live"), "live")
        async with serving(evflow.web.app(engine)) as base, browser_page() as page:
            await page.goto(base + "/")
            live_row = page.locator("tr[data-id=live] .badge")
            await expect(live_row).to_have_text("RUNNING")
            GATES["live"].set()
            await expect(live_row).to_have_text("SUCCESSFUL")  # the list follows the store

            await page.click("td.id a >> text=stuck")
            status = page.locator("#status .badge")
            await expect(status).to_have_text("RUNNING")
            await expect(page.locator("#cancel")).to_be_enabled()
            await page.click("#cancel")
            await expect(status).to_have_text("CANCELED")
            assert await engine.get_status("stuck") == "CANCELED"
            await expect(page.locator(".events tr[data-seq]").last).to_contain_text("WorkflowCanceled")
            GATES["cancel"].set()
            await expect(page.locator("#resume")).to_be_enabled()
            await page.click("#resume")
            await expect(status).to_have_text("SUCCESSFUL")  # the event stream brings the end
            await expect(page.locator(".events tr[data-seq]").last).to_contain_text("WorkflowFinished")


async def test_read_only_hides_the_buttons_and_a_token_is_asked_once() -> None:
    async with Engine("memory://") as engine:
        await engine.run(add.step(1, 2), "wf")
        app = evflow.web.app(engine, read_only=True, token="s3cret")
        async with serving(app) as base, browser_page() as page:
            answer = await page.goto(base + "/")
            assert answer is not None and answer.status == 401
            await page.fill("input[name=token]", "s3cret")
            await page.click("button[type=submit]")
            await expect(page.locator("tr[data-id=wf] .badge")).to_have_text("SUCCESSFUL")
            assert "token" not in page.url
            await expect(page.locator("#mode")).to_be_visible()
            await page.click("td.id a >> text=wf")
            await expect(page.locator("#status .badge")).to_have_text("SUCCESSFUL")
            await expect(page.locator("#cancel")).to_be_hidden()


async def test_first_paint_of_a_thousand_workflows_is_printed() -> None:
    async with Engine("memory://") as engine:
        for i in range(1000):
            await engine.run(add.step(i, 1), f"wf-{i:04d}")
        async with serving(evflow.web.app(engine)) as base, browser_page() as page:
            await page.goto(base + "/")
            await expect(page.locator("tr[data-id]")).to_have_count(1000)
            rendered = await page.evaluate("Number(document.body.dataset.listRendered)")
            print(f"\nfirst paint of a 1,000-workflow list: {rendered} ms after navigation start")
