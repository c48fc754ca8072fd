"""The ledger: an append-only, checksummed file of accepted records, plus state snapshots.

File layout: the 16-byte magic ``ONEBYTE-LEDGER1\\n``, then entries of
``length u32 | crc32 u32 | record bytes``. Each round's records are written, flushed and fsynced
together. A *torn tail* (the last entry cut short or failing its checksum, as a crash mid-write
leaves it) is truncated with a warning when the ledger is opened for writing; damage anywhere
else is an error, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LedgerError, ProtocolError, storage_error
from .record import MAX_RECORD_SIZE, Record, SetDigest, decode_record
from .rundir import LEDGER

if TYPE_CHECKING:
    from .state import FixedPointState

__all__ = ["LEDGER_MAGIC", "LEDGER_NAME", "read_ledger", "verify_ledger", "LedgerWriter", "save_snapshot",
           "load_snapshot", "snapshot_bytes", "read_snapshot", "write_atomic"]

log = logging.getLogger(__name__)

LEDGER_MAGIC = b"ONEBYTE-LEDGER1\n"
#: The ledger's file name inside a run or peer directory (``rundir.LEDGER``).
LEDGER_NAME = LEDGER
#: The largest safetensors header a snapshot may claim (names and shapes of the tuned tensors).
MAX_SNAPSHOT_HEADER = 64 << 20
_ENTRY = struct.Struct("<II")


def _scan(data: bytes) -> tuple[list[bytes], int, str | None]:
    """(entries, end of the valid prefix, reason the rest is invalid or None)."""
    if not data.startswith(LEDGER_MAGIC):
        raise LedgerError("not a onebyte ledger (bad magic)")
    entries: list[bytes] = []
    pos = len(LEDGER_MAGIC)
    while pos < len(data):
        if len(data) - pos < _ENTRY.size:
            return entries, pos, f"torn entry header at byte {pos}"
        length, crc = _ENTRY.unpack_from(data, pos)
        if length == 0 or length > MAX_RECORD_SIZE:
            reason = f"entry at byte {pos} claims an impossible length {length}"
            if pos + _ENTRY.size + length >= len(data) or length > MAX_RECORD_SIZE:
                return entries, pos, reason
            raise LedgerError(reason)
        end = pos + _ENTRY.size + length
        if end > len(data):
            return entries, pos, f"torn entry at byte {pos} ({len(data) - pos} of {end - pos} bytes)"
        body = data[pos + _ENTRY.size:end]
        if zlib.crc32(body) != crc:
            if end == len(data):
                return entries, pos, f"last entry at byte {pos} fails its checksum"
            raise LedgerError(f"entry {len(entries)} at byte {pos} fails its checksum")
        entries.append(body)
        pos = end
    return entries, pos, None


def read_ledger(path: Path | str, *, repair: bool = False) -> list[bytes]:
    """The raw records of a ledger. A torn tail raises, or with ``repair`` is truncated."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"{path}: no such ledger") from None
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read ledger: {exc.strerror}") from None
    try:
        entries, end, reason = _scan(data)
    except LedgerError as exc:
        raise LedgerError(f"{path}: {exc}") from None
    if reason is not None:
        if not repair:
            raise LedgerError(f"{path}: {reason}")
        log.warning("%s: %s; truncating the torn tail (%d bytes) to the last valid entry",
                    path, reason, len(data) - end)
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    return entries


def verify_ledger(path: Path | str, *, run_tag: bytes | None = None, secret: bytes | None = None) -> int:
    """Check every entry and record of a ledger; return the record count or raise LedgerError."""
    seen: set[bytes] = set()
    entries = read_ledger(path)
    for i, raw in enumerate(entries):
        try:
            rec = decode_record(raw, run_tag=run_tag, secret=secret)
        except ProtocolError as exc:
            raise LedgerError(f"{path}: entry {i}: {exc}") from None
        if rec.record_id in seen:
            raise LedgerError(f"{path}: entry {i} repeats an earlier record")
        seen.add(rec.record_id)
    return len(entries)


class LedgerWriter:
    """Appends records to a ledger, creating it (or repairing a torn tail) on open.

    A write the disk refuses (full, read-only) raises ``StorageError`` after cutting the file back
    to its last complete batch: the ledger stays a valid prefix and nothing acknowledged is lost."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                self.existing = read_ledger(self.path, repair=True)
            else:
                self.existing = []
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, LEDGER_MAGIC)  # never a half-written magic
            self._fh = open(self.path, "ab", buffering=0)
            self._end = self._fh.seek(0, os.SEEK_END)
        except OSError as exc:
            raise storage_error(exc, str(self.path)) from None

    def append(self, records: Iterable[Record | bytes]) -> None:
        """Write a batch (one round) and make it durable before returning."""
        chunks = []
        for rec in records:
            raw = rec.to_bytes() if isinstance(rec, Record) else bytes(rec)
            chunks.append(_ENTRY.pack(len(raw), zlib.crc32(raw)) + raw)
        if not chunks:
            return
        data = memoryview(b"".join(chunks))
        try:
            done = 0
            while done < len(data):
                done += self._fh.write(data[done:])
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self._cut_back()
            raise storage_error(exc, str(self.path)) from None
        self._end += len(data)

    def _cut_back(self) -> None:
        """Drop a partly written batch (truncating frees space, so it works on a full disk)."""
        try:
            os.ftruncate(self._fh.fileno(), self._end)
            os.fsync(self._fh.fileno())
        except OSError as exc:  # the next open repairs a torn tail all the same
            log.warning("%s: could not cut back a partial write: %s", self.path, exc.strerror)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot_bytes(state: FixedPointState, meta: dict[str, str]) -> bytes:
    """The accumulators and ``meta`` (state hash, set digest, …) as safetensors bytes."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.tensors().items()}, metadata=meta)


def read_snapshot(data: bytes, state: FixedPointState, where: str = "snapshot") -> dict[str, str]:
    """Load snapshot bytes into ``state``; its contents must match the state hash it claims.

    On any failure the state is left at what it held before and ``LedgerError`` is raised."""
    from safetensors.torch import load

    if len(data) < 8:
        raise LedgerError(f"{where}: too short to be a snapshot")
    n, = struct.unpack_from("<Q", data)
    if n > MAX_SNAPSHOT_HEADER or 8 + n > len(data):
        raise LedgerError(f"{where}: impossible header length {n}")
    try:
        header = json.loads(data[8:8 + n])
        meta = dict(header.get("__metadata__") or {})
        tensors = load(bytes(data))
    except Exception as exc:  # safetensors raises several unrelated types on bad bytes
        raise LedgerError(f"{where}: unreadable snapshot: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if set(tensors) != set(state.names):
        raise LedgerError(f"{where}: snapshot holds other tensors than this run tunes")
    before = {k: v.clone() for k, v in state.tensors().items()}
    try:
        state.load_tensors(tensors)
    except ValueError as exc:
        state.load_tensors(before)
        raise LedgerError(f"{where}: {exc}") from None
    if state.state_hash() != meta.get("state_hash"):
        state.load_tensors(before)
        raise LedgerError(f"{where}: snapshot contents do not match its state hash")
    return meta


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename; ``StorageError`` if
    the disk refuses (the old file, if any, is left as it was)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, str(path)) from None


def save_snapshot(path: Path | str, state: FixedPointState, digest: SetDigest, round_: int,
                  extra: dict[str, str] | None = None) -> None:
    """Write the accumulators with (set digest, state hash, round) atomically (safetensors)."""
    meta = {"state_hash": state.state_hash(), "set_digest": digest.hex(),
            "records": str(digest.count), "round": str(round_), **(extra or {})}
    write_atomic(Path(path), snapshot_bytes(state, meta))


def load_snapshot(path: Path | str, state: FixedPointState) -> dict[str, str]:
    """Load a snapshot file into ``state``; its contents must match the state hash it claims."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read snapshot: {exc.strerror}") from None
    return read_snapshot(data, state, str(path))
