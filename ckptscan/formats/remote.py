"""Remote checkpoints through fsspec: ``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``hf://``…

Optional extra: ``pip install 'ckptscan[remote]'`` (fsspec with the HTTP and S3
backends; ``gs://``, ``az://`` and ``hf://`` need gcsfs, adlfs or huggingface_hub).

Only the byte ranges that are needed are read. :class:`RangeReader` is a read-only,
seekable file object over the remote object: small reads (HDF5 metadata, zip
headers) go through an LRU block cache, large reads (tensor data) are one ranged
request each and are not cached. HDF5 is opened by h5py over that file object; a
``.keras`` zip's ``model.weights.h5`` member is located from the zip's central
directory (end of the object) and opened through a window on the same reader, so
``inspect`` of a large ``.keras`` fetches a small fraction of it and ``scan`` about
the whole of it once. :class:`RemoteSource` is the :class:`~ckptscan.formats.source.Source`
the layout openers read through: the result is the same
:class:`~ckptscan.formats.Checkpoint` a local file gives, with ``direct_io = False``
(values are read through h5py).

Credentials come only from the environment and the standard configuration files of
each backend (``AWS_*`` variables, ``~/.aws``, ``FSSPEC_<PROTOCOL>_<OPTION>``
variables, ``GOOGLE_APPLICATION_CREDENTIALS``…), never from the command line.

Set ``CKPTSCAN_REMOTE_STATS=1`` to print the bytes fetched per object on stderr.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import h5py

from ..errors import CkptscanError, MalformedArchiveError, NotAnArchiveError
from .h5util import open_h5
from .source import HEAD_BYTES, Source, refuse_large
from .zipmember import SeekableReader

REMOTE_HINT = "remote URIs need the optional extra: pip install 'ckptscan[remote]'"
#: Block size of the metadata cache (bytes). Override: ``CKPTSCAN_REMOTE_BLOCK``.
DEFAULT_BLOCK = 32 << 10
#: Reads of at least this many bytes bypass the cache (one ranged request each).
LARGE_READ = 256 << 10
#: Largest amount of cached metadata per object.
CACHE_BYTES = 64 << 20


class RemoteError(CkptscanError):
    """A remote object that cannot be reached or read (network, permissions, missing extra)."""


#: A URI scheme (RFC 3986): a letter, then letters, digits, ``+``, ``-`` or ``.``.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def is_uri(path: object) -> bool:
    """True for ``scheme://…`` strings (remote or ``file://``), fsspec's chained
    ``simplecache::s3://…`` included; ``a b://x`` is a local path.

    The protocol is split off by fsspec's own parser when fsspec is installed, else at
    the first ``://``; each of its ``::``-separated parts must be a URI scheme.
    """
    s = str(path)
    if "://" not in s:
        return False
    try:
        from fsspec.core import split_protocol
    except ImportError:  # the remote extra is absent: the URI is still recognised (and refused with a hint)
        protocol = s.split("://", 1)[0]
    else:
        protocol = split_protocol(s)[0]
    return bool(protocol) and all(_SCHEME.fullmatch(p) for p in protocol.split("::"))


@dataclass
class FetchStats:
    """Bytes and requests one :class:`RangeReader` sent to its backend."""

    size: int = 0
    """Size of the remote object."""
    bytes_fetched: int = 0
    requests: int = 0

    @property
    def fraction(self) -> float:
        """``bytes_fetched / size``."""
        return self.bytes_fetched / self.size if self.size else 0.0


class RangeReader(SeekableReader):
    """A read-only, seekable file object over a remote object, by ranged reads.

    Reads smaller than :data:`LARGE_READ` are served from an LRU cache of
    ``block_size`` blocks (adjacent missing blocks fetched in one request); larger
    ones are fetched as they are, uncached.
    """

    def __init__(self, fs, path: str, where: str, size: int | None = None,
                 block_size: int | None = None, stats: FetchStats | None = None,
                 total: FetchStats | None = None):
        super().__init__()
        self.fs = fs
        self.path = path
        self.where = where
        self.block = int(block_size or os.environ.get("CKPTSCAN_REMOTE_BLOCK", DEFAULT_BLOCK))
        self.stats = stats or FetchStats()
        self.size = size if size is not None else backend_call(where, fs.size, path)
        if self.size is None:  # some servers answer HEAD without a length
            self.size = backend_call(where, fs.size, path)
        if self.size is None:
            raise RemoteError(where, "the server does not report the object's size (no random access)")
        self.stats.size = self.size
        self.total = total
        if total is not None:
            total.size += self.size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._pos = 0
        # A backend without its own ranged cat_file (HfFileSystem…) inherits fsspec's, which
        # opens a buffered file: with its default read-ahead cache every small read would
        # fetch a 5 MB block. cache_type="none" makes each read exactly one ranged request.
        self._cat_kw = {"cache_type": "none"} if _generic_cat_file(fs) else {}

    # --- io protocol (seek/tell from SeekableReader) -------------------------------
    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self._pos))
        if n == 0:
            return 0
        data = self.pread(self._pos, n)
        memoryview(b)[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        n = max(0, min(n, self.size - self._pos))
        data = self.pread(self._pos, n) if n else b""
        self._pos += len(data)
        return data

    # --- ranged reads ------------------------------------------------------------
    def _fetch(self, start: int, end: int) -> bytes:
        try:
            data = backend_call(self.where, self.fs.cat_file, self.path, start=start, end=end, **self._cat_kw)
        except RemoteError as exc:
            if not (self._cat_kw and isinstance(exc.__cause__, TypeError) and "cache_type" in str(exc.__cause__)):
                raise
            self._cat_kw = {}  # a backend whose open() takes no cache_type: its own buffering then
            data = backend_call(self.where, self.fs.cat_file, self.path, start=start, end=end)
        for st in (self.stats, self.total):
            if st is not None:
                st.requests += 1
                st.bytes_fetched += len(data)
        if len(data) != end - start:
            if len(data) == self.size and start != 0:  # server ignored Range: whole object came back
                data = data[start:end]
            elif len(data) > end - start:
                data = data[: end - start]
            else:
                raise MalformedArchiveError(self.where, f"remote object ends early at byte {start + len(data)} (truncated)")
        return data

    def pread(self, start: int, n: int) -> bytes:
        """``n`` bytes at ``start`` (fewer only at the end of the object)."""
        end = min(start + n, self.size)
        if end <= start:
            return b""
        if end - start >= LARGE_READ:
            return self._fetch(start, end)
        first, last = start // self.block, (end - 1) // self.block
        missing = [i for i in range(first, last + 1) if i not in self._cache]
        run: list[int] = []
        for i in missing + [None]:
            if run and (i is None or i != run[-1] + 1):
                lo, hi = run[0] * self.block, min((run[-1] + 1) * self.block, self.size)
                data = self._fetch(lo, hi)
                for k, blk in enumerate(run):
                    self._store(blk, data[k * self.block : (k + 1) * self.block])
                run = []
            if i is not None:
                run.append(i)
        parts = []
        for i in range(first, last + 1):
            blk = self._cache[i]
            self._cache.move_to_end(i)
            parts.append(blk)
        joined = b"".join(parts)
        off = start - first * self.block
        return joined[off : off + (end - start)]

    def _store(self, i: int, data: bytes) -> None:
        self._cache[i] = data
        self._cached += len(data)
        while self._cached > CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)

    def close(self) -> None:
        if not self.closed:
            self._cache.clear()
            if os.environ.get("CKPTSCAN_REMOTE_STATS"):
                s = self.stats
                sys.stderr.write(
                    f"ckptscan: remote: {self.where}: fetched {s.bytes_fetched} of {s.size} bytes "
                    f"({100 * s.fraction:.1f}%) in {s.requests} requests\n"
                )
        super().close()


class WindowReader(SeekableReader):
    """A read-only view of ``[start, start + size)`` of a :class:`RangeReader` (a zip member)."""

    def __init__(self, reader: RangeReader, start: int, size: int, own: bool = True):
        super().__init__()
        self.reader, self.start, self.size, self._own = reader, start, size, own
        self._pos = 0

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self._pos))
        if n == 0:
            return 0
        data = self.reader.pread(self.start + self._pos, n)
        memoryview(b)[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed and self._own:
            self.reader.close()
        super().close()


def _generic_cat_file(fs) -> bool:
    """True when ``fs`` reads ranges through fsspec's generic ``open``-based ``cat_file``."""
    try:
        from fsspec.spec import AbstractFileSystem
    except ImportError:  # pragma: no cover - fsspec is the remote extra
        return False
    if getattr(fs, "async_impl", False):  # async backends (HTTP, S3, GCS, Azure) have a ranged _cat_file
        return False
    return getattr(type(fs), "cat_file", None) is AbstractFileSystem.cat_file and not _is_local(fs)


def _is_local(fs) -> bool:
    try:
        from fsspec.implementations.local import LocalFileSystem
    except ImportError:  # pragma: no cover
        return False
    return isinstance(fs, LocalFileSystem)


def backend_call(where: str, fn, *args, **kwargs):
    """Call a backend function, mapping its errors to ckptscan errors."""
    try:
        return fn(*args, **kwargs)
    except CkptscanError:
        raise
    except FileNotFoundError as exc:
        raise NotAnArchiveError(where, "no such file or directory") from exc
    except PermissionError as exc:
        raise RemoteError(where, f"permission denied ({_one_line(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 - every backend has its own exception family
        raise RemoteError(where, f"cannot read ({type(exc).__name__}: {_one_line(exc)})") from exc


def _one_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return s.splitlines()[0] if s else type(exc).__name__


def filesystem(uri: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` for ``uri``; a one-line hint when the extra is missing."""
    try:
        import fsspec
    except ImportError as exc:
        raise RemoteError(uri, REMOTE_HINT) from exc
    try:
        return fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except ImportError as exc:
        proto = uri.split("://", 1)[0]
        raise RemoteError(uri, f"{proto}:// needs a backend package: {_one_line(exc)}") from exc
    except ValueError as exc:
        raise RemoteError(uri, f"unsupported URI ({_one_line(exc)})") from exc


class RemoteSource(Source):
    """An object or folder behind a URI (fsspec), read by ranged requests.

    ``stats`` counts what every reader of the checkpoint fetched; the top-level object's
    reader also records its size there (``remote_stats``).
    """

    direct_io = False
    keeps_reader = True

    def __init__(self, fs, path: str, uri: str, stats: FetchStats, block_size: int | None = None,
                 top: bool = False, info: dict | None = None):
        self.fs, self.path, self.where, self.stats = fs, path, uri, stats
        self.block_size, self.top, self._info = block_size, top, info
        self._reader: RangeReader | None = None

    def __repr__(self) -> str:
        return f"<RemoteSource {self.where!r}>"

    def _stat(self) -> dict:
        if self._info is None:
            self._info = backend_call(self.where, self.fs.info, self.path)
        return self._info

    def is_dir(self) -> bool:
        return self._stat().get("type") == "directory"

    def kind(self) -> str:
        """``file``, ``directory``, or ``missing`` (no object by that name: maybe a
        TensorFlow prefix, or a folder a plain HTTP server cannot describe)."""
        return str(self._stat().get("type") or "file")

    def is_file(self) -> bool:
        return bool(backend_call(self.where, self.fs.isfile, self.path))

    def child(self, name: str) -> RemoteSource:
        return RemoteSource(self.fs, posixpath.join(self.path, name), f"{self.where.rstrip('/')}/{name}",
                            self.stats, self.block_size)

    def sibling(self, name: str) -> RemoteSource:
        return RemoteSource(self.fs, posixpath.join(posixpath.dirname(self.path), name),
                            f"{self.where.rsplit('/', 1)[0]}/{name}", self.stats, self.block_size)

    def reader(self) -> RangeReader:
        if self._reader is None or self._reader.closed:
            size = self._info.get("size") if self._info else None
            if self.top:
                self._reader = RangeReader(self.fs, self.path, self.where, size=size, block_size=self.block_size,
                                           stats=self.stats)
            else:
                self._reader = RangeReader(self.fs, self.path, self.where, size=size, block_size=self.block_size,
                                           total=self.stats)
        return self._reader

    def head(self, n: int = HEAD_BYTES) -> bytes:
        r = self.reader()
        if r.size == 0:
            raise NotAnArchiveError(self.where, "empty file")
        return r.pread(0, min(n, r.size))

    def read_small(self, what: str) -> bytes:
        if self._reader is not None and not self._reader.closed:  # already open: no second request for the size
            refuse_large(self.where, what, self._reader.size)
            return self._reader.pread(0, self._reader.size)
        size = backend_call(self.where, self.fs.size, self.path)
        if size is not None:
            refuse_large(self.where, what, size)
        return backend_call(self.where, self.fs.cat_file, self.path)

    def window(self, reader: BinaryIO, start: int, size: int) -> BinaryIO:
        return WindowReader(reader, start, size)

    def open_h5(self, where: str | None = None) -> tuple[h5py.File, Any]:
        r = self.reader()
        try:
            return open_h5(r, where or self.where), r
        except BaseException:
            r.close()
            raise

    def release(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def finish(self, ckpt):
        ckpt.direct_io = False
        ckpt.remote_stats = self.stats
        return ckpt


def remote_source(uri: str, storage_options: dict | None = None, block_size: int | None = None) -> RemoteSource:
    """The :class:`RemoteSource` of ``uri`` (one metadata request; never a listing of a file)."""
    fs, path = filesystem(uri, storage_options)
    stats = FetchStats()
    try:
        info = backend_call(uri, fs.info, path)
    except NotAnArchiveError:  # a TensorFlow prefix names no object: the openers decide (reading says "no such file")
        info = {"type": "missing"}
    return RemoteSource(fs, path, uri, stats, block_size, top=True, info=info)


def download(uri: str, dest: str | os.PathLike | None = None, storage_options: dict | None = None) -> str:
    """Copy a remote object to a local file (for ``fix``, which writes a patched local copy)."""
    fs, path = filesystem(uri, storage_options)
    if dest is None:
        fd, dest = tempfile.mkstemp(prefix="ckptscan-remote-", suffix=posixpath.splitext(path)[1] or ".bin")
        os.close(fd)
    backend_call(uri, fs.get_file, path, str(dest))
    return str(dest)
