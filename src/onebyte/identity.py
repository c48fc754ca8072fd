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

A *signed revocation* (``Revocation``, 103 bytes) does the same without a new run file: signed by
the revoked key itself or by a key listed with ``admin = true``, it travels through the swarm
(``REVK``), is kept in each run directory's ``revocations.txt`` and makes every replica withdraw
the key's records from its round on (``Replica.withdraw``: undone exactly). A key's ``until`` is
the earliest of its run file's and its revocation's. Whether a revocation is valid depends on
the run file alone, and per key only the *winning* one is kept and passed on (the earliest
round, ties broken by the smaller bytes): what is in force is a function of the set of
revocations a replica has seen, whatever their order, and holds at most one per listed key.

Key files are PEM (PKCS#8, unencrypted) as ``cryptography`` and OpenSSL write them, created
with mode 0600, never overwritten. Public keys are written as 64 hex digits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import auth
from .auth import SIGNATURE_SIZE, Authored
from .errors import ConfigError, ProtocolError, storage_error

if TYPE_CHECKING:
    from .config import ListedKey, RunSpec

__all__ = ["SiteKey", "Roster", "Revocation", "peer_id_of", "PUBLIC_SIZE", "SIGNATURE_SIZE", "REVOCATION_SIZE",
           "read_revocations", "append_revocation"]

log = logging.getLogger(__name__)

PUBLIC_SIZE = 32
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
    admin: bool


#: magic "RV" | version u8 | run tag 16B | revoked peer id u64 | from round u32 | signer peer id u64,
#: then the signer's Ed25519 signature over those 39 bytes.
_REVOCATION = struct.Struct("<2sB16sQIQ")
REVOCATION_SIZE = _REVOCATION.size + SIGNATURE_SIZE


@dataclass(frozen=True)
class Revocation:
    """A signed statement: ``revoked``'s records of rounds >= ``from_round`` stop counting.

    Signed by the revoked key itself (a site retiring its key, or reporting it stolen) or by a key
    the run file lists with ``admin = true``. Whether one counts depends on the run file alone, not
    on other revocations, so a replica's set of revocations in force is a function of the set it
    holds, whatever the order they arrived in (two admins revoking each other both count). 103
    bytes; bound to the run tag, so it cannot be replayed into another run."""

    run_tag: bytes
    revoked: int
    from_round: int
    signer: int
    signature: bytes = b""

    def body(self) -> bytes:
        return _REVOCATION.pack(b"RV", 1, self.run_tag, self.revoked, self.from_round, self.signer)

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    @property
    def rank(self) -> tuple[int, bytes]:
        """Of two revocations of one key, the lower rank wins: the earlier round, then the bytes."""
        return self.from_round, self.to_bytes()

    @staticmethod
    def claimed_signer(data: bytes) -> int:
        """The signer a (possibly invalid) revocation claims, for logging only (-1 if too short)."""
        if len(data) < _REVOCATION.size:
            return -1
        return int.from_bytes(data[_REVOCATION.size - 8:_REVOCATION.size], "little")

    @classmethod
    def sign(cls, key: SiteKey, run_tag: bytes, revoked: int, from_round: int) -> Revocation:
        if not 0 <= from_round < 1 << 32:
            raise ConfigError(f"a revocation's round must be in 0..2^32-1, not {from_round}")
        unsigned = cls(run_tag, revoked, from_round, key.peer_id)
        return cls(run_tag, revoked, from_round, key.peer_id, key.sign(unsigned.body()))

    @classmethod
    def decode(cls, data: bytes, run_tag: bytes) -> Revocation:
        """Parse (not yet verify: ``Roster.check_revocation``) one revocation; ``ProtocolError`` if malformed."""
        if len(data) != REVOCATION_SIZE:
            raise ProtocolError(f"a revocation is {REVOCATION_SIZE} bytes, not {len(data)}")
        magic, version, tag, revoked, from_round, signer = _REVOCATION.unpack_from(data)
        if magic != b"RV" or version != 1:
            raise ProtocolError("not a onebyte revocation")
        if tag != run_tag:
            raise ProtocolError("revocation for another run (run tag mismatch)")
        return cls(tag, revoked, from_round, signer, bytes(data[_REVOCATION.size:]))


class Roster:
    """The keys a run lets publish, by the peer id each implies (built from the run file's keys).

    ``verify`` authenticates a record (listed key, good signature), ``counts`` says whether an
    authentic record counts (its round is before its key's ``until``), ``check`` does both. A key's
    ``until`` is the earliest of its run file's and of every signed revocation ``revoke`` took."""

    def __init__(self, keys: Iterable[ListedKey]):
        self._by_id: dict[int, _Entry] = {}
        self._winners: dict[int, Revocation] = {}  # peer id -> its winning signed revocation
        self._lock = threading.RLock()
        for k in keys:
            pid = peer_id_of(k.public)
            if pid in self._by_id:
                raise ConfigError.of("keys", f"keys {self._by_id[pid].name!r} and {k.name!r} imply one peer id")
            try:
                public = Ed25519PublicKey.from_public_bytes(k.public)
            except ValueError as exc:
                raise ConfigError.of("keys", f"key {k.name!r} is not an Ed25519 public key: {exc}") from None
            self._by_id[pid] = _Entry(k.name, public, k.until, k.admin)

    @classmethod
    def of(cls, spec: RunSpec, run_tag: bytes | None = None, revocations: Path | None = None) -> Roster | None:
        """The roster of a run spec, or None when it lists no keys (the swarm secret's HMAC mode);
        with the signed revocations a run directory's ``revocations`` file holds in force (one that
        does not check out is skipped with a warning)."""
        if not spec.keys:
            return None
        roster = cls(spec.keys)
        if revocations is not None and run_tag is not None:
            for rev in read_revocations(revocations, run_tag):
                try:
                    roster.revoke(rev)
                except ProtocolError as exc:
                    log.warning("%s: a revocation is skipped: %s", revocations, exc)
        return roster

    def find(self, site: str) -> int:
        """The peer id of a listed key, named by its ``name`` or its 64 hex digits (``ConfigError`` if none)."""
        for pid, entry in self._by_id.items():
            if site == entry.name:
                return pid
        try:
            public = bytes.fromhex(site)
        except ValueError:
            public = b""
        if len(public) == PUBLIC_SIZE and peer_id_of(public) in self._by_id:
            return peer_id_of(public)
        raise ConfigError(f"no key named {site!r} in the run file's [[keys]] "
                          f"(listed: {', '.join(e.name for e in self._by_id.values())})")

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, peer_id: int) -> bool:
        return peer_id in self._by_id

    def counting(self, round_: int) -> set[int]:
        """The peer ids whose records of ``round_`` count (listed, not revoked by then)."""
        return {pid for pid in self._by_id if (until := self.until(pid)) is None or round_ < until}

    def name(self, peer_id: int) -> str | None:
        entry = self._by_id.get(peer_id)
        return entry.name if entry is not None else None

    def until(self, peer_id: int) -> int | None:
        entry = self._by_id.get(peer_id)
        if entry is None:
            return None
        won = self._winners.get(peer_id)
        if won is None or (entry.until is not None and entry.until <= won.from_round):
            return entry.until
        return won.from_round

    def check_revocation(self, rev: Revocation) -> None:
        """A revocation counts: it names a listed key, and that key or an admin key signed it;
        else ``ProtocolError``."""
        if rev.revoked not in self._by_id:
            raise ProtocolError("revocation of a key the run file does not list")
        signer = self._by_id.get(rev.signer)
        if signer is None or not (signer.admin or rev.signer == rev.revoked):
            raise ProtocolError("revocation signed by neither the revoked key nor an admin key of the run file")
        self.verify_signed(rev.signer, rev.body(), rev.signature, "revocation")

    @property
    def revocations(self) -> list[Revocation]:
        """The winning revocation of each key that has one (sorted by bytes)."""
        with self._lock:
            return sorted(self._winners.values(), key=Revocation.to_bytes)

    def wins(self, rev: Revocation) -> bool:
        """Whether ``rev`` would replace its key's winning revocation (cheap: no signature check)."""
        with self._lock:
            old = self._winners.get(rev.revoked)
        return old is None or rev.rank < old.rank

    def revoke(self, rev: Revocation) -> bool:
        """Check a revocation and put it in force if it wins for its key; False if it does not
        (its key already has an earlier one, or this one)."""
        self.check_revocation(rev)
        return self.install(rev)

    def install(self, rev: Revocation) -> bool:
        """``revoke`` for a revocation already checked (no second signature check)."""
        with self._lock:
            if not self.wins(rev):
                return False
            self._winners[rev.revoked] = rev
            return True

    def sign_revocation(self, key: SiteKey, run_tag: bytes, site: str, from_round: int) -> Revocation:
        """A checked revocation of ``site`` (a listed name or public key) signed with ``key``;
        ``ConfigError`` if this run would not count it (not an admin key, not listed, ...)."""
        rev = Revocation.sign(key, run_tag, self.find(site), from_round)
        try:
            self.check_revocation(rev)
        except ProtocolError as exc:
            raise ConfigError(f"cannot revoke {site!r}: {exc}") from None
        return rev

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

    def verify(self, record: Authored) -> None:
        """A signed record's author is listed and its signature is good (``ProtocolError`` if not)."""
        auth.check("record", record.version, record.peer_id, record.body(), record.tag, roster=self)

    def counts(self, record: Authored) -> bool:
        """Whether a record counts here: signed, its key listed, its round before the key's ``until``.
        Cheap (no signature check): the filter applied to records already verified once (a ledger)."""
        if not record.is_signed or record.peer_id not in self._by_id:
            return False
        until = self.until(record.peer_id)
        return until is None or record.round < until

    def check(self, record: Authored) -> None:
        """``verify``, then refuse a record of a round at or past its key's ``until`` (revoked)."""
        self.verify(record)
        if not self.counts(record):
            raise ProtocolError(self.revoked_reason(record))

    def revoked_reason(self, record: Authored) -> str:
        entry = self._by_id[record.peer_id]
        return f"key {entry.name!r} is revoked from round {self.until(record.peer_id)}"


def read_revocations(path: Path, run_tag: bytes) -> list[Revocation]:
    """The revocations a run directory's ``revocations.txt`` holds (one per line, hex), parsed but
    not yet checked against a roster. A line that does not parse (a torn last write) is skipped
    with a warning: the swarm still holds every revocation that was ever passed on."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Revocation.decode(bytes.fromhex(line.strip()), run_tag))
        except (ValueError, ProtocolError) as exc:
            log.warning("%s:%d: not a revocation of this run, skipped (%s)", path, i, exc)
    return out


def append_revocation(path: Path, rev: Revocation) -> None:
    """Append one revocation as a line and make it durable before returning (``StorageError``
    if the disk refuses). A torn earlier line is closed first, so it spoils only itself."""
    line = rev.to_bytes().hex() + "\n"
    created = not path.exists()
    try:
        with open(path, "a+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end:
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write(line.encode("ascii"))
            fh.flush()
            os.fsync(fh.fileno())
        if created:  # the new file's name is durable too
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise storage_error(exc, str(path)) from None


def check_site_key(roster: Roster | None, key: SiteKey | None, peer_id: int | None, warn: bool = True) -> None:
    """A peer of a run that lists keys needs a listed key, and its id is that key's; a key given
    to a run that lists none would sign records nobody accepts. Each mistake is one ``ConfigError``."""
    if roster is None:
        if key is not None:
            raise ConfigError.of("key", "the run file lists no site keys ([[keys]]): add this site's public key "
                                 f"({key.public_hex}) to it, or run without a key")
        return
    if key is None:
        raise ConfigError.of("key", "the run file lists site keys: give this peer its site's key file "
                             "(onebyte keygen writes one)")
    if key.peer_id not in roster:
        raise ConfigError.of("key", f"this site's key ({key.public_hex}) is not listed in the run file's [[keys]]")
    if peer_id is not None and peer_id != key.peer_id:
        raise ConfigError.of("peer_id", f"a peer's id comes from its key ({key.peer_id:x}) when the run lists "
                             f"keys; {peer_id:x} is not it")
    until = roster.until(key.peer_id)
    if until is not None and warn:
        log.warning("this site's key %r is revoked from round %d: its records of later rounds do not count",
                    roster.name(key.peer_id), until)
