"""Exceptions raised by ckptscan.

Every error a user can cause is a :class:`CkptscanError`; its ``str()`` is the one
line the CLI prints after ``ckptscan: error:``::

    CkptscanError                 base: ``<path>: <reason>``
    ├── NotAnArchiveError         not a Keras weight archive at all
    ├── UnsupportedFormatError    a Keras archive ckptscan will not read (pickled npz)
    ├── MalformedArchiveError     truncated, corrupt or inconsistent content
    │   └── UnsafeArchiveError    hostile content refused: links out of the file,
    │                             external storage, zip/shape bombs, path traversal
    ├── LimitExceededError        a per-file resource limit was hit
    │   └── FileTimeoutError      ``--timeout`` seconds elapsed on one file
    └── PatchRefusedError         ``fix`` will not write (and wrote nothing)

Readers raise these at the format boundary (:func:`ckptscan.formats._errors.translate_errors`
maps h5py, zip, JSON, recursion and memory errors); nothing else escapes a reader.
"""

from __future__ import annotations


class CkptscanError(Exception):
    """Base class: a problem with one input file, reported as ``path: reason``."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self):  # keep (path, reason) across process boundaries
        return (type(self), (self.path, self.reason))


class NotAnArchiveError(CkptscanError):
    """The bytes are not any Keras weight layout ckptscan knows."""


class UnsupportedFormatError(CkptscanError):
    """A Keras layout that ckptscan recognises but refuses to read."""


class MalformedArchiveError(CkptscanError):
    """A Keras archive whose content is truncated, inconsistent or unsafe."""


class UnsafeArchiveError(MalformedArchiveError):
    """Content that would make a reader leave the file or exhaust memory; refused.

    Soft and external links, external-storage and virtual datasets, zip members that
    expand absurdly, datasets declaring far more data than they store, and shard or
    member names that point outside the archive's folder.
    """


class LimitExceededError(CkptscanError):
    """A per-file resource limit (time, memory) was exceeded; the file was skipped."""


class FileTimeoutError(LimitExceededError):
    """Reading one file took longer than ``--timeout`` seconds."""


class PatchRefusedError(CkptscanError):
    """A repair that ckptscan refuses to perform; nothing was written."""
