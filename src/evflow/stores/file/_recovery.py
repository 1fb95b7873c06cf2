"""The file store's recovery when a writer opens it: cut torn tails, redo the journal.

A torn tail of the journal (any damaged last entry) and of every log (a write cut short,
see ``_scan.damaged_tail``) is cut, the journal is redone into the logs (idempotent:
events are matched by seq; a deletion in the journal rebuilds the log from the entries
after it) and a checkpoint follows. A log whose last record was written whole but is
damaged gets it back from the journal when the journal holds it; else it may have been
acknowledged, so it is damage like any other. A damaged record is never cut or skipped:
that workflow raises ``CorruptLogError`` while every other stays usable (its journaled
events, if any, are not redone). A record counts as the last one when no intact record
follows it. One exception: damage where the journal continues the log (the journal's
first event for the workflow is at or before the first one missing) lies in appends not
yet checkpointed, which an OS crash may leave torn or with holes; that log is cut there
and redone like a torn tail, and a reader overlays the journal the same way. A log that
holds no event (0 bytes, a torn header or first event: a crash right after creating it)
is removed, and readers do not list it. The writer refuses to open, with a
``StoreError`` saying what to do, in two cases that only damage or outside changes
produce: a journal damaged before its end (the entries before the damage are redone
first) and a log that ends before the journal continues it (a seq gap). Moving the
journal aside then opens the store without it.
"""

from __future__ import annotations

import os

import msgspec

from ..._codec import frame
from ..._errors import CorruptLogError, StoreError
from . import _disk
from ._journal import JournalEntry, decode_entry
from ._layout import LOG_MAGIC, LOG_SUFFIX, log_file_name, seq_of, workflow_id_from_name
from ._scan import JOURNAL_KEY, LogScan, journal_continues, scan_frames, scan_log
from ._writer import Writer

__all__ = ["WARM_LIMIT", "Recovery"]

WARM_LIMIT = 256 * 1024 * 1024  # log bytes kept from the open scan for the first read_all


class Recovery(Writer):
    """A ``FileStore``'s recovery (a base class of it, on its writer): fills what
    ``append_nowait`` checks (each workflow's last seq, the damaged logs) from the disk."""

    def __init__(self, path: str, *, strict: bool, checkpoint_bytes: int) -> None:
        super().__init__(path, strict=strict, checkpoint_bytes=checkpoint_bytes)
        # Owned by the event loop once open: what append_nowait checks.
        self._last_seq: dict[str, int] = {}
        self._corrupt: dict[str, CorruptLogError] = {}
        # Logs read by the writer's recovery scan, kept for the first read_all (the engine's
        # recovery right after open) so that a cold start reads each log once.
        self._warm: dict[str, LogScan] = {}
        # Damaged logs found by the recovery scan, which the journal may repair (_repair).
        self._damaged: dict[str, tuple[str, LogScan]] = {}

    def _recover(self) -> None:
        """Cut torn tails, redo the journal into the logs, checkpoint (writer open)."""
        bad_tails: dict[str, tuple[int, str]] = {}
        with _disk.gc_paused():  # the scan keeps every record for the first read_all
            files = self._recover_logs(bad_tails)
        self._recover_journal(files, bad_tails)
        self._damaged.clear()  # the logs the journal did not repair stay corrupt

    def _recover_logs(self, bad_tails: dict[str, tuple[int, str]]) -> dict[str, tuple[str, int]]:
        """Scan every log, cut torn tails; fills ``bad_tails`` with the damaged last records
        (position, what) that only the journal can restore."""
        files: dict[str, tuple[str, int]] = {}  # workflow id -> (path, number of events)
        warm_bytes = 0
        for name in os.listdir(self._workflows_dir):
            if not name.endswith(LOG_SUFFIX):
                continue
            path = os.path.join(self._workflows_dir, name)
            buf = _disk.read_file(path)
            if buf is None:
                continue
            scan = scan_log(buf)
            workflow_id = workflow_id_from_name(name)  # None for a hashed name
            if workflow_id is None and scan.workflow_id and log_file_name(scan.workflow_id) == name:
                workflow_id = scan.workflow_id
            if workflow_id is None:
                if scan.damage is None and not scan.events.starts and name.startswith("~"):
                    _disk.unlink(path)  # a hashed log torn before its header was complete
                continue
            if scan.damage is not None:
                self._corrupt[workflow_id] = CorruptLogError(workflow_id, *scan.damage)
                if scan.workflow_id in (None, workflow_id):
                    self._damaged[workflow_id] = (path, scan)
                continue
            if scan.workflow_id is None:
                _disk.unlink(path)  # torn before its header was complete: never held an event
                self._dir_dirty = True
                continue
            if scan.workflow_id != workflow_id:
                self._corrupt[workflow_id] = CorruptLogError(
                    workflow_id, len(LOG_MAGIC), f"the log belongs to workflow {scan.workflow_id!r}"
                )
                continue
            if scan.tail_damage is not None:
                bad_tails[workflow_id] = scan.tail_damage  # cut only if the journal restores it
            elif scan.good_end < len(buf):
                _disk.truncate(path, scan.good_end)
                self._dirty.add(workflow_id)
            last = 0
            if scan.events.starts:
                pos = scan.events.starts[-1]
                try:
                    last = seq_of(scan.events.payload(-1))
                except msgspec.DecodeError as exc:
                    self._corrupt[workflow_id] = CorruptLogError(
                        workflow_id, pos, f"undecodable event: {exc}"
                    )
                    continue
            self._last_seq[workflow_id] = last
            files[workflow_id] = (path, len(scan.events.starts))
            if warm_bytes < WARM_LIMIT and scan.tail_damage is None:
                self._warm[workflow_id] = scan
                warm_bytes += len(buf)
        return files

    def _recover_journal(
        self, files: dict[str, tuple[str, int]], bad_tails: dict[str, tuple[int, str]]
    ) -> None:
        journal = _disk.read_file(self._journal_path) or b""
        jscan = scan_frames(journal, 0, JOURNAL_KEY)
        problem: str | None = None
        if jscan.damage is not None:
            pos, what = jscan.damage
            problem = (
                f"{self.url}: the journal is damaged at byte {pos} ({what}), before its end; its "
                f"entries up to there were redone. Move {self._journal_path!r} aside to open the "
                "store without the rest (their events are lost)"
            )
        elif jscan.good_end < len(journal):
            _disk.ftruncate(self._journal_fd, jscan.good_end)  # torn tail: never acknowledged
        entries: list[JournalEntry] = []
        for pos, payload in jscan.records():
            try:
                entries.append(decode_entry(payload))
            except msgspec.DecodeError as exc:
                problem = f"{self.url}: undecodable journal entry at byte {pos}: {exc}"
                break
        try:
            self._redo(entries, files, bad_tails)
        except StoreError as exc:
            problem = str(exc)
        if problem is not None:
            self._sync_dirty()
            raise StoreError(problem)
        for workflow_id, (path, n_events) in files.items():
            if n_events == 0 and self._last_seq.get(workflow_id) == 0:
                _disk.unlink(path)  # created but no event survived: as if never created
                del self._last_seq[workflow_id]
                self._warm.pop(workflow_id, None)
                self._dir_dirty = True
        self._checkpoint(final=True)

    def _redo(
        self,
        entries: list[JournalEntry],
        files: dict[str, tuple[str, int]],
        bad_tails: dict[str, tuple[int, str]],
    ) -> None:
        # A deletion in the journal makes every earlier entry of that workflow moot, and
        # every event of its new incarnation is in the journal after it: so delete the log
        # and rebuild it from there. Without a deletion, the log ends at or after the seq
        # before the workflow's first journal entry (a checkpoint fsynced it).
        # A log whose last record is damaged (bad_tails) gets it back from the journal when
        # the journal holds the seq after the last intact record; it is then cut there and
        # the journal's copy written instead. Otherwise the record was checkpointed (it was
        # acknowledged) and only the damage can be reported.
        last_deletion = {e.workflow_id: i for i, e in enumerate(entries) if e.deleted}
        pending: dict[str, list[bytes]] = {}
        for index, entry in enumerate(entries):
            workflow_id = entry.workflow_id
            if index < last_deletion.get(workflow_id, -1):
                continue
            if entry.deleted:
                bad_tails.pop(workflow_id, None)
                self._last_seq.pop(workflow_id, None)
                self._corrupt.pop(workflow_id, None)
                self._warm.pop(workflow_id, None)
                pending.pop(workflow_id, None)
                files.pop(workflow_id, None)
                self._delete_log(workflow_id)
                continue
            if workflow_id in self._corrupt and not self._repair(workflow_id, entry, files):
                continue  # its log is damaged mid-way; nothing can be appended to it
            last = self._last_seq.get(workflow_id, 0)
            for payload in entry.events:
                try:
                    seq = seq_of(payload)
                except msgspec.DecodeError as exc:
                    self._flush_redo(pending)
                    raise StoreError(
                        f"{self.url}: an undecodable event for workflow {workflow_id!r} in the journal "
                        f"({exc}); move {self._journal_path!r} aside to open the store without it"
                    ) from exc
                if seq <= last:
                    continue
                if workflow_id in bad_tails:
                    if seq != last + 1:  # the damaged record is not in the journal
                        break
                    pos, _ = bad_tails.pop(workflow_id)
                    _disk.truncate(self._log_path(workflow_id), pos)
                if seq != last + 1:
                    self._flush_redo(pending)
                    raise StoreError(
                        f"{self.url}: workflow {workflow_id!r}: its log ends at seq {last} but the "
                        f"journal continues at seq {seq}; the log was changed outside evflow. Restore "
                        f"it, or move {self._journal_path!r} aside to open the store without the journal"
                    )
                pending.setdefault(workflow_id, []).append(frame(payload))
                last = seq
            if workflow_id not in bad_tails:
                self._last_seq[workflow_id] = last
        self._flush_redo(pending)
        for workflow_id, (pos, what) in bad_tails.items():
            self._corrupt[workflow_id] = CorruptLogError(workflow_id, pos, what)
            self._last_seq.pop(workflow_id, None)
            files.pop(workflow_id, None)

    def _repair(self, workflow_id: str, entry: JournalEntry, files: dict[str, tuple[str, int]]) -> bool:
        """Cut a damaged log where the journal continues it (its first entry for the
        workflow): the damage is then in appends since the last checkpoint, which an OS
        crash may leave torn or with holes (unsynced writes reach the disk in any order),
        and the journal holds every event from there on. False: it stays corrupt."""
        damaged = self._damaged.pop(workflow_id, None)
        if damaged is None or not journal_continues(damaged[1], entry.events):
            return False
        path, scan = damaged
        if scan.workflow_id is None:  # the header itself: the redo writes a new log
            _disk.unlink(path)
            self._dir_dirty = True
            self._last_seq[workflow_id] = 0
        else:
            _disk.truncate(path, scan.good_end)
            self._dirty.add(workflow_id)
            files[workflow_id] = (path, len(scan.events.starts))
            self._last_seq[workflow_id] = seq_of(scan.events.payload(-1)) if scan.events.starts else 0
        del self._corrupt[workflow_id]
        return True

    def _flush_redo(self, pending: dict[str, list[bytes]]) -> None:
        for workflow_id, frames in pending.items():
            self._warm.pop(workflow_id, None)
            self._append_to_log(workflow_id, frames)
        pending.clear()
