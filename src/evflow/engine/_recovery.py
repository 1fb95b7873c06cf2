"""Several engines on one store (SPEC section 10): recovery, fencing, remote cancels.

``OwnershipService`` runs in every engine of a ``shared`` store, in the core's task group:

- **remote cancels**: ``Engine.cancel`` of a workflow another live engine runs asks that
  engine (``Store.request_cancel``); this engine cancels its run's scope at once, and the
  run records ``WorkflowCanceled`` itself.
- **fencing after a lapse**: when the store finds that this engine's lease ran out (the
  process was paused, or cut off from the server), the runs another engine has taken over
  meanwhile are stopped at once rather than at their next append, which the store would
  refuse anyway (its seq is taken).
- **recovery** (``Engine(recover=True)``): every ``scan`` seconds, claim the workflows that
  no live engine runs although their logs leave them going (``Store.claim_orphans`` gives
  each to one engine) and take each over: ``take_over`` appends the resume's claim and
  runs it here.

An engine on a single-writer store recovers once, on open: it resumes its RESUMABLE
workflows (there is nobody else to take them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from .._errors import SequenceConflictError, StoreError

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["CLAIM_BATCH", "OwnershipService", "scan_interval"]

log = logging.getLogger("evflow.recovery")

#: Workflows claimed per store round trip while recovering.
CLAIM_BATCH = 50
#: Safety net of the remote-cancel listener: look again without a notification this often.
_CANCEL_RECHECK = 5.0
#: Seconds between asks of the owner index after a lapse, while it cannot be reached.
_LAPSE_RECHECK = 0.5


def _say_taken_over(workflow_id: str) -> None:
    log.warning("workflow %r was taken over by another engine while this one was away", workflow_id)


def scan_interval(recovery_interval: float) -> float:
    """How often recovery looks for dead engines' workflows: a fifth of the interval it
    promises (at most a second), so a death is acted on well within it."""
    return min(1.0, recovery_interval / 5)


class OwnershipService:
    """One per engine on a shared store (``core.service(OwnershipService)``)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        #: How many workflows this engine took over from others (recovery), for logs/tests.
        self.taken_over = 0

    async def serve_cancels(self) -> None:
        """Cancel the runs here whose cancel another engine asked for."""
        core = self.core
        while True:
            try:
                requested = await core.store.wait_cancel_requests(_CANCEL_RECHECK)
            except StoreError:
                await anyio.sleep(1.0)
                continue
            for wid in requested:
                run = core.run_of(wid)
                if run is not None and not run.cancel_requested:
                    run.cancel_requested = True
                    run.scope.cancel()

    async def serve_lapses(self) -> None:
        """After each lapse of this engine's lease, stop the runs taken over meanwhile (the
        store refuses appends until then), then say which workflows were: those running
        here, and those whose runs had already let go because the store refused an append
        for the lapse itself."""
        core = self.core
        told: set[str] = set()
        while True:
            await core.store.wait_lapse()
            while True:  # until the index answers: nothing is appended meanwhile
                running = [wid for wid, _ in core.states() if core.run_of(wid) is not None]
                try:
                    taken = await core.store.not_owned(running)
                    break
                except StoreError:
                    await anyio.sleep(_LAPSE_RECHECK)
            for wid in taken:
                run = core.run_of(wid)
                if run is not None and run.lost is None:
                    _say_taken_over(wid)
                    state = core.find_state(wid)
                    seq = state.last_seq + 1 if state is not None else 0
                    run.lost = SequenceConflictError(wid, seq, 0)  # 0: its seq is not known here
                    run.scope.cancel()
            core.store.lapse_checked()
            for wid in core.lost_to_lapses():
                if wid in told or core.run_of(wid) is not None:
                    continue
                # Its log says who runs it now (a claim appends the next WorkflowStarted).
                with contextlib.suppress(StoreError):
                    await core.sync_known(wid)
                state = core.find_state(wid)
                if state is not None and state.owner not in (None, core.engine_id):
                    told.add(wid)
                    _say_taken_over(wid)

    async def recover(self, take_over: Callable[[str], Awaitable[bool]], scan: float) -> None:
        """Keep claiming and taking over orphaned workflows, every ``scan`` seconds."""
        while True:
            await anyio.sleep(scan)
            await self.recover_once(take_over)

    async def recover_once(self, take_over: Callable[[str], Awaitable[bool]]) -> None:
        """Claim and take over the orphaned workflows there are now, batch by batch."""
        while True:
            try:
                claimed = await self.core.store.claim_orphans(CLAIM_BATCH)
            except StoreError as exc:
                log.warning("recovery could not look for orphaned workflows: %s", exc)
                return
            await self._take_over_all(claimed, take_over)
            if len(claimed) < CLAIM_BATCH:
                return

    async def _take_over_all(
        self, claimed: list[tuple[str, str]], take_over: Callable[[str], Awaitable[bool]]
    ) -> None:
        """Take the claimed workflows over all at once: their resumes share commits."""
        async with anyio.create_task_group() as tg:
            for wid, previous in claimed:
                tg.start_soon(self._take_over_one, wid, previous, take_over)

    async def _take_over_one(
        self, wid: str, previous: str, take_over: Callable[[str], Awaitable[bool]]
    ) -> None:
        try:
            started = await take_over(wid)
        except Exception as exc:  # one workflow's trouble never stops recovery
            log.warning("could not take over workflow %r: %r", wid, exc)
            return
        if started:
            self.taken_over += 1
            log.info(
                "took over workflow %r from %s",
                wid,
                f"engine {previous!r}" if previous else "an engine that let go of it",
            )
