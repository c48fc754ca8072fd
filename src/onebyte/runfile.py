"""The run file every site shares, as text: its head and per-setting comments (from the settings'
own documentation), its site keys (``[[keys]]``: ``ListedKey``), and how two sites' copies differ
(``differing_fields``, ``differing_keys``: what a peer names when it refuses another's run).

``RunSpec`` (``config``) reads and writes a run file with these; ``onebyte.config`` exports them.
"""

from __future__ import annotations

import reprlib
import textwrap
from dataclasses import dataclass
from typing import Any

from .settings import plain, settings, toml_value

__all__ = ["KEYS_TEMPLATE", "MAX_DIFFERENCES", "RUN_FILE_HEAD", "ListedKey", "differing_fields", "differing_keys",
           "keys_toml", "parse_keys", "setting_lines"]


RUN_FILE_HEAD = """\
# onebyte run file: every site of a run uses the same file (copy it to each site).
# Settings marked [math] change what a record means: every peer must agree on them, or its
# records are rejected as another run's (the log names the differing settings).
# Command-line flags override what is written here.
"""


def setting_lines(obj: Any) -> list[str]:
    """The run file's lines for ``obj``'s settings: each one's documentation as a comment, then
    its value (an unset optional one commented out, with its example), then a blank line."""
    lines = []
    for s in settings(type(obj)):
        text = ("[math] " if s.math else "") + s.help
        lines += textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ", break_long_words=False,
                               break_on_hyphens=False)
        value = getattr(obj, s.name)
        lines.append(f"# {s.name} = {toml_value(s.example)}" if value is None
                     else f"{s.name} = {toml_value(plain(value))}")
        lines.append("")
    return lines


KEYS_TEMPLATE = """
# Site keys. Listed: every record and heartbeat must be signed by its site's key (onebyte keygen
# KEY writes one and prints its lines; onebyte peer --key KEY signs with it), and a peer's id is
# derived from its key; unlisted: peers share the swarm secret (--secret-file). until = R revokes
# a key: its records of rounds >= R stop counting, on every replica alike. Not part of the run
# tag: keys are added or revoked mid-run by updating this file at every site (and restarting
# its peer); until then a site with the old file refuses the new keys and counts revoked ones.
# admin = true lets a key sign revocations of others (onebyte revoke SITE --from R --key KEY
# --run DIR): they reach every peer without a new file or a restart.
"""


@dataclass(frozen=True)
class ListedKey:
    """A site's public key as the run file lists it (``[[keys]]``): ``name`` for people,
    ``public`` the 32-byte Ed25519 public key (written as 64 hex digits), and ``until``: None, or
    the round from which the key's records stop counting (revoked); ``admin``: the key may sign
    revocations of other keys (``identity.Revocation``; any key may revoke itself). The peer id is
    derived from the key (``identity.peer_id_of``), so it is not written down."""

    name: str
    public: bytes
    until: int | None = None
    admin: bool = False

    FIELDS = ("name", "public", "until", "admin")

    @classmethod
    def parse(cls, d: Any, where: str) -> tuple[ListedKey | None, list[tuple[str, str]]]:
        """A key from its run-file table, or None and the problems (fields named ``where.field``)."""
        if not isinstance(d, dict):
            return None, [(where, 'must be a table: name = "...", public = "<64 hex digits>", until = ROUND')]
        problems = [(f"{where}.{k}", "is not a setting of a key (known: name, public, until, admin)")
                    for k in d if k not in cls.FIELDS]
        name, public, until, admin = d.get("name"), d.get("public"), d.get("until"), d.get("admin", False)
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            problems.append((f"{where}.name", f"must be a name of 1..200 characters, not {name!r}"))
        raw = None
        if isinstance(public, str) and len(public) == 64:
            try:
                raw = bytes.fromhex(public)
            except ValueError:
                pass
        if raw is None:
            problems.append((f"{where}.public", f"must be the key's 64 hex digits (onebyte keygen prints them), "
                             f"not {public!r}"))
        if until is not None and not (isinstance(until, int) and not isinstance(until, bool)
                                      and 0 <= until < 1 << 32):
            problems.append((f"{where}.until", f"must be the round from which the key is revoked (>= 0), "
                             f"not {until!r}"))
        if not isinstance(admin, bool):
            problems.append((f"{where}.admin", f"must be true or false, not {admin!r}"))
        if problems:
            return None, problems
        return cls(name, raw, until, admin), []

    def to_toml(self) -> str:
        """The key as a ``[[keys]]`` table of the run file."""
        out = f"[[keys]]\nname = {toml_value(self.name)}\npublic = {toml_value(self.public.hex())}\n"
        out += f"until = {self.until}\n" if self.until is not None else ""
        return out + ("admin = true\n" if self.admin else "")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "public": self.public.hex()}
        if self.until is not None:
            d["until"] = self.until
        if self.admin:
            d["admin"] = True
        return d


def parse_keys(value: Any) -> tuple[tuple[ListedKey, ...], list[tuple[str, str]]]:
    """The run file's ``[[keys]]`` (a list of tables), checked for repeated names and keys."""
    if not isinstance(value, list | tuple):
        return (), [("keys", "must be a list of [[keys]] tables")]
    keys, problems = [], []
    for i, d in enumerate(value):
        key, bad = (d, []) if isinstance(d, ListedKey) else ListedKey.parse(d, f"keys[{i}]")
        problems += bad
        if key is None:
            continue
        for other in keys:
            if other.name == key.name:
                problems.append((f"keys[{i}].name", f"{key.name!r} is listed twice"))
            if other.public == key.public:
                problems.append((f"keys[{i}].public", f"is the key of {other.name!r} again"))
        keys.append(key)
    return tuple(keys), problems


def keys_toml(keys: tuple[ListedKey, ...]) -> str:
    """The run file's site-key section: the listed keys, or a commented example."""
    out = KEYS_TEMPLATE
    if not keys:
        return out + '# [[keys]]\n# name = "plant-a"\n# public = "<the 64 hex digits onebyte keygen printed>"\n'
    return out + "".join(k.to_toml() for k in keys)


#: What a peer's configuration may show of itself in our logs: a short repr, a few lines.
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxdict = _SHOW.maxlist = 4
_SHOW.maxlevel = 2
MAX_DIFFERENCES = 12


def differing_fields(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    """``"field: ours vs theirs"`` for every field of two canonical configurations that differs
    (``theirs`` comes from another peer: shown shortened, at most ``MAX_DIFFERENCES`` lines)."""
    out = []
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            if k == "base_hash" and isinstance(a, str) and isinstance(b, str):
                a, b = a[:12] + "…", b[:12] + "…"
            out.append(f"{prefix}{k}: {_SHOW.repr(a)} here, {_SHOW.repr(b)} there")
    return out if prefix else _at_most(out)


def differing_keys(ours: dict[str, dict[str, Any]], theirs: Any) -> list[str]:
    """What differs between our run file's site keys and another peer's (``Run.shared``'s
    ``keys``: public key hex -> its table), named by the key's name: keys one side lists, and
    ``until`` or ``admin`` that differ (a name alone is for people, and may differ)."""
    if not isinstance(theirs, dict) or not all(isinstance(v, dict) for v in theirs.values()):
        return [f"keys: not a list of keys there ({_SHOW.repr(theirs)})"]
    out = []
    for pub in sorted(set(ours) | set(theirs)):
        a, b = ours.get(pub), theirs.get(pub)
        name = _SHOW.repr((a or b).get("name"))
        if a is None or b is None:
            out.append(f"key {name} ({pub[:12]}…): listed {'there' if a is None else 'here'} only")
            continue
        out += [f"key {name}: {f} {_SHOW.repr(a.get(f))} here, {_SHOW.repr(b.get(f))} there"
                for f in ("until", "admin") if a.get(f) != b.get(f)]
    return _at_most(out)


def _at_most(lines: list[str]) -> list[str]:
    """The first ``MAX_DIFFERENCES`` lines, and how many more there were."""
    extra = len(lines) - MAX_DIFFERENCES
    return lines if extra <= 0 else [*lines[:MAX_DIFFERENCES], f"{extra} more"]
