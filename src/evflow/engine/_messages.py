"""Messages (``evflow.send``): recorded in the target workflow's own log as
``MessageReceived``, folded into its inbox, consumed by its ``EVENT`` steps.

Who appends the message depends on who may write the log:

- a store that is not shared (memory, file: one writer engine), or a workflow this
  engine runs: this engine, with ``core.emit`` (it assigns the seqs: no conflict);
- a shared store (PostgreSQL) and no live engine runs the workflow: the sender, at the
  next seq, reading again and retrying when another engine appended first;
- a shared store and another live engine runs it: only that engine may append, so the
  sender posts the message to the store's durable mailbox (which notifies) and waits
  until the owner's ``MailboxService`` has moved it into the log. Should the owner go
  away meanwhile, the sender (or whoever resumes the workflow first) moves it.

A moved message carries its ``mailbox_id``, and the fold ignores a second message with
the same mailbox id or idempotency key, so a move that is repeated after a crash
records nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._codec import decode_event, encode_event, encode_value
from .._errors import StoreError, WorkflowNotRunningError
from .._events import Event, MessageReceived
from .._projection import WorkflowState, WorkflowStatus
from .._signal import Signal, new_signal
from .._step import validate_workflow_id

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["MAILBOX_WAIT", "MAX_TOPIC_LENGTH", "MailboxService", "check_topic", "send"]

MAX_TOPIC_LENGTH = 256
#: How long (seconds) ``send`` waits for another live engine to move its message from
#: the mailbox into the log; the message is durable in the mailbox all along.
MAILBOX_WAIT = 30.0
#: Safety net of the mailbox service: look at the mailbox this often without a NOTIFY.
_MAIL_RECHECK = 5.0

_FINISHED = (WorkflowStatus.SUCCESSFUL, WorkflowStatus.FAILED, WorkflowStatus.CANCELED)


def _check_text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}: the {what} must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_TOPIC_LENGTH:
        raise ValueError(
            f"{where}: the {what} must be 1 to {MAX_TOPIC_LENGTH} characters long, got {value!r}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: the {what} {value!r} holds a lone surrogate (not valid text)") from None
    return value


def check_topic(topic: Any, where: str) -> str:
    """A message topic: a non-empty ``str`` of at most 256 characters, valid text
    (``TypeError`` for a non-str, ``ValueError`` otherwise)."""
    return _check_text(topic, "topic", where)


def _refuses(state: WorkflowState) -> bool:
    """Whether a finished workflow refuses messages (an idle actor takes them: a later
    call may wait for them)."""
    if state.kind == "actor":
        return state.status is WorkflowStatus.CANCELED
    return state.status in _FINISHED


def _refused(state: WorkflowState) -> WorkflowNotRunningError:
    return WorkflowNotRunningError(
        state.workflow_id,
        state.status.value,
        "a finished workflow takes no messages (nothing would consume them)",
    )


def _is_recorded(state: WorkflowState, key: str | None, mailbox_id: int | None) -> bool:
    return (key is not None and key in state.message_ids) or (
        mailbox_id is not None and mailbox_id in state.message_ids
    )


async def send(
    core: EngineCore, workflow_id: str, topic: str, payload: Any, idempotency_key: str | None
) -> None:
    """Record a message in the workflow's log (durably) and return; see the module."""
    where = f"send({workflow_id!r}, {topic!r})"
    validate_workflow_id(workflow_id)
    check_topic(topic, where)
    if idempotency_key is not None:
        _check_text(idempotency_key, "idempotency_key", where)
    encoded = encode_value(
        payload, allow_pickle=core.allow_pickle, what=f"the payload of message {topic!r} to {workflow_id!r}"
    )
    fields = {"topic": topic, "payload": encoded, "idempotency_key": idempotency_key}
    if not core.store.shared or core.run_of(workflow_id) is not None:
        state = await core.sync(workflow_id)
        if _is_recorded(state, idempotency_key, None):
            return  # a retry of a send that was recorded (also once the workflow ended)
        if _refuses(state):
            raise _refused(state)
        await _emit(core, state, fields)
        return
    await _send_shared(core, workflow_id, fields)


async def _emit(core: EngineCore, state: WorkflowState, fields: dict[str, Any]) -> None:
    try:
        core.emit(state, (MessageReceived, fields))
        await core.store.flush(state.workflow_id)
    except StoreError:
        core.refetch(state.workflow_id)  # what was folded may not be in the store
        raise


async def _send_shared(core: EngineCore, workflow_id: str, fields: dict[str, Any]) -> None:
    store = core.store
    key = fields["idempotency_key"]
    mailbox_id: int | None = None
    with anyio.move_on_after(MAILBOX_WAIT) as scope:
        while True:
            if core.run_of(workflow_id) is not None:  # claimed by this engine meanwhile
                await core.service(MailboxService).drain([workflow_id])
                state = core.state(workflow_id)
                if mailbox_id is None and not _is_recorded(state, key, None):
                    await _emit(core, state, fields)
                return
            state = await core.sync(workflow_id)  # WorkflowNotFoundError
            if mailbox_id is None:
                if _is_recorded(state, key, None):
                    return
                if _refuses(state):
                    raise _refused(state)
            elif _is_recorded(state, key, mailbox_id):
                return
            if state.status is WorkflowStatus.RUNNING:
                # Another live engine runs it: only it may append; it moves the mail.
                if mailbox_id is None:
                    message = MessageReceived(seq=0, time=time.time(), **fields)
                    mailbox_id = await store.post_message(workflow_id, encode_event(message))
                    continue
                with anyio.move_on_after(1.0):
                    await store.wait_for_events(workflow_id, state.last_seq)
                continue
            # Nobody runs it: append at the next seq; another engine appending first
            # (a resume's claim, another message) means the log grew: look again.
            event = MessageReceived(seq=state.last_seq + 1, time=time.time(), **fields, mailbox_id=mailbox_id)
            if await core.append_then_fold(state, event) is not None:
                if mailbox_id is not None:
                    await store.delete_from_mailbox([mailbox_id])
                return
    if scope.cancelled_caught and mailbox_id is None:
        raise StoreError(
            f"send to {workflow_id!r}: other engines kept appending to it for {MAILBOX_WAIT:g} s; "
            "nothing was recorded, send again"
        )
    # Else durable in the mailbox: the engine that runs the workflow moves it, or whoever
    # resumes the workflow next.


class MailboxService:
    """Moves the messages other engines posted to a shared store's mailbox into the
    logs of the workflows this engine runs (``core.service(MailboxService)``)."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._active: Signal | None = None

    async def run(self) -> None:
        """Listen for mail and move it, until cancelled (the engine closes).

        It listens only once this engine runs a workflow (it hears of the first event of
        one): an engine that runs none has no mail to move, and opens no connection.
        """
        core, store = self.core, self.core.store
        self._active = active = new_signal()
        core.add_event_listener(self)
        try:
            await active.wait()
        finally:
            core.remove_event_listener(self)
        seen = -1
        while True:
            try:
                # The first wait only makes sure the store listens, so no notification
                # is missed between the first look and the first real wait.
                seen = await store.wait_for_mail(seen, _MAIL_RECHECK)
                await self.drain(None)
            except StoreError:
                await anyio.sleep(1.0)  # the store is down: look again in a while

    def event_folded(self, state: WorkflowState, event: Event) -> None:
        if self._active is not None and self.core.run_of(state.workflow_id) is not None:
            self._active.set()

    def run_closed(self, workflow_id: str) -> None:
        pass

    async def drain(self, workflow_ids: Sequence[str] | None) -> None:
        """Move the mail of these workflows (None: every one this engine runs) into their
        logs, then delete it from the mailbox. Only workflows that run here are moved; a
        workflow whose append fails keeps its mail (the next owner moves it)."""
        core = self.core
        wanted = [
            wid
            for wid in (workflow_ids if workflow_ids is not None else [wid for wid, _ in core.states()])
            if core.run_of(wid) is not None
        ]
        if not wanted:
            return
        rows = await core.store.read_mailbox(wanted)
        moved: dict[str, list[int]] = {}
        for mailbox_id, wid, data in rows:
            state = core.find_state(wid)
            if state is None or core.run_of(wid) is None:
                continue
            message = decode_event(data)
            if not isinstance(message, MessageReceived):
                continue  # not a message: left for a human to look at
            if not _is_recorded(state, message.idempotency_key, mailbox_id):
                core.emit(
                    state,
                    (
                        MessageReceived,
                        {
                            "topic": message.topic,
                            "payload": message.payload,
                            "idempotency_key": message.idempotency_key,
                            "mailbox_id": mailbox_id,
                        },
                    ),
                )
            moved.setdefault(wid, []).append(mailbox_id)
        done: list[int] = []
        for wid, ids in moved.items():
            try:
                await core.store.flush(wid)
            except StoreError:
                continue  # its run lets go of it; the mail stays for whoever resumes it
            done.extend(ids)
        if done:
            await core.store.delete_from_mailbox(done)
