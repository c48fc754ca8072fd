"""MkDocs hooks: the pages that are generated, never typed, so they cannot drift from the code.

A page asks for generated text with a marker on a line of its own:

* ``<!-- onebyte:cli -->``: every command and flag, from ``onebyte.cli.build_parser()``;
* ``<!-- onebyte:run-file -->``: every run-file setting, from the template ``onebyte init`` writes
  (``RunSpec().to_toml()``), each with the flag that overrides it;
* ``<!-- onebyte:modules -->``: the module map, the first sentence of each module's docstring;
* ``<!-- onebyte:docstring onebyte.record -->``: one module's docstring (read from the source);
* ``<!-- onebyte:benchmarks -->``: BENCHMARKS.md, which ``python -m bench.report`` writes from
  bench/results; its figures are copied into the site beside the page;
* ``<!-- onebyte:defaults -->``: one paragraph per default that guards a run (each experiment's
  ``note``, from bench/results), with what it was measured to cost.

An unknown marker or a missing module is an error, so the strict build fails.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
BENCHMARKS = REPO / "BENCHMARKS.md"
MARKER = re.compile(r"^<!-- onebyte:([a-z-]+)(?: ([\w.]+))? -->$", re.M)
FIGURE = re.compile(r"\]\(bench/results/([\w.-]+\.png)\)")
FIGURES_DIR = "benchmarks"  # where the site keeps the benchmark figures, beside benchmarks.md

if str(SRC) not in sys.path:  # the site builds from the checkout, installed or not
    sys.path.insert(0, str(SRC))


# ---- markdown helpers -------------------------------------------------------------------------

def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


# ---- the command line -------------------------------------------------------------------------

def _subcommands(p: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of ``p``, in the order they were added."""
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            out += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return out


def _flag_rows(p: argparse.ArgumentParser) -> list[str]:
    fmt = argparse.HelpFormatter(p.prog)
    lines: list[str] = []
    for group in p._action_groups:
        actions = [a for a in group._group_actions
                   if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        title = {"positional arguments": "arguments", "options": "options"}.get(group.title, group.title)
        lines += ["", f"**{title}**", "", "| flag | value | help |", "|---|---|---|"]
        for a in actions:
            names = ", ".join(a.option_strings) or a.metavar or a.dest
            if a.choices:
                value = " | ".join(str(c) for c in a.choices)
            elif a.nargs == 0:
                value = ""
            else:
                value = a.metavar or a.dest.upper()
            if a.nargs in ("+", "*") or isinstance(a, argparse._AppendAction):
                value += " …"
            text = fmt._expand_help(a) if a.help else ""
            if a.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text and a.nargs != 0:
                text += f" (default {a.default})"
            lines.append(f"| {_code(names)} | {_cell(value)} | {_cell(text)} |")
    return lines


def cli_reference() -> str:
    """Markdown for every command of ``onebyte`` and every flag, from the real parser."""
    from onebyte.cli import build_parser

    top = build_parser()
    lines = ["```", top.format_usage().strip(), "```", *_flag_rows(top), ""]
    todo = [(f"{top.prog} {name}", text, sub) for name, text, sub in _subcommands(top)]
    while todo:
        name, text, p = todo.pop(0)
        lines += [f"## `{name}`", "", _cell(text).replace("\\|", "|") or (p.description or ""), "",
                  "```", p.format_usage().strip(), "```"]
        lines += _flag_rows(p) + [""]
        todo[0:0] = [(f"{name} {n}", t, s) for n, t, s in _subcommands(p)]
    return "\n".join(lines)


# ---- the run file -----------------------------------------------------------------------------

def run_file_reference() -> str:
    """Markdown for every setting of the run file: ``config.reference_markdown()``, generated from
    the same field documentation as the flags and the template ``onebyte init`` writes, then the
    ``[[keys]]`` table."""
    from dataclasses import fields

    from onebyte.config import ListedKey, RunSpec, reference_markdown

    out = [reference_markdown()]
    keys_prose: list[str] = []
    _, mark, tail = RunSpec().to_toml().partition("# Site keys.")
    for i, ln in enumerate(tail.splitlines() if mark else []):
        if i and (ln.startswith("# [[") or not ln.startswith("#")):
            break
        keys_prose.append(ln.lstrip("#").strip())
    out += ["## `[[keys]]`", "", "Site keys." + " ".join([""] + keys_prose), "",
            "| key | type | default |", "|---|---|---|"]
    out += [f"| `{f.name}` | {_cell('string of 64 hex digits' if str(f.type) == 'bytes' else str(f.type))} | "
            f"{_code(repr(f.default)) if f.default is not f.default_factory else 'required'} |"
            for f in fields(ListedKey)]
    return "\n".join(out) + "\n"


# ---- modules ----------------------------------------------------------------------------------

def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _module_path(name: str) -> Path:
    rel = Path(*name.split("."))
    for candidate in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"docs/hooks.py: no module {name} under {SRC}")


def _first_sentence(doc: str) -> str:
    para = " ".join(doc.split("\n\n")[0].split())
    head = re.split(r"(?<=[.])\s", para, maxsplit=1)[0]
    return re.sub(r":+$", ".", head)


def module_map() -> str:
    """One line per module of src/onebyte: its name and the first sentence of its docstring."""
    rows = ["| module | what it is |", "|---|---|"]
    for path in sorted((SRC / "onebyte").rglob("*.py")):
        rel = path.relative_to(SRC / "onebyte")
        if rel.name == "__main__.py":
            continue
        if rel.name == "__init__.py":
            name = "/".join(rel.parts[:-1]) + "/" if rel.parts[:-1] else "onebyte (the package)"
        else:
            name = rel.with_suffix("").as_posix()
        doc = _docstring(path)
        rows.append(f"| `{name}` | {_cell(_first_sentence(doc)) if doc else '(no docstring)'} |")
    return "\n".join(rows)


def docstring(name: str) -> str:
    """A module's docstring as Markdown: reST literal blocks (``::``) and simple tables become code."""
    out, borders = [], 0
    for line in _docstring(_module_path(name)).splitlines():
        if re.fullmatch(r"=+(\s+=+)+", line.strip()):  # a reST simple table: shown as it is
            borders += 1
            if borders == 1:
                out.append("```text")
            out.append(line)
            if borders == 3:
                out.append("```")
                borders = 0
            continue
        out.append(line[:-1] if line.endswith("::") and borders == 0 else line)
    return "\n".join(out)


# ---- benchmarks -------------------------------------------------------------------------------

def benchmarks() -> str:
    """BENCHMARKS.md without its title, one heading level down, figures pointed at the site's copies."""
    text = BENCHMARKS.read_text(encoding="utf-8")
    text = re.sub(r"\A# [^\n]*\n", "", text)
    text = FIGURE.sub(rf"]({FIGURES_DIR}/\1)", text)
    return text


def defaults() -> str:
    """Each experiment's paragraph on the default it chose and its measured cost (bench.sections.notes)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.sections import Results, notes

    return "\n\n".join(notes(Results(REPO / "bench" / "results")))


# ---- mkdocs events ----------------------------------------------------------------------------

GENERATORS = {"cli": cli_reference, "run-file": run_file_reference, "modules": module_map,
              "benchmarks": benchmarks, "defaults": defaults}


def render(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated text."""
    def one(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "docstring" and arg:
            return docstring(arg)
        if kind in GENERATORS and not arg:
            return GENERATORS[kind]()
        raise ValueError(f"docs/hooks.py: unknown marker {m.group(0)}")

    return MARKER.sub(one, markdown)


def on_page_markdown(markdown: str, **_: object) -> str:
    return render(markdown)


def on_files(files, config, **_: object):
    """The benchmark figures BENCHMARKS.md shows, copied from bench/results beside benchmarks.md."""
    from mkdocs.structure.files import File

    for name in sorted(set(FIGURE.findall(BENCHMARKS.read_text(encoding="utf-8")))):
        src = REPO / "bench" / "results" / name
        if src.exists():
            files.append(File.generated(config, f"{FIGURES_DIR}/{name}", abs_src_path=str(src)))
    return files
