"""The file store's layout: file names, the workflow id <-> log name mapping, a log's
header, the store marker, and the seq of an encoded event.

Layout of the store directory::

    evflow-store.json      {"format": 1}; a higher format is refused
    LOCK                   flock()ed by the one writer for its whole life; holds its pid
                           and engine id (one a line), for messages and owner_alive()
    journal                write-ahead journal: framed ``JournalEntry`` records
    workflows/<name>.log   b"EVFLOG1\\n", a framed record holding the workflow id, then one
                           framed record per event (``encode_event``)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse

import msgspec

from ..._codec import frame
from ..._errors import StoreError
from . import _disk

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "LOG_MAGIC",
    "LOG_SUFFIX",
    "MARKER_NAME",
    "MAX_NAME_CHARS",
    "STORE_FORMAT",
    "WORKFLOWS_DIR",
    "check_marker",
    "log_file_name",
    "log_header",
    "refuse_foreign_directory",
    "seq_of",
    "workflow_id_from_name",
]

STORE_FORMAT = 1
MARKER_NAME = "evflow-store.json"
LOCK_NAME = "LOCK"
JOURNAL_NAME = "journal"
WORKFLOWS_DIR = "workflows"
LOG_SUFFIX = ".log"
LOG_MAGIC = b"EVFLOG1\n"
MAX_NAME_CHARS = 200


class _SeqOnly(msgspec.Struct):
    """Reads just the seq of an encoded event (other fields are skipped, not decoded)."""

    seq: int


_seq_decoder = msgspec.msgpack.Decoder(_SeqOnly)


def seq_of(payload: bytes | memoryview) -> int:
    """The seq of an encoded event; raises ``msgspec.DecodeError`` when it has none."""
    return _seq_decoder.decode(payload).seq


def log_header(workflow_id: str) -> bytes:
    """What a workflow's log starts with: the magic, then a record holding its id."""
    return LOG_MAGIC + frame(workflow_id.encode("utf-8", "surrogatepass"))


# -- workflow id <-> file name ---------------------------------------------------------------

_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.")
_BYTE_TEXT = [chr(b) if b in _SAFE_BYTES else f"%{b:02x}" for b in range(256)]


def log_file_name(workflow_id: str) -> str:
    """The file name (under ``workflows/``) of a workflow's log; a pure, injective function.

    ``[a-z0-9_-]`` and ``.`` (except first) stay as they are; every other byte of the UTF-8
    id is ``%xx`` (lower-case hex, so ids differing only in case never collide on a
    case-insensitive file system, and no ``/``, ``\\`` or NUL can appear). A name over 200
    characters becomes ``~`` + the id's sha256; ``~`` never starts an escaped name.
    """
    raw = workflow_id.encode("utf-8", "surrogatepass")
    name = "".join([_BYTE_TEXT[b] for b in raw])
    if raw[:1] == b".":
        name = "%2e" + name[1:]
    if len(name) > MAX_NAME_CHARS:
        name = "~" + hashlib.sha256(raw).hexdigest()
    return name + LOG_SUFFIX


_PLAIN_STEM = re.compile(r"[a-z0-9_-][a-z0-9_.-]*")
_ESCAPED_STEM = re.compile(r"(?:[a-z0-9_.-]|%[0-9a-f]{2})+")


def workflow_id_from_name(name: str) -> str | None:
    """Invert ``log_file_name``; None for a hashed name (the id is in the log's header)
    and for any name this store would not have written."""
    if not name.endswith(LOG_SUFFIX):
        return None
    stem = name[: -len(LOG_SUFFIX)]
    if len(stem) > MAX_NAME_CHARS:
        return None
    if _PLAIN_STEM.fullmatch(stem):  # the common case, and canonical as it is
        return stem
    if not _ESCAPED_STEM.fullmatch(stem):
        return None
    try:
        workflow_id = urllib.parse.unquote_to_bytes(stem).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return workflow_id if log_file_name(workflow_id) == name else None


# -- the store marker ------------------------------------------------------------------------


def check_marker(path: str, url: str, create: bool) -> None:
    """Refuse a store written in a newer format; with ``create``, write the marker of a
    new store (refusing a directory that holds anything but a store's files)."""
    marker = os.path.join(path, MARKER_NAME)
    data = _disk.read_file(marker)
    if data is None:
        if not create:
            return
        refuse_foreign_directory(path, url)
        tmp = marker + ".tmp"
        fd = _disk.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _disk.write_all(fd, json.dumps({"format": STORE_FORMAT}).encode() + b"\n")
            _disk.fsync(fd)
        finally:
            _disk.close(fd)
        _disk.replace(tmp, marker)
        return
    try:
        version = json.loads(data)["format"]
        if not isinstance(version, int):
            raise TypeError(version)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{url}: unreadable store marker {MARKER_NAME}: {exc!r}") from exc
    if version > STORE_FORMAT:
        raise StoreError(
            f"{url} was written in store format {version} by a newer evflow; this "
            f"version reads format {STORE_FORMAT} at most: upgrade evflow"
        )


def refuse_foreign_directory(path: str, url: str) -> None:
    """Refuse to make a store in a directory that holds other files and no marker."""
    if os.path.exists(os.path.join(path, MARKER_NAME)):
        return
    ours = {MARKER_NAME, LOCK_NAME, JOURNAL_NAME, WORKFLOWS_DIR, MARKER_NAME + ".tmp"}
    if not set(os.listdir(path)) <= ours:
        raise StoreError(
            f"{url} is not an evflow store (no {MARKER_NAME}) and is not empty; pass a new or empty directory"
        )
