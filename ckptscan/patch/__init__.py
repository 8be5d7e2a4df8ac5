"""Repair Keras checkpoints in place without losing data (``ckptscan fix``).

Modules: :mod:`.model` (plan and manifest records), :mod:`.strategies` (reset,
median, clamp, from, value), :mod:`.targets` (what to repair), :mod:`.writer`
(in-place journaled writes, atomic rewrites, verification), :mod:`.safety` (lock,
journal, recovery), :mod:`.zipcrc` (incremental CRC-32 of a zip member),
:mod:`.rawio` (stored bits), :mod:`.api` (:func:`fix`).
"""

from __future__ import annotations

from .api import FixRequest, apply, expand, fix, fix_file
from .model import Change, ChangeRecord, FileFix, FixManifest, PatchPlan
from .safety import needs_recovery, recover
from .strategies import Options, Strategy, Target

__all__ = [
    "Change", "ChangeRecord", "FileFix", "FixManifest", "FixRequest", "Options", "PatchPlan", "Strategy",
    "Target", "apply", "expand", "fix", "fix_file", "needs_recovery", "recover",
]
