"""``evflow worker``: an engine with ``recover=True`` that runs the user's queued and
scheduled workflows and takes over those of workers that died (SPEC section 10).

A user scales out by starting N of these on one PostgreSQL store. SIGTERM or Ctrl-C stops
one cleanly (exit status 0): its running workflows become RESUMABLE and another worker
takes them over. It logs a line on stderr per workflow it takes over.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import anyio

from ..engine import Engine, Queue
from ..engine._queues import declared_queues
from ._format import warn
from ._imports import import_modules
from ._options import Options

__all__ = ["cmd_worker"]


async def cmd_worker(opts: Options, args: argparse.Namespace) -> int:
    if not import_modules(args.imports):
        return 1
    declared = {q.name: q for q in declared_queues() if q.name is not None}
    unknown = [name for name in args.queues or () if name not in declared]
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        warn(
            f"error: no queue named {', '.join(unknown)} is declared by the imported modules "
            f"(declared: {known})"
        )
        return 2
    served: list[Queue] | None = [declared[n] for n in args.queues] if args.queues else None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("evflow worker: %(message)s"))
    recovery_log = logging.getLogger("evflow.recovery")
    recovery_log.addHandler(handler)
    recovery_log.setLevel(logging.INFO)
    try:
        engine = Engine(
            opts.storage,
            recover=True,
            recovery_interval=args.recovery_interval,
            engine_id=args.engine_id,
            queues=served,
        )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with engine:
                what = ", ".join(q.name or "" for q in served) if served else "every declared queue"
                warn(
                    f"evflow worker {engine.engine_id}: serving {engine.store.url} ({what}); "
                    "stop with SIGTERM"
                )
                async for signum in signals:
                    warn(f"evflow worker {engine.engine_id}: {signal.Signals(signum).name}: stopping")
                    break
            warn(f"evflow worker {engine.engine_id}: stopped")
    finally:
        recovery_log.removeHandler(handler)
    return 0
