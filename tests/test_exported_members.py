"""The package's top level is exactly the documented public API (docs/api.md).

``ckptscan.__all__`` must equal the table "Names in `ckptscan`" of docs/api.md, every
name in it must resolve, and nothing else public may sit at the top level: no stray
imports (``ckptscan.sys``), no helper without a leading underscore. Submodules are
not names of the package's namespace here: the import system binds each one on the
package once it is imported, and the doc names the public ones.
"""

from __future__ import annotations

import re
import types

import ckptscan
from conftest import ROOT

API_DOC = ROOT / "docs" / "api.md"
SECTION = "## Names in `ckptscan`"


def documented_names() -> list[str]:
    """The names listed in the table of the section :data:`SECTION` of docs/api.md."""
    text = API_DOC.read_text()
    assert SECTION in text, f"{API_DOC.name} has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in body.splitlines() if ln.startswith("| `")]
    names = [re.fullmatch(r"\| `ckptscan\.(\w+)` \|.*\|", ln) for ln in rows]
    assert all(names), [ln for ln, m in zip(rows, names) if not m]
    return [m.group(1) for m in names]


def _submodule(value: object) -> bool:
    return isinstance(value, types.ModuleType) and value.__name__.startswith("ckptscan.")


def test_all_is_the_documented_api():
    doc = documented_names()
    assert len(doc) == len(set(doc)), doc
    assert len(ckptscan.__all__) == len(set(ckptscan.__all__)), ckptscan.__all__
    assert sorted(ckptscan.__all__) == sorted(doc)


def test_every_exported_name_resolves():
    for name in ckptscan.__all__:
        value = getattr(ckptscan, name)
        assert not isinstance(value, types.ModuleType), name
    assert isinstance(ckptscan.__version__, str)


def test_nothing_else_is_public_at_the_top_level():
    for name in ckptscan.__all__:  # bind every lazy name first: they must not bring others
        getattr(ckptscan, name)
    public = {n for n, v in vars(ckptscan).items() if not n.startswith("_") and not _submodule(v)}
    assert public <= set(ckptscan.__all__), sorted(public - set(ckptscan.__all__))
    listed = {n for n in dir(ckptscan) if not n.startswith("_") and not _submodule(getattr(ckptscan, n))}
    assert listed == set(ckptscan.__all__) - {"__version__"}


def test_the_check_sees_a_stray_name(monkeypatch):
    """Control: a public leftover at the top level is caught by the check above."""
    monkeypatch.setattr(ckptscan, "helper", lambda: None, raising=False)
    public = {n for n, v in vars(ckptscan).items() if not n.startswith("_") and not _submodule(v)}
    assert "helper" in public - set(ckptscan.__all__)
