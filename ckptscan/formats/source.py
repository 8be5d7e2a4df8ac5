"""Where a checkpoint's bytes are: the small interface every layout opener reads through.

A :class:`Source` is one file or folder, local (:class:`LocalSource`) or behind a URI
(:class:`ckptscan.formats.remote.RemoteSource`). The openers in
:mod:`ckptscan.formats.layouts` only ask it for what a layout needs (the first bytes, a
small JSON member, a seekable reader, an open HDF5 file, a file next to it), so each
layout has one opener for local and remote sources alike.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

import h5py

from ..errors import NotAnArchiveError, UnsafeArchiveError
from ..runtime.bounds import MAX_JSON_BYTES
from .h5util import open_h5
from .zipmember import FileWindow

#: Bytes read to recognise a layout (an HDF5 superblock may sit at 0, 512, 1024, 2048 or 4096).
HEAD_BYTES = 8192


class Source(ABC):
    """One file or folder holding (part of) a checkpoint."""

    where: str
    """The name errors report (the path or URI as the user gave it)."""
    direct_io: bool = True
    """True when tensor values may be read with ``pread`` on a local file."""
    keeps_reader: bool = False
    """True when a zip member's window reads through :meth:`reader` (kept open with it)."""

    @abstractmethod
    def is_dir(self) -> bool:
        """True for a folder."""

    @abstractmethod
    def is_file(self) -> bool:
        """True for an existing regular file."""

    @abstractmethod
    def child(self, name: str) -> Source:
        """The entry ``name`` of this folder."""

    @abstractmethod
    def sibling(self, name: str) -> Source:
        """The file ``name`` next to this one (a shard next to its index)."""

    @abstractmethod
    def head(self, n: int = HEAD_BYTES) -> bytes:
        """The first ``n`` bytes (NotAnArchiveError: missing, unreadable or empty)."""

    @abstractmethod
    def read_small(self, what: str) -> bytes:
        """The whole content, refused above :data:`~ckptscan.runtime.bounds.MAX_JSON_BYTES`."""

    @abstractmethod
    def reader(self) -> BinaryIO:
        """A seekable binary file object over the content (the caller closes it)."""

    @abstractmethod
    def window(self, reader: BinaryIO, start: int, size: int) -> BinaryIO:
        """A file object over bytes ``[start, start + size)`` (a stored zip member)."""

    @abstractmethod
    def open_h5(self, where: str | None = None) -> tuple[h5py.File, Any]:
        """The HDF5 file, and the file object to close with it (or None); errors name ``where``."""

    def release(self) -> None:  # noqa: B027 - an optional hook: doing nothing is the default
        """Close what :meth:`head` or :meth:`read_small` kept open (nothing, locally)."""

    def finish(self, ckpt):
        """The checkpoint opened from this source, with what the source adds to it."""
        return ckpt


def refuse_large(where: str, what: str, size: int) -> None:
    """Refuse a JSON document larger than the bound before reading it."""
    if size > MAX_JSON_BYTES:
        raise UnsafeArchiveError(where, f"{what} file is {size} bytes (too large)")


class LocalSource(Source):
    """A local file or folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.where = str(path)

    def __repr__(self) -> str:
        return f"<LocalSource {self.where!r}>"

    def is_dir(self) -> bool:
        return self.path.is_dir()

    def is_file(self) -> bool:
        return self.path.is_file()

    def child(self, name: str) -> LocalSource:
        return LocalSource(self.path / name)

    def sibling(self, name: str) -> LocalSource:
        return LocalSource(self.path.parent / name)

    def head(self, n: int = HEAD_BYTES) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(n)
        except FileNotFoundError as exc:
            raise NotAnArchiveError(self.where, "no such file or directory") from exc
        except IsADirectoryError as exc:  # pragma: no cover - folders are opened as folders
            raise NotAnArchiveError(self.where, "is a directory") from exc
        except PermissionError as exc:
            raise NotAnArchiveError(self.where, "permission denied") from exc
        except OSError as exc:
            raise NotAnArchiveError(self.where, f"cannot read ({exc.strerror or exc})") from exc
        if not head:
            raise NotAnArchiveError(self.where, "empty file")
        return head

    def read_small(self, what: str) -> bytes:
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise NotAnArchiveError(self.where, "no such file or directory") from exc
        refuse_large(self.where, what, size)
        return self.path.read_bytes()

    def reader(self) -> BinaryIO:
        return open(self.path, "rb")

    def window(self, reader: BinaryIO, start: int, size: int) -> BinaryIO:
        return FileWindow(self.where, start, size)

    def open_h5(self, where: str | None = None) -> tuple[h5py.File, Any]:
        return open_h5(str(self.path), where or self.where), None
