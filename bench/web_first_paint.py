"""The dashboard's first paint of a 1,000-workflow list, in headless Chromium.

Records N workflows (memory store by default, ``--storage DIR`` for a file store; a file
store is served read-only too with ``--reader``), serves ``evflow.web.app`` with uvicorn
on 127.0.0.1, opens the dashboard in Debian's chromium (Playwright) and prints, per run:

- ``list``: ms from navigation start until the list's rows are in the DOM (the page's own
  ``evflow-list-rendered`` mark, set right after the first render);
- ``fcp``: the browser's first-contentful-paint entry (the header, before any data);
- ``api``: ms the ``GET api/workflows`` request took, seen from the page.

    python bench/web_first_paint.py [--workflows 1000] [--runs 5] [--storage DIR] [--reader]

Needs the dev extra (or evflow[web] + playwright) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from playwright.async_api import async_playwright

import evflow
import evflow.web

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


async def measure(app: Any, runs: int, count: int) -> list[dict[str, float]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="auto"))
    results = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
            await anyio.sleep(0.01)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for _ in range(runs):
                page = await browser.new_page()  # a fresh page each run: nothing cached in JS
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.locator("tr[data-id]").nth(count - 1).wait_for()
                figures = await page.evaluate(
                    """() => ({
                        list: Number(document.body.dataset.listRendered),
                        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
                        api: (performance.getEntriesByType('resource')
                              .find(e => e.name.endsWith('/api/workflows')) || {}).duration,
                    })"""
                )
                results.append(figures)
                await page.close()
            await browser.close()
        server.should_exit = True
    return results


async def main(args: argparse.Namespace) -> None:
    storage = args.storage or "memory://"
    async with evflow.Engine(storage) as engine:
        have = len(await engine.list_all())
        for i in range(have, args.workflows):
            await engine.run_async(add.step(i, 1), f"workflow-{i:05d}")
        while len(await engine.list_all("SUCCESSFUL")) < args.workflows:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        if not args.reader:
            results = await measure(evflow.web.app(engine), args.runs, args.workflows)
    if args.reader:
        results = await measure(evflow.web.app(storage=storage, read_only=True), args.runs, args.workflows)
    for key in ("list", "fcp", "api"):
        values = [r[key] for r in results if r.get(key) is not None]
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{key:>5}: median {statistics.median(values):7.1f} ms  (runs: {runs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--storage", help="a file store directory (default: memory://)")
    parser.add_argument("--reader", action="store_true", help="serve the store read-only (needs --storage)")
    ns = parser.parse_args()
    if ns.reader and not ns.storage:
        ns.storage = str(Path(tempfile.mkdtemp(prefix="evflow-web-bench-")) / "store")
    anyio.run(main, ns)
