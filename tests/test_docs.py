"""The documentation: the site builds in strict mode with its generated pages, the Python blocks of
its pages run as written, every ``onebyte`` command the README and the pages show parses with the
real command line, and the README stays short. (The README's own Python block is run by test_api.)"""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from onebyte.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL = ("bash", "sh", "shell", "console", "")
INLINE = re.compile(r"`((?:\S*/)?onebyte [^`]+)`")


def _blocks(path: Path, langs: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text(encoding="utf-8")) if lang in langs]


def _commands(path: Path) -> tuple[list[str], list[str]]:
    """The ``onebyte ...`` commands of a file: whole ones, the lines of its shell blocks (continuations
    joined); and mentions, inline code spans that name a command and some of its flags."""
    whole = []
    for body in _blocks(path, SHELL):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "onebyte":
                whole.append(line.strip())
    mentions = INLINE.findall(FENCE.sub("", path.read_text(encoding="utf-8")))
    return whole, mentions


def _subparser(words: list[str]):
    """The parser of the (sub)command ``words`` names, and the words after it."""
    p, rest = build_parser(), words[1:]
    while rest:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or rest[0] not in subs[0].choices:
            break
        p, rest = subs[0].choices[rest[0]], rest[1:]
    return p, rest


def _parse_error(command: str) -> str | None:
    """None if the real parser accepts the whole ``command`` (nothing runs), else why not."""
    words = shlex.split(command, comments=True)
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exc:
        return None if exc.code == 0 else f"exit {exc.code}"
    return None


def _mention_error(command: str) -> str | None:
    """None if ``command`` names a real (sub)command and only flags it has, else why not."""
    words = [w for w in re.split(r"[\s\[\]|]+", command) if w]
    p, rest = _subparser(words)
    if p is build_parser() or p.prog == "onebyte":
        return f"no command {words[1:2]}" if len(words) > 1 and not words[1].startswith("-") else None
    known = {f for a in p._actions for f in a.option_strings}
    unknown = [w.split("=")[0] for w in rest if w.startswith("-") and w.split("=")[0] not in known]
    return f"{p.prog} has no {unknown}" if unknown else None


def test_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[test]')")
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                         capture_output=True, text=True, timeout=180, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    html = {p: p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    assert not [p for p, text in html.items() if "onebyte:" in text and "<!-- onebyte:" in text], "a marker survived"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    simulate = dict((n, p) for n, p in build_parser()._subparsers._group_actions[0].choices.items())["simulate"]
    missing = [f for a in simulate._actions for f in a.option_strings if f not in cli]
    assert not missing, f"the generated CLI reference lacks {missing}"
    run_file = (site / "reference" / "run-file" / "index.html").read_text(encoding="utf-8")
    assert "<code>lr</code>" in run_file and "<code>aggregate</code>" in run_file


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, ("python",))], ids=lambda p: p.name)
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for i, block in enumerate(_blocks(page, ("python",))):  # one page's blocks share a scope, in order
        exec(compile(block, f"{page.name}, python block {i + 1}", "exec"), scope)


def test_every_onebyte_command_parses():
    files = {f: _commands(f) for f in (README, *PAGES)}
    whole = {c: f.name for f, (cs, _) in files.items() for c in cs}
    mentions = {c: f.name for f, (_, ms) in files.items() for c in ms}
    assert len(whole) >= 10 and len(mentions) >= 10, "the command finder found almost nothing: is it broken?"
    # the checks can fail
    assert _parse_error("onebyte simulate --no-such-flag") and _parse_error("onebyte simulate")
    assert _mention_error("onebyte peer --no-such-flag") and _mention_error("onebyte nosuchcommand --out x")
    bad = {c: (f, err) for c, f in whole.items() if (err := _parse_error(c))}
    bad |= {c: (f, err) for c, f in mentions.items() if (err := _mention_error(c))}
    assert not bad, bad


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
