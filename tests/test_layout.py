"""The house's size limits (issue #29): every module of src/onebyte at most MAX_LINES lines, every
class at most MAX_METHODS methods, and no import cycle among onebyte's modules, counting imports
under ``TYPE_CHECKING`` and inside functions. Known exceptions are listed by name, each to be fixed
and then removed here (a listed exception that no longer breaks its limit fails the test too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "onebyte"
MAX_LINES = 450
MAX_METHODS = 25
# Known exceptions, each listed until it is fixed (issue #29 fixed the last ones):
KNOWN_LONG: set[str] = set()
KNOWN_LARGE_CLASSES: set[str] = set()
KNOWN_CYCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    return {path.relative_to(PACKAGE).as_posix(): path for path in sorted(PACKAGE.rglob("*.py"))}


def _dotted(rel: str) -> str:
    parts = ["onebyte", *rel.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(rel: str, tree: ast.AST, known: set[str]) -> set[str]:
    """The onebyte modules ``rel`` imports, anywhere in it (``from . import x`` included)."""
    package = _dotted(rel) if rel.endswith("__init__.py") else _dotted(rel).rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import x``: module x, if it is one; else a name from ``target`` (a module itself)
            candidates = {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}
        elif isinstance(node, ast.Import):
            candidates = {alias.name for alias in node.names}
        else:
            continue
        out |= {c for c in candidates if c in known}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_is_longer_than_the_limit():
    lines = {rel: len(path.read_text(encoding="utf-8").splitlines()) for rel, path in _modules().items()}
    too_long = {rel: n for rel, n in lines.items() if n > MAX_LINES and rel not in KNOWN_LONG}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    fixed = {rel for rel in KNOWN_LONG if lines.get(rel, 0) <= MAX_LINES}
    assert not fixed, f"now within {MAX_LINES} lines: remove {sorted(fixed)} from KNOWN_LONG"


def test_no_class_has_more_methods_than_the_limit():
    counts = {}
    for rel, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = [f for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
                counts[f"{rel}:{node.name}"] = len(methods)
    too_big = {c: n for c, n in counts.items() if n > MAX_METHODS and c not in KNOWN_LARGE_CLASSES}
    assert not too_big, f"classes with more than {MAX_METHODS} methods: {too_big}"
    fixed = {c for c in KNOWN_LARGE_CLASSES if counts.get(c, 0) <= MAX_METHODS}
    assert not fixed, f"now within {MAX_METHODS} methods: remove {sorted(fixed)} from KNOWN_LARGE_CLASSES"


def test_no_import_cycle_among_onebyte_modules():
    modules = _modules()
    known = {_dotted(rel) for rel in modules}
    graph = {_dotted(rel): _imports(rel, ast.parse(path.read_text(encoding="utf-8")), known) - {_dotted(rel)}
             for rel, path in modules.items()}
    # the package's lazy names (``onebyte.Peer``...) are imported by nothing inside it: no edge into it
    cycles = [c for c in _cycles(graph) if c not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"
    fixed = [c for c in KNOWN_CYCLES if c not in _cycles(graph)]
    assert not fixed, f"no longer a cycle: remove {fixed} from KNOWN_CYCLES"


def test_the_cycle_finder_sees_a_cycle_under_type_checking():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    edges = _imports("a.py", tree, {"onebyte.a", "onebyte.b"})
    assert edges == {"onebyte.b"}
    assert _cycles({"onebyte.a": edges, "onebyte.b": {"onebyte.a"}}) == [{"onebyte.a", "onebyte.b"}]
