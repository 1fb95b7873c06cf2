"""``evflow ui``: the web dashboard and JSON API (``evflow.web.app``) served over a store."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AsyncExitStack
from typing import Any

from .._errors import StoreLockedError
from ..engine import Engine
from ._format import warn
from ._options import Options

__all__ = ["cmd_ui"]


async def cmd_ui(opts: Options, args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..web import app
    except ImportError as exc:
        warn(f"error: evflow ui needs the web extra (pip install 'evflow[web]'): {exc}")
        return 1
    # Resume re-imports steps by their recorded module path, as `evflow resume` does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    where = f"http://{args.host}:{args.port}/"
    async with AsyncExitStack() as stack:
        web: Any
        if args.read_only:
            web = app(storage=opts.storage, read_only=True)
            warn(f"evflow ui: serving {where} read-only")
        else:
            try:
                engine = await stack.enter_async_context(Engine(opts.storage))
            except StoreLockedError as exc:
                # Another process writes this file store: show it, change nothing.
                web = app(storage=opts.storage, read_only=True)
                warn(f"evflow ui: {' '.join(str(exc).split())}")
                warn(f"evflow ui: the store is held by another process: serving {where} read-only")
            else:
                web = app(engine)
                warn(f"evflow ui: serving {engine.store.url} at {where}")
        config = uvicorn.Config(
            web, host=args.host, port=args.port, log_level="warning", ws="none", lifespan="auto"
        )
        await uvicorn.Server(config).serve()
    return 0
