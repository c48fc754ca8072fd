"""The ledger: an append-only, checksummed file of accepted records, plus state snapshots.

File layout: the 16-byte magic ``ONEBYTE-LEDGER1\\n``, then entries of
``length u32 | crc32 u32 | record bytes``. Each round's records are written, flushed and fsynced
together. A *torn tail* (the last entry cut short or failing its checksum, as a crash mid-write
leaves it) is truncated with a warning when the ledger is opened for writing; damage anywhere
else is an error, never silently dropped.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from .errors import LedgerError, ProtocolError
from .record import MAX_RECORD_SIZE, Record, SetDigest, decode_record

__all__ = ["LEDGER_MAGIC", "LEDGER_NAME", "read_ledger", "verify_ledger", "LedgerWriter", "save_snapshot",
           "load_snapshot"]

log = logging.getLogger(__name__)

LEDGER_MAGIC = b"ONEBYTE-LEDGER1\n"
#: The ledger's file name inside a run or peer directory.
LEDGER_NAME = "ledger.obl"
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
    """Appends records to a ledger, creating it (or repairing a torn tail) on open."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            self.existing = read_ledger(self.path, repair=True)
        else:
            self.existing = []
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as fh:
                fh.write(LEDGER_MAGIC)
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.path, "ab")

    def append(self, records: Iterable[Record | bytes]) -> None:
        """Write a batch (one round) and make it durable before returning."""
        chunks = []
        for rec in records:
            raw = rec.to_bytes() if isinstance(rec, Record) else bytes(rec)
            chunks.append(_ENTRY.pack(len(raw), zlib.crc32(raw)) + raw)
        if chunks:
            self._fh.write(b"".join(chunks))
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_snapshot(path: Path | str, state, digest: SetDigest, round_: int, extra: dict[str, str] | None = None) -> None:
    """Write the accumulators with (set digest, state hash, round) atomically (safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    meta = {"state_hash": state.state_hash(), "set_digest": digest.hex(),
            "records": str(digest.count), "round": str(round_), **(extra or {})}
    save_file({k: v.contiguous() for k, v in state.tensors().items()}, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_snapshot(path: Path | str, state) -> dict[str, str]:
    """Load a snapshot into ``state``; its state hash must match what it claims."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several unrelated types on bad files
        raise LedgerError(f"{path}: unreadable snapshot: {exc}") from None
    if set(tensors) != set(state.names):
        raise LedgerError(f"{path}: snapshot holds other tensors than this run tunes")
    try:
        state.load_tensors(tensors)
    except ValueError as exc:
        raise LedgerError(f"{path}: {exc}") from None
    if state.state_hash() != meta.get("state_hash"):
        raise LedgerError(f"{path}: snapshot contents do not match its state hash")
    return meta
