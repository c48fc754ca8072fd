"""Authentication trailers: how a record or a heartbeat proves who wrote it.

Every message a peer publishes about the run ends in a trailer over everything before it (its
*body*), and the message's version byte says which kind:

* version 1 (the swarm secret's mode): ``HMAC-SHA256(secret, body)[:16]``, 16 bytes;
* version 2 (identity mode: the run file lists site keys, see ``identity``): the author's
  Ed25519 signature over the body, 64 bytes, checked against the key its peer id derives from.

``seal`` writes a trailer and ``check`` refuses a wrong one, for records (``record``) and
heartbeats (``membership``) alike, so both speak one format and refuse with one set of errors.
Which keys are listed (and revoked) is the roster's (``identity.Roster``); this module only
needs its ``verify_signed``, and a key's ``sign``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from .errors import ProtocolError

__all__ = ["HMAC_VERSION", "SIGNED_VERSION", "TAG_SIZE", "SIGNATURE_SIZE", "TRAILER_SIZE", "seal", "check",
           "hmac_tag", "Authored", "Signer", "Verifier"]

HMAC_VERSION = 1  # tagged under the swarm secret
SIGNED_VERSION = 2  # signed by the author's site key (Ed25519)
TAG_SIZE = 16
SIGNATURE_SIZE = 64  # an Ed25519 signature
#: version -> the size of its trailer
TRAILER_SIZE = {HMAC_VERSION: TAG_SIZE, SIGNED_VERSION: SIGNATURE_SIZE}


class Authored(Protocol):
    """A sealed message as a roster reads it (``record.Record``): its author, round and trailer."""

    @property
    def peer_id(self) -> int: ...
    @property
    def round(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def tag(self) -> bytes: ...
    @property
    def is_signed(self) -> bool: ...
    def body(self) -> bytes: ...


class Signer(Protocol):
    """A site key (``identity.SiteKey``)."""

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    """A roster of site keys (``identity.Roster``)."""

    def verify_signed(self, peer_id: int, signed: bytes, signature: bytes, what: str = "record") -> None: ...


def hmac_tag(secret: bytes, body: bytes) -> bytes:
    """The version-1 trailer: HMAC-SHA256 under the swarm secret, first 16 bytes."""
    return hmac.new(secret, body, hashlib.sha256).digest()[:TAG_SIZE]


def version(key: Signer | None) -> int:
    """The version a message sealed with ``key`` (or, with None, under the secret) carries."""
    return HMAC_VERSION if key is None else SIGNED_VERSION


def seal(body: bytes, secret: bytes = b"", key: Signer | None = None) -> bytes:
    """The trailer of ``body``: signed by ``key`` (version 2), else HMAC-tagged under ``secret``
    (version 1). The body must already carry ``version(key)``."""
    return hmac_tag(secret, body) if key is None else key.sign(body)


def check(what: str, version_: int, peer_id: int, body: bytes, trailer: bytes, *,
          secret: bytes | None = None, roster: Verifier | None = None) -> None:
    """Refuse a ``what`` ("record", "heartbeat") whose trailer does not prove its author
    (``ProtocolError``):

    * ``roster`` (identity mode): it must be signed (version 2) by ``peer_id``'s listed key;
    * else ``secret``: it must be HMAC-tagged (version 1) under it;
    * neither: nothing to check (a local ledger, already checked when it was accepted)."""
    if roster is not None:
        if version_ != SIGNED_VERSION:
            raise ProtocolError(f"{what} is not signed by a site key (this run lists site keys)")
        roster.verify_signed(peer_id, body, trailer, what)
    elif secret is not None:
        if version_ != HMAC_VERSION:
            raise ProtocolError(f"{what} is signed by a site key, but this run lists no keys (the run file's "
                                "[[keys]] is empty here)")
        if not hmac.compare_digest(trailer, hmac_tag(secret, body)):
            raise ProtocolError(f"{what} authentication failed (wrong or missing swarm secret)")
