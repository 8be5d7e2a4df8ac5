"""Exceptions raised by ckptscan.

Every error a user can cause is a :class:`CkptscanError`; its ``str()`` is the one
line the CLI prints after ``ckptscan: error:``::

    CkptscanError                 base: ``<path>: <reason>``
    ├── NotAnArchiveError         not a Keras weight archive at all
    ├── UnsupportedFormatError    a Keras archive ckptscan will not read (pickled npz)
    ├── MalformedArchiveError     truncated, corrupt or hostile content
    └── PatchRefusedError         ``fix`` will not write (and wrote nothing)
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


class NotAnArchiveError(CkptscanError):
    """The bytes are not any Keras weight layout ckptscan knows."""


class UnsupportedFormatError(CkptscanError):
    """A Keras layout that ckptscan recognises but refuses to read."""


class MalformedArchiveError(CkptscanError):
    """A Keras archive whose content is truncated, inconsistent or unsafe."""


class PatchRefusedError(CkptscanError):
    """A repair that ckptscan refuses to perform; nothing was written."""
