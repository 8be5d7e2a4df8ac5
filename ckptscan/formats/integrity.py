"""One verdict for a local file: a Keras archive, not one, or one that cannot be read.

>>> from ckptscan.formats.integrity import classify
>>> classify("epoch_07.weights.h5")                                   # doctest: +SKIP
Verdict(outcome='unreadable', reason='truncated: HDF5 end-of-file address 400864 > file size 200000', format=None)

Three outcomes, the same wherever a file is met (named on the command line, found in a
folder, a shard of an index):

``keras``
    A Keras weight archive whose bytes are all there: scanned.
``not_keras``
    A well-formed HDF5 file or zip without Keras structure, or an unrelated file whose
    name does not claim to be a Keras archive. A folder scan skips and lists it.
``unreadable``
    The name claims a Keras archive (``.keras``, ``.h5``, ``.hdf5``, ``.weights.h5``,
    ``.weights.json``, a shard named by an index) or the bytes start with an HDF5 or zip
    signature, and it cannot be read: empty, cut short at any byte, corrupt, random
    bytes or text. Exit 2.

Truncation is found from the bytes that must be there, without opening anything with
HDF5: the superblock's end-of-file address against the file's size (and the weights
member's size inside a ``.keras`` zip, and every shard of a sharded index); the zip's
end-of-central-directory record, its central directory and every member's local
header and data lying inside the file. :func:`integrity_problem` runs those checks
alone (the openers call it first); :func:`classify` adds the Keras-structure test.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CkptscanError, NotAnArchiveError
from .h5util import HDF5_MAGIC, find_hdf5_superblock

__all__ = ["KERAS_SUFFIXES", "Verdict", "claims_keras", "classify", "hdf5_eof_problem", "integrity_problem"]

#: File names that claim to be a Keras weight archive (checked lower-cased, longest first).
KERAS_SUFFIXES = (".weights.json", ".weights.h5", ".keras", ".hdf5", ".h5")
ZIP_LOCAL = b"PK\x03\x04"
ZIP_EMPTY = b"PK\x05\x06"
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
#: Members of a zip whose local headers are checked (a .keras holds three).
MAX_CHECKED_MEMBERS = 10_000
#: Largest sharded index read to find its shards.
MAX_INDEX_BYTES = 64 << 20
_UNDEFINED = (1 << 64) - 1


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
    def keras(cls, fmt: str) -> "Verdict":
        """A readable Keras archive of format ``fmt``."""
        return cls("keras", "", fmt)

    @classmethod
    def not_keras(cls, reason: str) -> "Verdict":
        """Not a Keras archive (skipped in a folder)."""
        return cls("not_keras", reason)

    @classmethod
    def unreadable(cls, reason: str) -> "Verdict":
        """Claims to be a Keras archive but cannot be read."""
        return cls("unreadable", reason)


def claims_keras(path: str | os.PathLike) -> bool:
    """True when the file name says "Keras weight archive"."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.endswith(KERAS_SUFFIXES)


# --- HDF5 -----------------------------------------------------------------------------


def _nbytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def _u(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def hdf5_eof_problem(fp: BinaryIO, start: int, size: int, what: str = "file") -> str | None:
    """Why the HDF5 file in ``[start, start+size)`` of ``fp`` is cut short, or None.

    Reads the superblock (versions 0-3) and compares its end-of-file address with
    ``size``. ``what`` names the container in the reason (``file``, ``member
    model.weights.h5``).
    """
    fp.seek(start)
    head = fp.read(min(size, 2048 + 8))
    off = find_hdf5_superblock(head)
    if off is None:
        if size < len(HDF5_MAGIC) and HDF5_MAGIC.startswith(head):
            return f"truncated: {what} is {_nbytes(size)}, shorter than the HDF5 signature"
        return None
    fp.seek(start + off)
    sb = fp.read(128)
    if len(sb) < 9:
        return f"truncated: HDF5 superblock incomplete ({what} size {size})"
    version = sb[8]
    if version in (0, 1):
        if len(sb) < 16:
            return f"truncated: HDF5 superblock incomplete ({what} size {size})"
        osize = sb[13]
        at = 24 if version == 0 else 28
    elif version in (2, 3):
        osize = sb[9]
        at = 12
    else:
        return None  # a superblock version this reader does not know: leave it to HDF5
    if osize not in (2, 4, 8):
        return None
    eof_at = at + 2 * osize
    if len(sb) < eof_at + osize:
        return f"truncated: HDF5 superblock incomplete ({what} size {size})"
    eof = _u(sb[eof_at : eof_at + osize])
    if eof == (1 << (8 * osize)) - 1:  # undefined address
        return None
    if eof > size:
        return f"truncated: HDF5 end-of-file address {eof} > {what} size {size}"
    return None


# --- zip ------------------------------------------------------------------------------


def _zip_problem(fp: BinaryIO, size: int) -> str | None:
    """Why the zip in ``fp`` (``size`` bytes) is cut short or inconsistent, or None."""
    tail_len = min(size, 65535 + 22)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    pos = tail.rfind(_EOCD)
    while pos >= 0 and len(tail) - pos < 22:
        pos = tail.rfind(_EOCD, 0, pos)
    if pos < 0:
        return f"truncated: zip end-of-central-directory record not found (file size {size})"
    eocd = tail[pos : pos + 22]
    entries, cd_size, cd_off = struct.unpack("<HII", eocd[10:20])
    eocd_at = size - tail_len + pos
    zip64 = cd_off == 0xFFFFFFFF or cd_size == 0xFFFFFFFF or entries == 0xFFFF
    if not zip64 and cd_off + cd_size > eocd_at:
        return (f"truncated: zip central directory ends at {cd_off + cd_size} "
                f"past its end record at {eocd_at} (file size {size})")
    fp.seek(0)
    try:
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        return f"corrupt zip: central directory unreadable ({exc})"
    with zf:
        infos = zf.infolist()
        limit = cd_off if not zip64 else size
        for info in infos[:MAX_CHECKED_MEMBERS]:
            fp.seek(info.header_offset)
            header = fp.read(30)
            if len(header) < 30:
                return f"truncated: zip member {info.filename} local header past the end of the file"
            if header[:4] != ZIP_LOCAL:
                return f"corrupt zip: member {info.filename} has no local header at offset {info.header_offset}"
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            data_start = info.header_offset + 30 + name_len + extra_len
            end = data_start + info.compress_size
            if end > limit:
                return (f"truncated: zip member {info.filename} data ends at {end} "
                        f"past the central directory at {limit} (file size {size})")
        weights = [i for i in infos if i.filename == "model.weights.h5"]
        if len(weights) == 1 and weights[0].compress_type == zipfile.ZIP_STORED:
            info = weights[0]
            fp.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", fp.read(4))
            start = info.header_offset + 30 + name_len + extra_len
            problem = hdf5_eof_problem(fp, start, info.file_size, "member model.weights.h5")
            if problem:
                return problem
    return None


# --- sharded index ----------------------------------------------------------------------


def _shard_names(doc: object) -> list[str] | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        return None
    names: list[str] = []
    for value in doc["weight_map"].values():
        for n in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if isinstance(n, str) and n not in names:
                names.append(n)
    return names


def _index_problem(path: str, doc: object) -> str | None:
    names = _shard_names(doc) or []
    folder = os.path.dirname(path)
    for name in names:
        if os.path.basename(name) != name or name in ("", ".", ".."):
            continue  # refused by the reader as path traversal
        shard = os.path.join(folder, name)
        if not os.path.isfile(shard):
            return f"shard {name} is missing"
        problem = _local_problem(shard)
        if problem:
            return f"shard {name}: {problem}"
    return None


def _read_index(path: str, size: int) -> object:
    if size > MAX_INDEX_BYTES:
        return None
    with open(path, "rb") as fh:
        raw = fh.read(MAX_INDEX_BYTES + 1)
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


# --- entry points -------------------------------------------------------------------------


def _local_problem(path: str) -> str | None:
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        head = fp.read(8)
        if size == 0:
            return None  # "empty file" is the reader's own message
        if head[:4] == ZIP_LOCAL or head[:4] == ZIP_EMPTY:
            return _zip_problem(fp, size)
        if size < 4 and ZIP_LOCAL.startswith(head):
            return f"truncated: file is {_nbytes(size)}, shorter than the zip signature"
        return hdf5_eof_problem(fp, 0, size)


def integrity_problem(path: str | os.PathLike) -> str | None:
    """Why the local file or ``.keras`` folder at ``path`` is cut short, or None.

    Structural checks only (HDF5 end-of-file address, zip directory and members,
    shards of a sharded index); whether it is a *Keras* archive is :func:`classify`'s
    question. A path that cannot be read at all gives None: the reader reports it.
    """
    p = os.fspath(path)
    try:
        if os.path.isdir(p):
            inner = os.path.join(p, "model.weights.h5")
            if os.path.isfile(inner):
                problem = _local_problem(inner)
                return f"model.weights.h5: {problem}" if problem else None
            index = os.path.join(p, "model.weights.json")
            if os.path.isfile(index):
                return _index_problem(index, _read_index(index, os.path.getsize(index)))
            return None
        if not os.path.isfile(p):
            return None
        problem = _local_problem(p)
        if problem:
            return problem
        size = os.path.getsize(p)
        with open(p, "rb") as fh:
            first = fh.read(64).lstrip()[:1]
        if first == b"{":
            return _index_problem(p, _read_index(p, size))
    except OSError:
        return None
    return None


def classify(path: str | os.PathLike, claimed: bool | None = None, strict: bool = False) -> Verdict:
    """The :class:`Verdict` for a local file or ``.keras`` folder.

    ``claimed`` says the file is known to be part of a Keras archive (a shard named by
    an index); by default the file name decides (:data:`KERAS_SUFFIXES`). ``strict``
    makes a well-formed HDF5 file or zip without Keras structure unreadable too
    (``scan --strict``); unrelated files (text, images) stay ``not_keras``.
    """
    from . import detect

    p = os.fspath(path)
    claims = claims_keras(p) if claimed is None else claimed
    problem = integrity_problem(p)
    if problem:
        return Verdict.unreadable(problem)
    try:
        fmt = detect(p)
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
    return Verdict.keras(fmt)


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
