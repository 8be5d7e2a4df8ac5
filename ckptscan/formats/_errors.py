"""The format boundary: every lower-level error becomes a ckptscan error here.

:func:`translate_errors` maps what h5py, zipfile, json and the memory cap raise onto
:mod:`ckptscan.errors` (``raise mapped from exc``); :class:`Refused` is how helpers that
do not know the file name refuse content; :func:`parse_json` is the one JSON parser of
the readers (bounded depth).
"""

from __future__ import annotations

import contextlib
import json
import re
import zipfile
from typing import Any, Iterator

from ..errors import (
    CkptscanError,
    LimitExceededError,
    MalformedArchiveError,
    UnsafeArchiveError,
)
from ..runtime.bounds import MAX_JSON_DEPTH
from ..runtime.memory import memory_exhausted, memory_reason
from ..runtime.timeout import expired

__all__ = ["Refused", "h5_reason", "parse_json", "translate_errors"]


class Refused(Exception):
    """Raised by helpers that do not know the file name; :func:`translate_errors`
    turns it into an :class:`~ckptscan.errors.UnsafeArchiveError` for the file."""

    def __init__(self, reason: str, unsafe: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.unsafe = unsafe


#: HDF5 library messages (lower-cased substrings) that mean "the bytes end too early".
_TRUNCATION_HINTS = ("truncated file", "file read failed", "addr overflow", "address overflow",
                     "eof", "end of file", "is beyond the end", "beyond eoa")
#: HDF5 library messages that mean "this is not an HDF5 file at all".
_SIGNATURE_HINTS = ("file signature not found",)


def h5_reason(exc: BaseException) -> str:
    """A short, stable reason for an error raised by h5py/HDF5 while reading."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    low = text.lower()
    if any(h in low for h in _SIGNATURE_HINTS):
        return "corrupt HDF5 file (superblock signature not found)"
    if any(h in low for h in _TRUNCATION_HINTS):
        return "truncated HDF5 file (data ends before the structures it declares)"
    first = text.splitlines()[0].strip() if text.strip() else type(exc).__name__
    # "Unable to synchronously open object (bad object header version number)"
    detail = re.search(r"\(([^()]*)\)\s*$", first)
    if detail and detail.group(1).strip():
        first = detail.group(1).strip()
    first = re.sub(r"^unable to (synchronously )?", "", first, flags=re.I)
    if len(first) > 160:
        first = first[:157] + "..."
    return f"corrupt HDF5 metadata ({first})"


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turn every error raised while reading ``path`` into a :class:`CkptscanError`.

    =============================  ==================================================
    raised below                   raised to the caller
    =============================  ==================================================
    :class:`CkptscanError`         unchanged
    :class:`Refused`               :class:`UnsafeArchiveError` (or Malformed)
    ``zipfile.BadZipFile``,        ``MalformedArchiveError: corrupt zip archive (…)``
    ``zlib``/``EOFError``
    ``json.JSONDecodeError``       ``MalformedArchiveError: invalid JSON (…)``
    ``RecursionError``             ``MalformedArchiveError: structure nested too deeply``
    ``MemoryError``                ``LimitExceededError: out of memory …``
    h5py ``OSError``/``KeyError``  ``MalformedArchiveError: truncated HDF5 file`` or
    /``ValueError``/``TypeError``  ``corrupt HDF5 metadata (<HDF5 detail>)``
    …
    =============================  ==================================================
    """
    try:
        yield
    except CkptscanError:
        raise
    except Exception as exc:
        late = expired()  # a read failed because the deadline passed: say so
        if late is not None:
            raise late from exc
        mapped = _map_error(exc, path)
        if mapped is None:
            raise
        raise mapped from (None if isinstance(exc, Refused) else exc)


def _map_error(exc: Exception, path: str) -> CkptscanError | None:
    """The ckptscan error for a lower-level exception (see :func:`translate_errors`)."""
    import zlib

    if isinstance(exc, Refused):
        return (UnsafeArchiveError if exc.unsafe else MalformedArchiveError)(path, exc.reason)
    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)):
        return MalformedArchiveError(path, f"corrupt zip archive ({str(exc) or type(exc).__name__})")
    if isinstance(exc, json.JSONDecodeError):
        msg = exc.msg.removesuffix(" at")
        return MalformedArchiveError(path, f"invalid JSON ({msg}, line {exc.lineno} column {exc.colno})")
    if isinstance(exc, UnicodeDecodeError):
        return MalformedArchiveError(path, f"text that is not UTF-8 ({exc.reason})")
    if isinstance(exc, RecursionError):
        return MalformedArchiveError(path, "structure nested too deeply")
    if isinstance(exc, MemoryError):
        memory_exhausted()  # the --max-memory cap: room to close the file and report it
        return LimitExceededError(path, memory_reason())
    # not AttributeError/AssertionError: from a reader they are a ckptscan bug, reported as one
    if isinstance(exc, (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError,
                        SystemError)):
        try:
            text = str(exc)
            if "memory allocation failed" in text:  # libhdf5 sized a buffer from corrupt metadata
                memory_exhausted()
                return LimitExceededError(path, memory_reason(exc))
            return MalformedArchiveError(path, h5_reason(exc))
        except MemoryError:
            memory_exhausted()
            return LimitExceededError(path, memory_reason(exc))
    return None


def parse_json(raw: bytes | str, what: str = "JSON") -> Any:
    """Parse a JSON document, refusing nesting deeper than :data:`MAX_JSON_DEPTH`.

    Never evaluates anything: plain :func:`json.loads`. Errors are left to
    :func:`translate_errors`; excessive depth raises :class:`Refused`.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    doc = json.loads(text)  # RecursionError past ~1000 levels: see translate_errors
    level = [doc] if type(doc) is dict or type(doc) is list else []
    depth = 1
    while level:  # iterative, one nesting level at a time: later code that recurses stays safe
        if depth > MAX_JSON_DEPTH:
            raise Refused(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep", unsafe=False)
        below: list = []
        add = below.append
        for node in level:
            for v in node.values() if type(node) is dict else node:
                if type(v) is dict or type(v) is list:  # json.loads builds no subclasses
                    add(v)
        level = below
        depth += 1
    return doc
