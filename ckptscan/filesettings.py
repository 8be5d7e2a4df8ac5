"""Settings per scanned file: the nearest ``.ckptscan.toml`` / ``pyproject.toml`` upward from it.

Like ruff, each file is scanned with the settings found by walking up from *its*
folder, not from the working directory: ``models/a/.ckptscan.toml`` applies to
``models/a/epoch_3.keras`` wherever ``ckptscan`` runs. ``--settings FILE`` (or
``settings=`` in the API) fixes one file for everything. Command-line options
(``--select``, ``--ignore``, ``--include-optimizer``) still win over any file.

``fail-on`` decides the exit status of the whole run, so it comes from ``--fail-on``,
else from the settings nearest to the first path named.
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache

from .errors import CkptscanError
from .settings import Settings, find_settings_file, load_settings

__all__ = ["options_for", "settings_for"]


def _nearest(folder: str) -> str | None:
    # not cached: a settings file created or removed between two scans of one process
    # (``serve``, the in-process CLI) must count; a few stat calls per folder level
    p = find_settings_file(folder)
    return str(p) if p is not None else None


@lru_cache(maxsize=256)
def _load(source: str, mtime: float) -> Settings:
    return load_settings(source)


def settings_for(path: str | os.PathLike) -> Settings:
    """The settings that apply to ``path`` (defaults when no file is found)."""
    p = os.path.abspath(os.fspath(path))
    folder = p if os.path.isdir(p) else os.path.dirname(p)
    source = _nearest(folder)
    if source is None:
        return Settings()
    try:
        mtime = os.stat(source).st_mtime
    except OSError:
        mtime = 0.0
    return _load(source, mtime)


def options_for(path: str, options):
    """``options`` re-derived from the settings nearest to ``path`` (when per-file).

    Raises a :class:`~ckptscan.errors.CkptscanError` for an unusable settings file.
    """
    if not getattr(options, "per_file_settings", False) or "://" in str(path):
        return options
    settings = settings_for(path)
    if settings.source == options.settings.source:
        return options
    from .engine import make_options

    req = dict(options.request)
    try:
        new = make_options(settings=settings, config=options.config, timeout=options.timeout, **req)
    except ValueError as exc:  # an unknown rule code in that settings file
        raise CkptscanError(settings.source or path, f"settings: {exc}") from exc
    return dataclasses.replace(new, per_file_settings=True, request=options.request)
