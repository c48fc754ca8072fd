"""Site identities: each site's Ed25519 signing key, and the roster of keys a run lets publish.

A run that lists site keys in its run file (``[[keys]]``, see ``config.ListedKey``) is in
*identity mode*: every record and heartbeat is signed by its author's key (64 bytes, in place of
the swarm secret's 16-byte HMAC tag), and a peer's id is not chosen but derived from its public
key (``peer_id_of``). So one key is one peer: whoever holds one key cannot publish as two peers,
and whoever holds only the swarm secret cannot publish at all.

A listed key may carry ``until = R``: its records of rounds >= R do not count, on every replica
alike (the intake refuses them, and a replica restarted with the new run file drops those its
ledger already holds; see ``Replica``'s ``counts``). A key removed from the list counts for
nothing, from round 0. The key list is *not* part of the run tag: sites join and are revoked
mid-run without forking the run. The price is that the roster is only as current as each site's
run file: a replica with an older roster refuses a newer site's records (as unlisted) and still
counts a revoked key's, so every site must install the updated run file (and restart its peer)
for the record sets, and so the states, to agree again.

Key files are PEM (PKCS#8, unencrypted) as ``cryptography`` and OpenSSL write them, created
with mode 0600, never overwritten. Public keys are written as 64 hex digits.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigError, ProtocolError

if TYPE_CHECKING:
    from .config import ListedKey, RunSpec
    from .record import Record

__all__ = ["SiteKey", "Roster", "peer_id_of", "PUBLIC_SIZE", "SIGNATURE_SIZE"]

log = logging.getLogger(__name__)

PUBLIC_SIZE = 32
SIGNATURE_SIZE = 64
#: Domain prefix of the peer-id hash: the id names the key for this purpose only.
_ID_DOMAIN = b"onebyte/peer-id/v1\0"
#: Key files are a few hundred bytes; a larger file is not a key.
_MAX_KEY_FILE = 4096


def peer_id_of(public: bytes) -> int:
    """The peer id a public key implies: SHA-256(domain ‖ key), first 8 bytes, little-endian."""
    return int.from_bytes(hashlib.sha256(_ID_DOMAIN + public).digest()[:8], "little")


class SiteKey:
    """A site's Ed25519 signing key: ``sign`` bytes, ``public`` (32 bytes), ``peer_id``."""

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.peer_id = peer_id_of(self.public)

    @classmethod
    def generate(cls) -> SiteKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_hex(self) -> str:
        return self.public.hex()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def save(self, path: Path | str) -> None:
        """Write the key to a new file, readable by its owner only; an existing file is an error."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"{path} exists: a key file is never overwritten (choose another path)") from None
        except OSError as exc:
            raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.pem())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise ConfigError(f"cannot write key file {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: Path | str) -> SiteKey:
        """Read a key file ``save`` (or ``onebyte keygen``) wrote; any problem is one ``ConfigError``."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(_MAX_KEY_FILE + 1)
                mode = os.fstat(fh.fileno()).st_mode
        except FileNotFoundError:
            raise ConfigError(f"key file {path} not found (onebyte keygen {path} writes one)") from None
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
        if len(data) > _MAX_KEY_FILE:
            raise ConfigError(f"key file {path} is not a onebyte site key (over {_MAX_KEY_FILE} bytes)")
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"key file {path} is not a site key (expected an unencrypted PEM Ed25519 key, "
                              "as onebyte keygen writes)") from None
        except Exception as exc:  # the backend's own errors (unsupported algorithm and the like)
            raise ConfigError(f"key file {path} cannot be read as a key: {exc}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"key file {path} is not an Ed25519 key (it holds a {type(private).__name__})")
        if mode & 0o077:
            log.warning("key file %s can be read by other users; chmod 600 it", path)
        return cls(private)


@dataclass(frozen=True)
class _Entry:
    name: str
    public: Ed25519PublicKey
    until: int | None


class Roster:
    """The keys a run lets publish, by the peer id each implies (built from the run file's keys).

    ``verify`` authenticates a record (listed key, good signature), ``counts`` says whether an
    authentic record counts (its round is before its key's ``until``), ``check`` does both."""

    def __init__(self, keys: Iterable[ListedKey]):
        self._by_id: dict[int, _Entry] = {}
        for k in keys:
            pid = peer_id_of(k.public)
            if pid in self._by_id:
                raise ConfigError.of("keys", f"keys {self._by_id[pid].name!r} and {k.name!r} imply one peer id")
            try:
                public = Ed25519PublicKey.from_public_bytes(k.public)
            except ValueError as exc:
                raise ConfigError.of("keys", f"key {k.name!r} is not an Ed25519 public key: {exc}") from None
            self._by_id[pid] = _Entry(k.name, public, k.until)

    @classmethod
    def of(cls, spec: RunSpec) -> Roster | None:
        """The roster of a run spec, or None when it lists no keys (the swarm secret's HMAC mode)."""
        return cls(spec.keys) if spec.keys else None

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, peer_id: int) -> bool:
        return peer_id in self._by_id

    def name(self, peer_id: int) -> str | None:
        entry = self._by_id.get(peer_id)
        return entry.name if entry is not None else None

    def until(self, peer_id: int) -> int | None:
        entry = self._by_id.get(peer_id)
        return entry.until if entry is not None else None

    def verify_signed(self, peer_id: int, signed: bytes, signature: bytes, what: str = "record") -> None:
        """``signature`` must be ``peer_id``'s listed key's over ``signed``; else ``ProtocolError``."""
        entry = self._by_id.get(peer_id)
        if entry is None:
            raise ProtocolError(f"{what} is signed by an unlisted key "
                                "(no key in the run file's [[keys]] implies its peer id)")
        try:
            entry.public.verify(signature, signed)
        except InvalidSignature:
            raise ProtocolError(f"{what} signature does not verify under the key of {entry.name!r}") from None

    def verify(self, record: Record) -> None:
        """A signed record's author is listed and its signature is good (``ProtocolError`` if not)."""
        if not record.is_signed:
            raise ProtocolError("record is not signed by a site key (this run lists site keys)")
        self.verify_signed(record.peer_id, record.body(), record.tag)

    def counts(self, record: Record) -> bool:
        """Whether a record counts here: signed, its key listed, its round before the key's ``until``.
        Cheap (no signature check): the filter applied to records already verified once (a ledger)."""
        entry = self._by_id.get(record.peer_id)
        return (record.is_signed and entry is not None
                and (entry.until is None or record.round < entry.until))

    def check(self, record: Record) -> None:
        """``verify``, then refuse a record of a round at or past its key's ``until`` (revoked)."""
        self.verify(record)
        if not self.counts(record):
            raise ProtocolError(self.revoked_reason(record))

    def revoked_reason(self, record: Record) -> str:
        entry = self._by_id[record.peer_id]
        return f"key {entry.name!r} is revoked from round {entry.until}"
