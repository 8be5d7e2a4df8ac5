"""Every object of the documented public API has a docstring.

The API is what docs/api.md documents: the names of ``ckptscan.__all__`` and every
module the page imports from or calls into (``ckptscan.history``, ``ckptscan.bulk`` …,
parsed from the page, so a module the page starts naming is checked from then on). In
each such module every public function and class defined there counts, and for every
class (the exported ones included) each public method and property it defines.
"""

from __future__ import annotations

import importlib
import inspect
import re

import ckptscan
from conftest import ROOT

API_DOC = ROOT / "docs" / "api.md"


def documented_modules() -> list[str]:
    """Submodules docs/api.md imports from (``from ckptscan.x import``) or calls into
    (``ckptscan.x.name``)."""
    text = API_DOC.read_text()
    found = set(re.findall(r"from (ckptscan(?:\.[a-z_]+)+) import", text))
    for dotted in re.findall(r"\b(ckptscan(?:\.[A-Za-z_]\w*)+)", text):
        parts = dotted.split(".")
        for i in range(len(parts), 1, -1):  # the longest importable module prefix
            name = ".".join(parts[:i])
            try:
                importlib.import_module(name)
            except ImportError:
                continue
            if name != "ckptscan":
                found.add(name)
            break
    return sorted(found)


def _members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            out.append((name, value.fget))
        elif isinstance(value, (staticmethod, classmethod)):
            out.append((name, value.__func__))
        elif inspect.isfunction(value):
            out.append((name, value))
    return out


def public_objects() -> dict[str, object]:
    """Qualified name -> object, for everything the API documents."""
    objs: dict[str, object] = {}
    for name in ckptscan.__all__:
        if name != "__version__":
            objs[f"ckptscan.{name}"] = getattr(ckptscan, name)
    for modname in documented_modules():
        module = importlib.import_module(modname)
        objs[f"module {modname}"] = module
        for name, value in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            if getattr(value, "__module__", None) == modname:
                objs[f"{modname}.{name}"] = value
    for qual, value in list(objs.items()):
        if inspect.isclass(value):
            for name, member in _members(value):
                objs[f"{qual}.{name}"] = member
    return objs


def _has_doc(obj: object) -> bool:
    doc = obj.__doc__ if inspect.ismodule(obj) or inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")  # its own, not inherited (dataclasses write a signature)
        if doc and re.fullmatch(rf"{obj.__name__}\(.*\)", doc.strip(), re.S):
            doc = None
    return bool(doc and doc.strip())


def test_documented_modules_are_found():
    mods = documented_modules()
    assert {"ckptscan.history", "ckptscan.bulk", "ckptscan.render.jsonl", "ckptscan.runtime.executor"} <= set(mods), mods


def test_every_public_api_object_has_a_docstring():
    objs = public_objects()
    assert len(objs) > 50, len(objs)
    missing = sorted(q for q, obj in objs.items() if not _has_doc(obj))
    assert not missing, f"{len(missing)} public objects without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_docstring():
    """Control: an object without a docstring, or with only a dataclass's generated one, fails."""
    import dataclasses

    def undocumented():
        pass

    @dataclasses.dataclass
    class Plain:
        x: int = 0

    assert not _has_doc(undocumented) and not _has_doc(Plain)
    assert _has_doc(ckptscan.scan) and _has_doc(ckptscan.Report)
