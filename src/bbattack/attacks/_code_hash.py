"""The code an attack runs: its module and every bbattack module it imports, transitively.

Read from the sources (``ast``), not from ``sys.modules``, so the answer does not depend on what
happens to be imported already. Imports inside functions count too: they are code it runs.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

__all__ = ["code_closure", "code_digest"]

_ROOT = "bbattack"
_HOME = Path(__file__).resolve().parents[1]  # the bbattack package folder


def _source(module: str) -> Path | None:
    """The file of a bbattack module, found without importing anything."""
    rel = Path(*module.split(".")[1:])
    for path in (_HOME / rel / "__init__.py", (_HOME / rel).with_suffix(".py")):
        if (rel.parts and path.is_file()) or path == _HOME / "__init__.py":
            return path
    return None


def _imports(module: str, path: Path) -> set[str]:
    """The bbattack modules ``module``'s source imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import module`` runs that module's code, not the package's __init__.
            subs = {f"{base}.{a.name}" for a in node.names}
            modules = {m for m in subs if _source(m) is not None}
            found |= modules if modules == subs else {base, *modules}
    return {m for m in found if m == _ROOT or m.startswith(_ROOT + ".")}


@cache
def code_closure(module: str) -> tuple[tuple[str, Path], ...]:
    """``module`` and the bbattack modules it imports, transitively, with their files."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source(name)
        if path is None:  # a name imported from a module, not a module
            continue
        seen[name] = path
        todo += sorted(_imports(name, path) - set(seen))
    return tuple(sorted(seen.items()))


@cache
def code_digest(module: str) -> str:
    """A short SHA-256 over the sources of ``module``'s closure (names and bytes)."""
    h = hashlib.sha256()
    for name, path in code_closure(module):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]
