"""Backups that never overwrite: ``<file>.bak``, then ``<file>.bak.1``, ``.bak.2`` …

A second ``fix --backup`` of the same file must not replace the first backup (which
holds the original bytes) with the already-patched file. The copy is staged in a
temporary file and published with :func:`os.link`, which fails instead of replacing
an existing name, so even a backup created between the check and the publish is kept.
"""

from __future__ import annotations

import os

from .. import journal
from ..errors import PatchRefusedError

__all__ = ["MAX_BACKUPS", "backup_copy", "backup_names"]

#: Numbered backups tried before giving up.
MAX_BACKUPS = 10_000


def backup_names(path: str):
    """``path.bak``, ``path.bak.1``, ``path.bak.2`` …"""
    yield path + ".bak"
    for i in range(1, MAX_BACKUPS):
        yield f"{path}.bak.{i}"


def _publish(tmp: str, dst: str) -> bool:
    """Give ``tmp`` the name ``dst`` unless ``dst`` exists; True when done."""
    try:
        os.link(tmp, dst)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: check, then rename (under the fix lock)
        if os.path.lexists(dst):
            return False
        os.replace(tmp, dst)
        return True


def backup_copy(src: str, dst: str | None = None) -> str:
    """Copy ``src`` to the first free backup name (or exactly ``dst``); the name used.

    ``dst`` given (``--backup-to``): refused with :class:`PatchRefusedError` when it
    exists. Nothing is ever overwritten.
    """
    names = [dst] if dst is not None else backup_names(src)
    # staged beside the backup (a hard link cannot cross file systems); the fixed name
    # next to src is the one an interrupted run's recovery removes
    tmp = journal.temp_path(dst if dst is not None else src + ".bak")
    try:
        journal.copy_durable(src, tmp)
        for name in names:
            if _publish(tmp, name):
                journal.fsync_dir(os.path.dirname(os.path.abspath(name)))
                return name
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    if dst is not None:
        raise PatchRefusedError(src, f"backup {dst} already exists; not overwritten (choose another --backup-to)")
    raise PatchRefusedError(src, f"{MAX_BACKUPS} backups of this file exist; not overwritten")
