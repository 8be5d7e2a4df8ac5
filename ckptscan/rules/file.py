"""File rules: what the file on disk says before it is read."""

from __future__ import annotations

import os
from typing import Iterator

from ..formats import journal_unit
from ..journal import journal_path, needs_recovery
from ..report import Severity
from .base import FileContext, Hit, Scope, rule


@rule(
    "JRN001",
    "interrupted-fix",
    Severity.ERROR,
    Scope.FILE,
    "{path}: a ckptscan fix was interrupted while writing this checkpoint and left {what}; "
    "it may hold half-written values until it is recovered",
    "Run `ckptscan recover PATH` to roll the interrupted write back (or `ckptscan fix PATH`, which "
    "recovers first); scan, inspect and diff never write.",
    category="file",
)
def interrupted_fix(ctx: FileContext) -> Iterator[Hit]:
    """A ``ckptscan fix`` was interrupted mid-write: its journal (or temporaries) is still there.

    ## What it does
    Looks for the journal ``<file>.ckptscan-journal`` (and the temporary files) a
    ``ckptscan fix`` writes before it patches a checkpoint in place and removes when
    it is done. A TensorFlow checkpoint has one journal, next to its ``.index``,
    whether it is named by the index, its prefix, its folder or its SavedModel. Reported before the file is read; the file is then scanned as it is.

    ## Why is this bad?
    The fix was stopped (killed, a crash, a power cut) between writing the journal and
    removing it: some of the planned bytes may be written and others not, so the
    values scanned now may be neither the original nor the repaired ones. The journal
    holds the original bytes; until it is rolled back a later ``fix`` or a manual copy
    could lose them. Readers never roll it back themselves: ``scan``, ``inspect`` and
    ``diff`` never write to the files they read.

    ## Example
    ``model.keras: a ckptscan fix was interrupted while writing this checkpoint and left
    its journal model.keras.ckptscan-journal; it may hold half-written values until it is
    recovered``

    ## Fix
    ``ckptscan recover model.keras`` rolls every journaled region back to its original
    bytes (refusing if someone else changed them since) and removes stale temporaries;
    ``ckptscan fix model.keras`` does the same first, then repairs.

    ## Known problems
    Local files only: an object behind a URI is never patched in place, so it has no
    journal.
    """
    unit = journal_unit(ctx.path)  # a TensorFlow checkpoint journals under its .index, whatever its name
    if not needs_recovery(unit):
        return
    jp = journal_path(unit)
    what = f"its journal {jp}" if os.path.exists(jp) else "temporary files next to it"
    yield Hit("", "", {"path": ctx.path, "what": what})
