"""One verdict for a local file: a Keras archive, not one, or one that cannot be read.

>>> from ckptscan.formats.verdict import classify
>>> classify("epoch_07.weights.h5")                                   # doctest: +SKIP
Verdict(outcome='unreadable', reason='truncated: HDF5 end-of-file address 400864 > file size 200000', format=None)

Three outcomes, the same wherever a file is met (named on the command line, found in a
folder or a glob, a shard of an index):

``keras``
    A Keras weight archive whose bytes are all there: scanned.
``not_keras``
    A well-formed HDF5 file or zip without Keras structure, or an unrelated file whose
    name does not claim to be a Keras archive. A folder scan skips and lists it.
``unreadable``
    The name claims a Keras archive (``.keras``, ``.h5``, ``.hdf5``, ``.weights.h5``,
    ``.weights.json``, a shard named by an index) or the bytes start with an HDF5 or zip
    signature, and it cannot be read: empty, cut short at any byte (see
    :mod:`.integrity`; every shard of a sharded index too), corrupt, random bytes or
    text. Exit 2.

:func:`ckptscan.discover.discover` asks for the verdict of every file it walks.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

from ..errors import CkptscanError, NotAnArchiveError
from .h5util import find_hdf5_superblock
from .integrity import ZIP_EMPTY, ZIP_LOCAL, integrity_problem
from .layouts import SHARD_INDEX_MEMBER, detect, index_doc, safe_shard_name, shard_names, tf_layout
from .source import LocalSource

__all__ = ["KERAS_SUFFIXES", "Verdict", "claims_keras", "classify"]

#: File names that claim to be a Keras weight archive (checked lower-cased, longest first).
KERAS_SUFFIXES = (".weights.json", ".weights.h5", ".keras", ".hdf5", ".h5")


@dataclass(frozen=True)
class Verdict:
    """What a file is, for a scan: ``keras``, ``not_keras`` or ``unreadable``."""

    outcome: str
    """``keras`` (scan it), ``not_keras`` (skip and list) or ``unreadable`` (exit 2)."""
    reason: str = ""
    """Why, for ``not_keras`` and ``unreadable`` (one line, no path)."""
    format: str | None = None
    """The format id (:func:`ckptscan.formats.detect`) of a ``keras`` file."""

    @classmethod
    def keras(cls, fmt: str) -> Verdict:
        """A readable Keras archive of format ``fmt``."""
        return cls("keras", "", fmt)

    @classmethod
    def not_keras(cls, reason: str) -> Verdict:
        """Not a Keras archive (skipped in a folder)."""
        return cls("not_keras", reason)

    @classmethod
    def unreadable(cls, reason: str) -> Verdict:
        """Claims to be a Keras archive but cannot be read."""
        return cls("unreadable", reason)


def claims_keras(path: str | os.PathLike) -> bool:
    """True when the file name says "Keras weight archive"."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.endswith(KERAS_SUFFIXES)


def classify(path: str | os.PathLike, claimed: bool | None = None, strict: bool = False) -> Verdict:
    """The :class:`Verdict` for a local file or ``.keras`` folder.

    ``claimed`` says the file is known to be part of a Keras archive (a shard named by
    an index); by default the file name decides (:data:`KERAS_SUFFIXES`). ``strict``
    makes a well-formed HDF5 file or zip without Keras structure unreadable too
    (``scan --strict``); unrelated files (text, images) stay ``not_keras``.
    """
    p = os.fspath(path)
    claims = claims_keras(p) if claimed is None else claimed
    try:
        tf = tf_layout(LocalSource(p))  # TensorFlow layouts: their reader checks their bytes
    except CkptscanError as exc:
        return Verdict.unreadable(exc.reason)
    if tf is not None:
        return Verdict.keras(tf)
    problem = integrity_problem(p)
    if problem:
        return Verdict.unreadable(problem)
    try:
        fmt = detect(LocalSource(p))
    except NotAnArchiveError as exc:
        # opened fine as HDF5/zip (or a plain folder): well-formed, just not Keras
        if strict and _has_signature(p):
            return Verdict.unreadable(f"{exc.reason}; --strict")
        if os.path.isdir(p) or _has_signature(p) or not claims:
            return Verdict.not_keras(exc.reason)
        return Verdict.unreadable(exc.reason)
    except CkptscanError as exc:
        return Verdict.unreadable(exc.reason)
    if fmt == "keras-zip":
        reason = _zip_not_keras(p)
        if reason:
            return Verdict.unreadable(f"{reason}; --strict") if strict else Verdict.not_keras(reason)
    if fmt == "keras3-sharded" or fmt == "keras-dir" and os.path.isfile(os.path.join(p, SHARD_INDEX_MEMBER)):
        index = p if fmt == "keras3-sharded" else os.path.join(p, SHARD_INDEX_MEMBER)
        problem = _shards_problem(index)
        if problem:
            return Verdict.unreadable(problem)
    return Verdict.keras(fmt)


def _shards_problem(index: str) -> str | None:
    """Why a shard listed by the local index at ``index`` is missing or cut short, or None."""
    src = LocalSource(index)
    try:
        names = shard_names(src, index_doc(src))
    except CkptscanError as exc:
        return exc.reason
    for name in names:
        if not safe_shard_name(name):
            continue  # refused by the reader as path traversal
        shard = os.path.join(os.path.dirname(index), name)
        if not os.path.isfile(shard):
            return f"shard {name} is missing"
        problem = integrity_problem(shard)
        if problem:
            return f"shard {name}: {problem}"
    return None


def _has_signature(p: str) -> bool:
    """The bytes start like an HDF5 file or a zip (so failing to read them is an error)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    return head[:4] in (ZIP_LOCAL, ZIP_EMPTY) or find_hdf5_superblock(head) is not None


def _zip_not_keras(p: str) -> str | None:
    """Why a well-formed zip is not a ``.keras`` model, or None if it is one."""
    with zipfile.ZipFile(p) as zf:
        names = set(zf.namelist())
    if names & {"config.json", "model.weights.h5", "model.weights.npz"}:
        return None
    return "zip archive that is not a .keras model (no config.json or model.weights.h5)"
