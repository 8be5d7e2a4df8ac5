"""Repair Keras checkpoints in place without losing data (``ckptscan fix``).

Modules: :mod:`.model` (plan and manifest records), :mod:`.strategies` (reset,
median, clamp, from, value), :mod:`.targets` (what to repair), :mod:`.writer`
(in-place journaled writes, atomic rewrites, verification), :mod:`.zipcrc` (incremental CRC-32 of a zip member),
:mod:`.rawio` (stored bits), :mod:`.api` (one file; the :class:`FixRequest` every path shares), :mod:`.run`
(:func:`fix` over many paths), :mod:`.remote` (a checkpoint behind a URI, repaired into a copy). The lock, the
journal and recovery are :mod:`ckptscan.journal`.
"""

from __future__ import annotations

import importlib

#: Public name -> submodule. Imported on first use (PEP 562), so that reading a
#: checkpoint does not pay
#: for the writer, the strategies and the CRC code.
_EXPORTS = {
    "FixRequest": "api", "apply": "api", "build_request": "api", "expand": "..discover", "fix": "run",
    "fix_file": "api", "fix_request": "run", "fix_remote": "remote",
    "Change": "model", "ChangeRecord": "model", "FileFix": "model", "FixManifest": "model",
    "PatchPlan": "model", "needs_recovery": "..journal", "recover": "..journal",
    "Options": "strategies", "Strategy": "strategies", "Target": "strategies", "Verify": "strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module if module.startswith("..") else f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
