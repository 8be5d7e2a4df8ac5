"""The one-way layers of docs/architecture.md hold for every import in ``ckptscan/``.

Every ``import`` / ``from … import`` (module level and inside functions) and the lazy
export tables (``_LAZY``, ``_EXPORTS``) are resolved to ckptscan modules; a module may
import its own layer or a lower one, never a higher one, and the import graph has no
cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ckptscan"


def layers() -> list[list[str]]:
    """The layers, lowest first, from the ``layers`` block of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return [line.split() for line in block.group(1).splitlines() if line.strip()]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str, table: list[list[str]]) -> int | None:
    best, where = -1, None
    for i, names in enumerate(table):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, where = len(name), i
    return where


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported ckptscan module, line)`` for every import in ``path``."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int]] = []

    def add(target: str, line: int) -> None:
        while target and target not in known:  # ckptscan.formats.base.Variable -> ckptscan.formats.base
            target = target.rpartition(".")[0]
        if target.split(".")[0] == "ckptscan" and target != module:
            out.append((target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ckptscan":
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_pkg, node.level, node.module)
            for alias in node.names:  # `from . import journal` names a module
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node.lineno)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("_LAZY", "_EXPORTS") for t in node.targets):
            for value in ast.literal_eval(node.value).values():
                level = len(value) - len(value.lstrip("."))
                add(_resolve(module, is_pkg, level or 1, value.lstrip(".")), node.lineno)
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_layer():
    table = layers()
    assert [m for m in sorted(modules()) if layer_of(m, table) is None] == []


def test_no_upward_import():
    table = layers()
    upward = []
    for module, targets in graph().items():
        mine = layer_of(module, table)
        for target, line in targets:
            if layer_of(target, table) > mine:
                upward.append(f"{module}:{line} imports {target} (layer {layer_of(target, table)} > {mine})")
    assert upward == []


def test_no_import_cycle():
    g = {m: sorted({t for t, _ in ts}) for m, ts in graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in g.get(m, []):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checker_sees_what_it_must(tmp_path):
    """The resolver finds relative, absolute, in-function and lazy-table imports."""
    known = {"ckptscan.runtime.memory": Path(), "ckptscan.journal": Path(), "ckptscan.cli": Path(),
             "ckptscan.formats": Path(), "ckptscan.formats.source": Path(), "ckptscan.discover": Path()}
    src = tmp_path / "m.py"
    src.write_text(
        "from ..runtime.memory import apply_memory_cap\n"
        "def f():\n    from .. import journal\n    import ckptscan.cli\n"
        "from .source import LocalSource\n"
        "_EXPORTS = {'expand': '..discover'}\n"
    )
    got = sorted(t for t, _ in imports("ckptscan.formats.layouts", src, known))
    assert got == ["ckptscan.cli", "ckptscan.discover", "ckptscan.formats.source", "ckptscan.journal",
                   "ckptscan.runtime.memory"]
    table = layers()
    assert layer_of("ckptscan.formats.tf_saved_model", table) == layer_of("ckptscan.formats", table)
    assert layer_of("ckptscan.serve.app", table) == layer_of("ckptscan.bulk", table)
    assert layer_of("ckptscan.cli.scan", table) > layer_of("ckptscan.patch.api", table) > layer_of("ckptscan.discover", table)
