"""The package's layout: no import circles, and the kernel imports nothing above it.

Imports are read from the sources (every ``import``, also inside functions, where an import
could hide a circle; not those under ``if TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import bbattack

HOME = Path(bbattack.__file__).resolve().parent
# The kernel: what answers and counts queries, and what results are made of.
KERNEL = ("bbattack.oracle", "bbattack.errors", "bbattack.results", "bbattack.classes")
ABOVE: tuple[str, ...] = ("bbattack.attacks", "bbattack.baselines", "bbattack.bench")
ABOVE += ("bbattack.cli", "bbattack.service", "bbattack.remote")


def _module(path: Path) -> str:
    rel = path.relative_to(HOME.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (HOME / rel / "__init__.py").is_file() or (HOME / rel).with_suffix(".py").is_file()


def _imports(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for n in nodes:
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = package.split(".")
                    anchor = ".".join(parts[: len(parts) - n.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                subs = {f"{base}.{a.name}" for a in n.names}
                mods = {m for m in subs if _exists(m)}
                found.update(mods if mods == subs else {base, *mods})
            elif isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            for child in ast.iter_child_nodes(n):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m.startswith("bbattack") and _exists(m) and m != name}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(_module(p), p) for p in HOME.rglob("*.py")}


def _circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_there_are_no_import_circles() -> None:
    g = _graph()
    assert len(g) > 100  # the whole package was read
    assert _circles(g) == []


def test_the_kernel_imports_nothing_above_it() -> None:
    up = {
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if m.startswith(KERNEL)
        for d in deps
        if d.startswith(ABOVE)
    }
    assert up == set()


def test_a_circle_is_found_where_there_is_one() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
