"""The fetch journal: an append-only file of fetched segments, folded into the partitions once.

A load used to write every fetched segment straight into its partition, rewriting a month of
1-minute bars for each day fetched. Now each segment is appended to the load's own journal in
the series directory (``_journal/<utc time>-<pid>-<random>.journal``), synced before the next
request, and the partitions are written once at the end (the save stage), after which the journal
is removed. A crash or a cancel loses at most the segment in flight, as before:

* a journal whose writer is gone (killed, crashed, a failed save) is an *orphan*; the next load of
  the series folds it into the partitions before reading them (:func:`recover`), oldest first, so
  bars fetched since win;
* readers see journaled bars before they are folded (:func:`pending_bars`), so ``show`` and a
  backtest after a crash see what was fetched.

A writer holds ``flock`` on its journal for as long as it has it open (the kernel drops the lock
when the process dies): that is how a recovery tells an orphan from a live load. The file is made
under a hidden temp name and locked before it gets its ``.journal`` name, so a recovery never
takes a journal between its creation and its lock.

File format: the header ``CANDLEFLOW-JOURNAL 1\\n``, then one record per segment: ``SEG1``, the
payload's length and CRC-32 (little-endian uint32 each), and the payload, an Arrow IPC stream of
the segment's bars in the store's schema. A record cut short or failing its CRC at the end of an
orphan is the segment that was being written when its writer died: it is dropped with a warning.
Anything else that does not read is ``StoreCorrupted`` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from candleflow.errors import StoreCorrupted
from candleflow.models import BAR_COLUMNS, INDEX_NAME
from candleflow.store.atomic import fsync_dir, make_dirs
from candleflow.store.frames import bar_columns, empty_bars

__all__ = [
    "JOURNAL_DIR",
    "Journal",
    "JournalRead",
    "journal_files",
    "orphans",
    "pending_bars",
    "read_journal",
    "remove_journals",
]

logger = logging.getLogger(__name__)

JOURNAL_DIR = "_journal"
SUFFIX = ".journal"
HEADER = b"CANDLEFLOW-JOURNAL 1\n"
_RECORD = struct.Struct("<4sII")
_MAGIC = b"SEG1"
_COUNT = struct.Struct("<I")


def _encode(frame: pd.DataFrame) -> bytes:
    index = pd.DatetimeIndex(frame.index)
    ns = index.tz_convert("UTC").as_unit("ns").asi8.astype("<i8", copy=False)
    values = np.column_stack(bar_columns(frame)).astype("<f8", copy=False)
    payload = _COUNT.pack(len(ns)) + ns.tobytes() + np.ascontiguousarray(values).tobytes()
    return _RECORD.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes, path: Path) -> pd.DataFrame:
    if len(payload) < _COUNT.size:
        raise StoreCorrupted(str(path), "journal record too short to hold a bar count")
    (rows,) = _COUNT.unpack_from(payload)
    width = len(BAR_COLUMNS)
    if len(payload) != _COUNT.size + rows * 8 * (1 + width):
        raise StoreCorrupted(str(path), f"journal record of {rows} bars has the wrong length")
    ns = np.frombuffer(payload, dtype="<i8", count=rows, offset=_COUNT.size)
    values = np.frombuffer(payload, dtype="<f8", offset=_COUNT.size + rows * 8)
    index = pd.DatetimeIndex(ns.astype("M8[ns]"), name=INDEX_NAME).tz_localize("UTC")
    return pd.DataFrame(values.reshape(rows, width).copy(), index=index, columns=list(BAR_COLUMNS))


@dataclass(frozen=True, slots=True)
class JournalRead:
    """What a journal holds: its bars (later segments win), the segments read, and the bytes of
    a torn last record that were left out (0 when the file ends cleanly)."""

    bars: pd.DataFrame
    segments: int
    torn_bytes: int


def read_journal(path: Path, data: bytes | None = None) -> JournalRead:
    """Read the journal at ``path`` (or its bytes ``data``); see the module docstring.

    A torn last record is left out (``torn_bytes``); a wrong header or a bad record followed by
    more data raises ``StoreCorrupted``.
    """
    if data is None:
        data = path.read_bytes()
    if len(data) < len(HEADER):
        # Killed before the header was complete: a journal with nothing in it.
        if HEADER.startswith(data):
            return JournalRead(empty_bars(), 0, len(data))
        raise StoreCorrupted(str(path), "not a candleflow journal (bad header)")
    if not data.startswith(HEADER):
        raise StoreCorrupted(str(path), "not a candleflow journal (bad header)")
    frames: list[pd.DataFrame] = []
    at = len(HEADER)
    while at < len(data):
        head = data[at : at + _RECORD.size]
        if len(head) < _RECORD.size:
            break
        magic, size, crc = _RECORD.unpack(head)
        end = at + _RECORD.size + size
        if magic != _MAGIC:
            # A power cut can leave zeros where the last record was going; anything else is not
            # something this code wrote.
            if data[at:].strip(b"\x00"):
                raise StoreCorrupted(str(path), f"bad journal record at byte {at}")
            break
        payload = data[at + _RECORD.size : end]
        if len(payload) < size:
            break
        if zlib.crc32(payload) != crc:
            if end < len(data):
                raise StoreCorrupted(str(path), f"journal record at byte {at} fails its checksum")
            break
        frames.append(_decode(payload, path))
        at = end
    torn = len(data) - at
    if not frames:
        return JournalRead(empty_bars(), 0, torn)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames)
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    return JournalRead(frame, len(frames), torn)


def journal_files(series_dir: Path) -> list[Path]:
    """The series' journals, oldest first (their names start with their creation time)."""
    folder = series_dir / JOURNAL_DIR
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in names]


def pending_bars(series_dir: Path) -> pd.DataFrame | None:
    """Bars in the series' journals not folded into its partitions yet (later journals win), or
    None when there are none. A live journal's last record may be mid-write: it is left out."""
    frames: list[pd.DataFrame] = []
    for path in journal_files(series_dir):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # folded and removed since it was listed
            continue
        read = read_journal(path, data)
        if len(read.bars):
            frames.append(read.bars)
    if not frames:
        return None
    out = frames[0] if len(frames) == 1 else pd.concat(frames)
    return out[~out.index.duplicated(keep="last")].sort_index()


@contextlib.contextmanager
def orphans(series_dir: Path) -> Iterator[list[tuple[Path, JournalRead]]]:
    """The series' orphan journals, read and locked for the ``with`` body (oldest first).

    A journal another process (or another open of this one) holds is live and left out. Remove
    the files in the body once their bars are safe; the locks are released on exit.
    """
    held: list[tuple[int, Path, JournalRead]] = []
    try:
        for path in journal_files(series_dir):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Folded and removed by another recovery between our open and our lock?
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(path)
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                continue
            with open(fd, "rb", closefd=False) as fh:
                read = read_journal(path, fh.read())
            if read.torn_bytes:
                logger.warning(
                    "%s: the last %d bytes are a segment cut off when its load died; left out",
                    path,
                    read.torn_bytes,
                )
            held.append((fd, path, read))
        yield [(path, read) for _, path, read in held]
    finally:
        for fd, _, _ in held:
            os.close(fd)


def remove_journals(paths: list[Path]) -> None:
    """Remove folded journals (their bars are in the partitions now) and sync the directory."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if paths:
        fsync_dir(paths[0].parent)


class Journal:
    """One load's journal of fetched segments for one series (see the module docstring).

    The file is created at the first :meth:`append`. :meth:`discard` removes it once its bars are
    in the partitions; :meth:`close` keeps it (for the next load to fold) — a failed save, a
    crash.
    """

    def __init__(
        self,
        series_dir: Path,
        *,
        refusals: Callable[[Path], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.series_dir = series_dir
        self._refusals = refusals or (lambda _: contextlib.nullcontext())
        self.path: Path | None = None
        self.segments = 0
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"Journal({str(self.path or self.series_dir / JOURNAL_DIR)!r})"

    def _open(self) -> int:
        folder = self.series_dir / JOURNAL_DIR
        with self._refusals(folder):
            return self._create(folder)

    def _create(self, folder: Path) -> int:
        make_dirs(folder)
        stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        tmp = folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, HEADER)
            os.replace(tmp, folder / name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.fsync(fd)
        fsync_dir(folder)
        self.path = folder / name
        return fd

    def append(self, bars: pd.DataFrame) -> None:
        """Append one segment's bars (a canonical bar frame) and sync it before returning."""
        if not len(bars):
            return
        record = _encode(bars)
        fd = self._fd if self._fd is not None else self._open()
        self._fd = fd
        with self._refusals(self.path or self.series_dir):
            written = os.write(fd, record)
            if written != len(record):  # a full disk: the record is torn, the journal unusable
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")
            os.fdatasync(fd)
        self.segments += 1

    def close(self) -> None:
        """Release the journal, keeping its file for the next load to fold."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Remove the journal: its bars are in the partitions."""
        if self.path is not None and self._fd is not None:
            remove_journals([self.path])
        self.close()
