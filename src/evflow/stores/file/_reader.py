"""The file store's read side: decoding a log (with what a dead writer's journal adds),
listing the logs, and verifying them. Readers take no lock and write nothing; these run
in worker threads.

Readers (``read_only=True``) read the logs while a writer appends (a torn last record is
data still being written) and, when no writer is alive, overlay what the journal holds
beyond the logs (after a crash, before recovery).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import msgspec

from ..._codec import FRAME_HEADER, decode_event
from ..._errors import CorruptLogError
from ..._events import AnyEvent
from . import _disk
from ._journal import Overlay, journaled_seqs
from ._layout import LOG_MAGIC, LOG_SUFFIX, log_file_name, log_header, seq_of, workflow_id_from_name
from ._scan import LogScan, Record, decode_events, journal_continues, scan_log

__all__ = [
    "check",
    "check_log",
    "list_files",
    "list_ids",
    "lists_log",
    "load",
    "read_header_id",
    "stat_stamps",
]


def load(
    workflow_id: str,
    path: str,
    after: int,
    overlay: dict[str, Overlay] | None,
    scan: LogScan | None = None,
) -> list[AnyEvent]:
    """The events of a log with seq > ``after`` (``scan``: the log, if the caller has
    scanned it already), plus what a reader's ``overlay`` adds from a dead writer's journal."""
    extra = overlay.get(workflow_id) if overlay else None
    records: list[Record] = []
    tail_damage: tuple[int, str] | None = None
    if extra is None or not extra.reset:
        if scan is None:
            buf = _disk.read_file(path)
            scan = None if buf is None else scan_log(buf)
        if scan is not None:
            if scan.damage is not None and not (extra and journal_continues(scan, extra.events)):
                raise CorruptLogError(workflow_id, *scan.damage)
            if scan.workflow_id not in (None, workflow_id):
                raise CorruptLogError(
                    workflow_id, len(LOG_MAGIC), f"the log belongs to workflow {scan.workflow_id!r}"
                )
            records = scan.events.records()
            tail_damage = scan.tail_damage
    if extra is not None and extra.events:
        last = 0
        if records:
            pos, payload = records[-1]
            try:
                last = seq_of(payload)
            except msgspec.DecodeError as exc:
                raise CorruptLogError(workflow_id, pos, f"undecodable event: {exc}") from exc
        for payload in extra.events:
            try:
                seq = seq_of(payload)
            except msgspec.DecodeError:
                break  # a reader shows what it can; the writer's recovery will say why
            if seq == last + 1:
                records.append((-1, payload))
                last = seq
                tail_damage = None  # the journal restores the damaged last record
    if tail_damage is not None:
        raise CorruptLogError(workflow_id, *tail_damage)
    return decode_events(workflow_id, records, after)


def list_files(workflows_dir: str) -> list[tuple[str, str]]:
    """(workflow id, path) of every log file; hashed names are resolved by their header."""
    try:
        names = os.listdir(workflows_dir)
    except FileNotFoundError:
        return []
    out: list[tuple[str, str]] = []
    for name in names:
        path = os.path.join(workflows_dir, name)
        workflow_id = workflow_id_from_name(name)
        if workflow_id is None and name.startswith("~") and name.endswith(LOG_SUFFIX):
            workflow_id = read_header_id(path)
            if workflow_id is not None and log_file_name(workflow_id) != name:
                workflow_id = None
        if workflow_id is not None:
            out.append((workflow_id, path))
    return out


def list_ids(workflows_dir: str, overlay: dict[str, Overlay] | None) -> list[str]:
    """Ids of every workflow a reader lists (its log holds an event or damage, or the
    overlay gives it events)."""
    ids = [
        workflow_id
        for workflow_id, path in list_files(workflows_dir)
        if (overlay and workflow_id in overlay) or lists_log(workflow_id, path)
    ]
    if overlay:
        known = set(ids)
        ids = [w for w in ids if not (w in overlay and overlay[w].reset and not overlay[w].events)]
        ids += [w for w, o in overlay.items() if o.events and w not in known]
    return ids


def check_log(
    workflow_id: str, name: str, buf: bytes, overlay: Overlay | None
) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    """The problems and the notes (see FileStore.notes) of one log."""
    scan = scan_log(buf)
    problems: list[tuple[str, int, str]] = []
    notes: list[tuple[str, int, str]] = []
    if scan.workflow_id is not None and log_file_name(scan.workflow_id) != name:
        problems.append((workflow_id, len(LOG_MAGIC), f"header names workflow {scan.workflow_id!r}"))
    expected = 1
    for pos, payload in scan.events.records():
        try:
            event = decode_event(payload)
        except msgspec.DecodeError as exc:
            problems.append((workflow_id, pos, f"undecodable event: {exc}"))
            continue
        if event.seq != expected:
            problems.append((workflow_id, pos, f"seq {event.seq} where {expected} was expected"))
        expected = event.seq + 1
    if scan.damage is not None:
        problems.append((workflow_id, *scan.damage))
        return problems, notes
    journaled = journaled_seqs(overlay)
    if scan.tail_damage is not None:
        pos, what = scan.tail_damage
        if expected in journaled:
            notes.append((workflow_id, pos, f"{what}; the journal holds its event: a writer restores it"))
        else:
            problems.append((workflow_id, pos, what))
    elif not scan.events.starts and not journaled:
        what = (
            "the log holds no event (what a crash between creating it and writing its first "
            "event leaves): a writer opening the store removes it"
        )
        notes.append((workflow_id, 0, what))
    elif scan.good_end < len(buf):
        what = (
            f"incomplete last record ({len(buf) - scan.good_end} bytes, a write cut short): a writer "
            "opening the store cuts it (and redoes it from the journal if it was acknowledged)"
        )
        notes.append((workflow_id, scan.good_end, what))
    return problems, notes


def lists_log(workflow_id: str, path: str) -> bool:
    """Whether a reader lists a log: it holds an event, or damage to report. Not a log that
    is what a crash between its creation and its first write leaves (0 bytes, a torn
    header or first event), which holds no acknowledged event and a writer removes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        header = len(log_header(workflow_id))
        head = os.pread(fd, FRAME_HEADER.size, header)
    finally:
        os.close(fd)
    if len(head) == FRAME_HEADER.size:
        length, _ = FRAME_HEADER.unpack(head)
        if length and header + FRAME_HEADER.size + length <= size:
            return True  # a complete first record: the common case, decided by one read
    buf = _disk.read_file(path)
    if buf is None:
        return False
    scan = scan_log(buf)
    return bool(scan.events.starts) or scan.damage is not None or scan.tail_damage is not None


def read_header_id(path: str) -> str | None:
    """The workflow id in a log's header (enough bytes for a 256-character id)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.read(fd, len(LOG_MAGIC) + FRAME_HEADER.size + 4 * 256)
    finally:
        os.close(fd)
    return scan_log(head).workflow_id


def stat_stamps(paths: Sequence[str]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size))
    return out


def check(
    workflows_dir: str, workflow_id: str | None, overlay: dict[str, Overlay]
) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    """The problems and the notes (see ``FileStore.notes``) of one log or of every one."""
    if workflow_id is not None:
        pairs = [(workflow_id, os.path.join(workflows_dir, log_file_name(workflow_id)))]
    else:
        pairs = list_files(workflows_dir)
        listed = {p for _, p in pairs}
        try:
            names = sorted(os.listdir(workflows_dir))
        except FileNotFoundError:
            names = []
        for name in names:  # logs whose name or header does not resolve to an id
            path = os.path.join(workflows_dir, name)
            if name.endswith(LOG_SUFFIX) and path not in listed:
                pairs.append((name, path))
    problems: list[tuple[str, int, str]] = []
    notes: list[tuple[str, int, str]] = []
    for wid, path in pairs:
        buf = _disk.read_file(path)
        if buf is not None:
            found, noted = check_log(wid, os.path.basename(path), buf, overlay.get(wid))
            problems.extend(found)
            notes.extend(noted)
    return problems, notes
