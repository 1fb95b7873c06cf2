"""Scanning the file store's records: the frames of a log or of the journal, and the
rules that tell a torn last record (a write cut short: cut) from damage (never cut or
skipped; see docs/storage.md, "Torn or damaged?").

Opening a store scans every log, so these keep positions (plain ints) rather than
objects per record, and decode nothing but what they must.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

import msgspec

from ..._codec import FRAME_HEADER, decode_event, read_frames
from ..._errors import CorruptLogError
from ..._events import AnyEvent
from ._layout import LOG_MAGIC, seq_of

__all__ = [
    "EVENT_KEY",
    "JOURNAL_KEY",
    "LogScan",
    "Record",
    "Scan",
    "damaged_tail",
    "decode_events",
    "intact_record_after",
    "journal_continues",
    "scan_frames",
    "scan_log",
]

# Every encoded event is a msgpack map whose first key is the union's tag field "type"; a
# journal entry's first key is its tag field "journal". Searching for these keys finds
# the intact records that may follow a damaged one (see intact_record_after).
EVENT_KEY = b"\xa4type"
JOURNAL_KEY = b"\xa7journal"
_MAP_HEADER_SIZES = (1, 3)  # fixmap (up to 15 fields), map16


def intact_record_after(buf: bytes, start: int, key: bytes) -> bool:
    """Whether an intact record (checksum ok) of the kind marked by ``key`` starts after
    ``start``. Tells a torn last record (nothing after it) from damage in the middle,
    e.g. a corrupted length field that makes a record seem to run past the end."""
    end = len(buf)
    hit = buf.find(key, start)
    while hit != -1:
        for header_size in _MAP_HEADER_SIZES:
            pos = hit - header_size - FRAME_HEADER.size
            if pos >= start:
                length, crc = FRAME_HEADER.unpack_from(buf, pos)
                body = pos + FRAME_HEADER.size
                if 0 < length <= end - body and zlib.crc32(memoryview(buf)[body : body + length]) == crc:
                    return True
        hit = buf.find(key, hit + 1)
    return False


#: (byte position, payload) of a record; payloads are views into the file's buffer.
Record: TypeAlias = tuple[int, bytes | memoryview]


class Scan(NamedTuple):
    """The intact records of a buffer, as positions (plain ints: cheap to keep, no GC)."""

    buf: bytes
    starts: list[int]  # where each intact record's frame starts
    ends: list[int]  # where it ends; its payload is buf[start + FRAME_HEADER.size : end]
    good_end: int  # where the intact records end; a torn tail starts here
    damage: tuple[int, str] | None  # a damaged record that is not the last one

    def payload(self, index: int) -> memoryview:
        return memoryview(self.buf)[self.starts[index] + FRAME_HEADER.size : self.ends[index]]

    def records(self) -> list[Record]:
        view = memoryview(self.buf)
        skip = FRAME_HEADER.size
        return [(start, view[start + skip : end]) for start, end in zip(self.starts, self.ends, strict=True)]


def scan_frames(buf: bytes, start: int, key: bytes) -> Scan:
    """The intact records of ``buf`` from ``start`` (``_codec.read_frames``), and whether
    the first one that is not intact is damage: an intact record of the kind marked by
    ``key`` follows it. Otherwise it is the buffer's last record, judged by the caller
    (a torn journal entry is cut; a log's last record, see ``damaged_tail``)."""
    found = read_frames(buf, start)
    damage = None
    if found.problem and intact_record_after(buf, found.end + 1, key):
        damage = (found.end, found.problem)
    return Scan(buf, found.starts, found.ends, found.end, damage)


class LogScan(NamedTuple):
    """A scanned workflow log: the id from its header record, then its event records."""

    workflow_id: str | None  # None when the header is torn
    events: Scan  # the event records (the header record left out)
    #: A damaged last record that was written whole, so not a torn write (see
    #: damaged_tail): it may hold an acknowledged event and is never cut unless the
    #: journal restores it.
    tail_damage: tuple[int, str] | None = None

    @property
    def good_end(self) -> int:
        return self.events.good_end

    @property
    def damage(self) -> tuple[int, str] | None:
        return self.events.damage


def scan_log(buf: bytes) -> LogScan:
    """Parse a workflow log: magic, id record, event records (not decoded)."""
    magic = len(LOG_MAGIC)
    if len(buf) < magic or buf[:magic] != LOG_MAGIC:
        if LOG_MAGIC.startswith(buf):
            return LogScan(None, Scan(buf, [], [], 0, None))  # torn creation
        return LogScan(None, Scan(buf, [], [], 0, (0, "not an evflow workflow log (bad magic)")))
    scan = scan_frames(buf, magic, EVENT_KEY)
    if not scan.starts:
        damage = scan.damage and (scan.damage[0], f"damaged header: {scan.damage[1]}")
        return LogScan(None, Scan(buf, [], [], magic, damage))
    try:
        workflow_id = bytes(scan.payload(0)).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        damage = (scan.starts[0], "damaged header: workflow id is not UTF-8")
        return LogScan(None, Scan(buf, [], [], magic, damage))
    events = scan._replace(starts=scan.starts[1:], ends=scan.ends[1:])
    tail_damage = None
    if scan.damage is None and scan.good_end < len(buf):
        what = damaged_tail(buf, scan.good_end)
        tail_damage = None if what is None else (scan.good_end, what)
    return LogScan(workflow_id, events, tail_damage)


#: What an OS crash loses of a file's data comes in whole sectors (or pages): the zeros
#: it leaves at the end of a log start at a multiple of this.
_SECTOR = 512


def damaged_tail(buf: bytes, pos: int) -> str | None:
    """Why the last record of a log (at ``pos``, nothing intact after it) is damage rather
    than a torn write; None for a torn write, which holds nothing durable and is cut.

    A write that did not complete leaves a frame that runs past the end of the file (the
    process died while writing), or zeros from a sector boundary to the end (the file grew
    but its data never reached the disk). A frame that is complete and fails its checksum
    anyway was written whole and changed since (bit rot, an outside change), and so is one
    that only seems to run past the end because its length field was hit: the bytes up to
    the end still carry its checksum.
    """
    end = len(buf)
    if end - pos < FRAME_HEADER.size:
        return None
    length, crc = FRAME_HEADER.unpack_from(buf, pos)
    body = pos + FRAME_HEADER.size
    if body + length > end:
        if length and zlib.crc32(memoryview(buf)[body:]) == crc:
            return "damaged length field in the last record (its data is complete)"
        return None
    zeros_from = pos + len(bytes(memoryview(buf)[pos:]).rstrip(b"\0"))
    if zeros_from < end and (zeros_from % _SECTOR == 0 or zeros_from == pos):
        return None
    what = "checksum mismatch" if length else "empty record"
    return f"{what} in the last record, which is complete (damage, not a torn write)"


def journal_continues(scan: LogScan, journaled: Sequence[bytes]) -> bool:
    """Whether the journaled events of a workflow (after its last deletion) start at or
    before the first event missing from its damaged log, i.e. hold all that is lost."""
    try:
        last = seq_of(scan.events.payload(-1)) if scan.events.starts else 0
        return bool(journaled) and seq_of(journaled[0]) <= last + 1
    except msgspec.DecodeError:
        return False


def decode_events(workflow_id: str, records: Sequence[Record], after: int) -> list[AnyEvent]:
    """Decode the records with seq > ``after``; raises ``CorruptLogError`` for an
    undecodable one. Seqs run 1, 2, 3, ... so the first ``after`` records are skipped
    without decoding when the record at that index confirms it."""
    start = 0
    if after > 0:
        index = min(after, len(records)) - 1
        try:
            if seq_of(records[index][1]) == index + 1:
                start = index + 1
        except (msgspec.DecodeError, IndexError):
            start = 0
    out: list[AnyEvent] = []
    for pos, payload in records[start:]:
        try:
            event = decode_event(payload)
        except msgspec.DecodeError as exc:
            raise CorruptLogError(workflow_id, pos, f"undecodable event: {exc}") from exc
        if event.seq > after:
            out.append(event)
    return out
