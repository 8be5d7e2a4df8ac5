"""Project settings for ``ckptscan scan``: ``[tool.ckptscan]`` in ``pyproject.toml`` or a
``.ckptscan.toml`` (top-level keys, or the same ``[tool.ckptscan]`` table).

The nearest file wins, searched from the working directory upwards (``.ckptscan.toml``
before ``pyproject.toml`` in the same folder); command-line options override it::

    [tool.ckptscan]
    select = ["BN", "NUM"]          # rule ID prefixes, like ruff
    ignore = ["BN003"]
    fail-on = "warning"             # error | warning | info | never
    include-optimizer = false

    [tool.ckptscan.thresholds]
    bn-outlier-decades = 4.0

    [tool.ckptscan.per-file-ignores]
    "exports/*.keras" = ["BN008"]   # glob on the file path

    [tool.ckptscan.per-layer-ignores]
    "stem_bn" = ["BN003"]           # glob on the layer path

TOML is read with :mod:`tomllib` (Python 3.11+), or ``tomli`` on Python 3.10 (a
dependency there).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CkptscanError
from .rules import Thresholds

SETTINGS_FILES = (".ckptscan.toml", "pyproject.toml")
FAIL_ON_VALUES = ("error", "warning", "info", "never")


class SettingsError(CkptscanError):
    """A settings file that cannot be used (syntax, unknown key, bad value)."""


@dataclass(frozen=True)
class Settings:
    """Scan options from a settings file (``None`` = not set there)."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    fail_on: str | None = None
    include_optimizer: bool | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(glob on the file path, rule codes) pairs."""
    per_layer_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(glob on the layer path, rule codes) pairs."""
    source: str | None = None
    """The file these settings came from."""

    def file_ignores(self, path: str) -> tuple[str, ...]:
        """Rule codes ignored for ``path`` (matched as given, relative to the settings file, and by name)."""
        cands = {path, os.path.basename(path)}
        if self.source:
            try:
                cands.add(os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(self.source))))
            except ValueError:  # pragma: no cover - other drive on Windows
                pass
        out: list[str] = []
        for glob, codes in self.per_file_ignores:
            if any(fnmatch.fnmatchcase(c, glob) for c in cands):
                out += codes
        return tuple(out)

    def layer_ignores(self, layer_path: str) -> tuple[str, ...]:
        """Rule codes ignored for a layer path."""
        out: list[str] = []
        for glob, codes in self.per_layer_ignores:
            if fnmatch.fnmatchcase(layer_path, glob):
                out += codes
        return tuple(out)


def find_settings_file(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest ``.ckptscan.toml`` or ``pyproject.toml`` with ``[tool.ckptscan]``."""
    d = Path(start or os.getcwd()).resolve()
    for folder in (d, *d.parents):
        for name in SETTINGS_FILES:
            p = folder / name
            if p.is_file():
                if name == "pyproject.toml":
                    try:
                        if "ckptscan" not in p.read_text(encoding="utf-8", errors="replace"):
                            continue
                        doc = parse_toml(p.read_text(encoding="utf-8"), str(p))
                    except (OSError, SettingsError):
                        return p  # let load_settings report the problem
                    if not isinstance(doc.get("tool"), dict) or "ckptscan" not in doc["tool"]:
                        continue
                return p
    return None


def load_settings(path: str | os.PathLike | None = None, start: str | os.PathLike | None = None) -> Settings:
    """Settings from ``path``, or from the nearest settings file; defaults when none."""
    p = Path(path) if path else find_settings_file(start)
    if p is None:
        return Settings()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(p, f"cannot read settings ({exc.strerror or exc})") from exc
    doc = parse_toml(text, str(p))
    table = doc.get("tool", {}).get("ckptscan") if isinstance(doc.get("tool"), dict) else None
    if table is None:
        if p.name == "pyproject.toml":
            return Settings(source=str(p))
        table = {k: v for k, v in doc.items() if k != "tool"}
    if not isinstance(table, dict):
        raise SettingsError(p, "[tool.ckptscan] must be a table")
    return from_table(table, str(p))


def _codes(value: object, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(where, f"{key} must be a list of rule codes")
    return tuple(value)


def from_table(table: dict, where: str = "settings") -> Settings:
    """Validate a ``[tool.ckptscan]`` table."""
    known = {"select", "ignore", "fail-on", "include-optimizer", "thresholds", "per-file-ignores", "per-layer-ignores"}
    norm = {str(k).replace("_", "-"): v for k, v in table.items()}
    unknown = sorted(set(norm) - known)
    if unknown:
        raise SettingsError(where, f"unknown key {unknown[0]!r} in [tool.ckptscan] (known: {', '.join(sorted(known))})")
    fail_on = norm.get("fail-on")
    if fail_on is not None and fail_on not in FAIL_ON_VALUES:
        raise SettingsError(where, f"fail-on must be one of {', '.join(FAIL_ON_VALUES)}, not {fail_on!r}")
    inc = norm.get("include-optimizer")
    if inc is not None and not isinstance(inc, bool):
        raise SettingsError(where, "include-optimizer must be true or false")
    th = norm.get("thresholds", {})
    if not isinstance(th, dict):
        raise SettingsError(where, "[tool.ckptscan.thresholds] must be a table")
    try:
        thresholds = Thresholds.from_mapping(th)
    except (ValueError, TypeError) as exc:
        raise SettingsError(where, str(exc)) from exc
    pairs = {}
    for key in ("per-file-ignores", "per-layer-ignores"):
        tab = norm.get(key, {})
        if not isinstance(tab, dict):
            raise SettingsError(where, f"[tool.ckptscan.{key}] must be a table of glob = [codes]")
        pairs[key] = tuple((str(g), _codes(c, f"{key} {g!r}", where)) for g, c in tab.items())
    return Settings(
        select=_codes(norm["select"], "select", where) if "select" in norm else None,
        ignore=_codes(norm.get("ignore", []), "ignore", where),
        fail_on=fail_on,
        include_optimizer=inc,
        thresholds=thresholds,
        per_file_ignores=pairs["per-file-ignores"],
        per_layer_ignores=pairs["per-layer-ignores"],
        source=where,
    )


# --- TOML ---------------------------------------------------------------------------


def parse_toml(text: str, where: str = "settings") -> dict:
    """Parse TOML with :mod:`tomllib` (Python 3.11+) or ``tomli`` (a dependency on 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - Python 3.10
        import tomli as toml
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise SettingsError(where, f"invalid TOML: {exc}") from exc
