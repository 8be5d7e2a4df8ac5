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
the whole of it once. The result is the same :class:`~ckptscan.formats.Checkpoint`
a local file gives, with ``direct_io = False`` (values are read through h5py).

Credentials come only from the environment and the standard configuration files of
each backend (``AWS_*`` variables, ``~/.aws``, ``FSSPEC_<PROTOCOL>_<OPTION>``
variables, ``GOOGLE_APPLICATION_CREDENTIALS``…), never from the command line.

Set ``CKPTSCAN_REMOTE_STATS=1`` to print the bytes fetched per object on stderr.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import CkptscanError, MalformedArchiveError, NotAnArchiveError, UnsafeArchiveError
from .formats.base import Checkpoint
from .formats.legacy import LegacyCheckpoint
from .formats.zipmember import SeekableReader

REMOTE_HINT = "remote URIs need the optional extra: pip install 'ckptscan[remote]'"
#: Block size of the metadata cache (bytes). Override: ``CKPTSCAN_REMOTE_BLOCK``.
DEFAULT_BLOCK = 32 << 10
#: Reads of at least this many bytes bypass the cache (one ranged request each).
LARGE_READ = 256 << 10
#: Largest amount of cached metadata per object.
CACHE_BYTES = 64 << 20
WEIGHTS_MEMBER = "model.weights.h5"


class RemoteError(CkptscanError):
    """A remote object that cannot be reached or read (network, permissions, missing extra)."""


def is_uri(path: object) -> bool:
    """True for ``scheme://…`` strings (remote or ``file://``)."""
    s = str(path)
    return "://" in s and s.split("://", 1)[0].replace("+", "").replace("-", "").replace(".", "").isalnum()


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
        self.size = size if size is not None else _call(where, fs.size, path)
        if self.size is None:  # some servers answer HEAD without a length
            self.size = _call(where, fs.size, path)
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
            data = _call(self.where, self.fs.cat_file, self.path, start=start, end=end, **self._cat_kw)
        except RemoteError as exc:
            if not (self._cat_kw and isinstance(exc.__cause__, TypeError) and "cache_type" in str(exc.__cause__)):
                raise
            self._cat_kw = {}  # a backend whose open() takes no cache_type: its own buffering then
            data = _call(self.where, self.fs.cat_file, self.path, start=start, end=end)
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


def _call(where: str, fn, *args, **kwargs):
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


# --- opening -------------------------------------------------------------------------
def open_any(path_or_uri: str | os.PathLike, config: str | os.PathLike | dict | None = None,
             storage_options: dict | None = None) -> Checkpoint:
    """Open a local path (``open_checkpoint``), a ``file://`` URI or a remote URI."""
    s = str(path_or_uri)
    if is_uri(s):
        if s.startswith("file://"):
            from .formats import open_checkpoint

            return open_checkpoint(s[len("file://"):], config=config)
        return open_remote(s, config=config, storage_options=storage_options)
    from .formats import open_checkpoint

    return open_checkpoint(s, config=config)


def open_remote(uri: str, config: str | os.PathLike | dict | None = None,
                storage_options: dict | None = None, block_size: int | None = None) -> Checkpoint:
    """Open a checkpoint behind a URI through fsspec, reading only the ranges needed.

    ``config`` names the variables of a bare weights file (local path or dict).
    The checkpoint's ``remote_stats`` (a :class:`FetchStats`) counts what was fetched.
    """
    from .formats import load_config

    fs, path = filesystem(uri, storage_options)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    stats = FetchStats()
    info = _call(uri, fs.info, path)  # one HEAD / metadata request; never a listing of a file
    if info.get("type") == "directory":
        ckpt = _open_remote_dir(fs, path, uri, stats, block_size)
    else:
        reader = RangeReader(fs, path, uri, size=info.get("size"), block_size=block_size, stats=stats)
        try:
            ckpt = _open_reader(fs, path, uri, reader, cfg, stats, block_size)
        except BaseException:
            reader.close()
            raise
    ckpt.direct_io = False
    ckpt.remote_stats = stats
    return ckpt


def _open_reader(fs, path: str, uri: str, reader: RangeReader, cfg, stats, block_size) -> Checkpoint:
    from .formats.h5util import find_hdf5_superblock

    if reader.size == 0:
        raise NotAnArchiveError(uri, "empty file")
    head = reader.pread(0, min(8192, reader.size))
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _open_remote_zip(uri, reader, cfg)
    if find_hdf5_superblock(head) is not None:
        return _open_remote_h5(uri, reader, cfg)
    if head.lstrip()[:1] == b"{":
        return _open_remote_sharded(fs, path, uri, reader, cfg, stats, block_size)
    raise NotAnArchiveError(uri, "not a Keras weight archive (neither zip, HDF5 nor a sharded index)")


def _open_remote_h5(uri: str, reader: RangeReader, cfg, fmt_expected: str | None = None) -> Checkpoint:
    from .formats import _classify_h5
    from .formats.h5util import open_h5, translate_errors
    from .formats.v3 import H5Part, V3Checkpoint

    h5 = open_h5(reader, uri)
    try:
        with translate_errors(uri):
            fmt = _classify_h5(h5, uri)
        if fmt == "keras3-weights":
            return V3Checkpoint(uri, fmt, [H5Part(uri, None, 0, h5, reader)], cfg)
        return RemoteLegacyCheckpoint(uri, h5, reader)
    except BaseException:
        h5.close()
        raise


class RemoteLegacyCheckpoint(LegacyCheckpoint):
    """A :class:`~ckptscan.formats.legacy.LegacyCheckpoint` over a remote file object."""

    def __init__(self, path: str, h5, reader: RangeReader):
        self._reader = reader
        super().__init__(path, h5)

    def close(self) -> None:
        super().close()
        self._reader.close()


def _open_remote_zip(uri: str, reader: RangeReader, cfg) -> Checkpoint:
    from .formats import keras_zip_checkpoint
    from .formats.h5util import translate_errors

    with translate_errors(uri):
        zf = zipfile.ZipFile(reader)  # reads the end record and central directory only
    try:
        return keras_zip_checkpoint(
            uri, zf, reader, lambda start, size: WindowReader(reader, start, size), owner=reader
        )
    finally:
        zf.close()  # does not close the reader it was given


def _read_small(fs, path: str, uri: str, what: str) -> bytes:
    from .limits import MAX_JSON_BYTES

    size = _call(uri, fs.size, path)
    if size is not None and size > MAX_JSON_BYTES:
        raise UnsafeArchiveError(uri, f"{what} file is {size} bytes (too large)")
    return _call(uri, fs.cat_file, path)


def _open_remote_sharded(fs, path: str, uri: str, reader: RangeReader, cfg, stats: FetchStats,
                         block_size, fmt: str = "keras3-sharded") -> Checkpoint:
    from .formats.h5util import open_h5, parse_json, translate_errors
    from .formats.v3 import H5Part, V3Checkpoint
    from .limits import MAX_JSON_BYTES

    if reader.size > MAX_JSON_BYTES:
        raise UnsafeArchiveError(uri, f"JSON file is {reader.size} bytes (too large)")
    with translate_errors(uri):
        doc = parse_json(reader.pread(0, reader.size), "JSON")
    reader.close()
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        if isinstance(doc, dict):
            raise NotAnArchiveError(uri, "JSON file that is not a sharded Keras weights index (no weight_map)")
        raise MalformedArchiveError(uri, "sharded index without a weight_map object")
    shards: list[str] = []
    for value in doc["weight_map"].values():
        for name in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if not isinstance(name, str):
                raise MalformedArchiveError(uri, "weight_map values must be shard file names")
            if name not in shards:
                shards.append(name)
    if not shards:
        raise MalformedArchiveError(uri, "sharded index lists no shard files")
    parts = []
    base_dir = posixpath.dirname(path)
    base_uri = uri.rsplit("/", 1)[0]
    try:
        for name in shards:
            if posixpath.basename(name) != name or name in ("", ".", "..") or "\\" in name or "\x00" in name:
                raise UnsafeArchiveError(uri, f"shard name {name!r} points outside the index's folder (path traversal)")
            shard_uri = f"{base_uri}/{name}"
            try:
                r = RangeReader(fs, posixpath.join(base_dir, name), shard_uri, block_size=block_size, total=stats)
            except NotAnArchiveError as exc:
                raise MalformedArchiveError(uri, f"shard {name} is missing") from exc
            try:
                h5 = open_h5(r, shard_uri)
            except CkptscanError as exc:
                r.close()
                raise type(exc)(uri, f"shard {name}: {exc.reason}") from exc
            parts.append(H5Part(shard_uri, name, 0, h5, r))
        return V3Checkpoint(uri, fmt, parts, cfg)
    except BaseException:
        for part in parts:
            part.h5.close()
            part.fileobj.close()
        raise


def _open_remote_dir(fs, path: str, uri: str, stats: FetchStats, block_size) -> Checkpoint:
    """An unzipped ``.keras`` folder behind a URI: ``config.json`` plus the weights."""
    from .formats import _metadata_version
    from .formats.h5util import open_h5, parse_json, translate_errors
    from .formats.v3 import H5Part, V3Checkpoint

    join = posixpath.join
    if not (_call(uri, fs.isfile, join(path, "config.json"))
            and (_call(uri, fs.isfile, join(path, WEIGHTS_MEMBER)) or _call(uri, fs.isfile, join(path, "model.weights.json")))):
        raise NotAnArchiveError(uri, "folder without config.json and model.weights.h5")
    with translate_errors(uri):
        own = parse_json(_read_small(fs, join(path, "config.json"), uri, "config"), "config")
    if not isinstance(own, dict):
        raise MalformedArchiveError(uri, "config file is not a JSON object")
    version = None
    if _call(uri, fs.isfile, join(path, "metadata.json")):
        version = _metadata_version(_read_small(fs, join(path, "metadata.json"), uri, "metadata"))
    base = uri.rstrip("/")
    if _call(uri, fs.isfile, join(path, WEIGHTS_MEMBER)):
        r = RangeReader(fs, join(path, WEIGHTS_MEMBER), f"{base}/{WEIGHTS_MEMBER}", block_size=block_size, total=stats)
        try:
            h5 = open_h5(r, uri)
            try:
                return V3Checkpoint(uri, "keras-dir", [H5Part(f"{base}/{WEIGHTS_MEMBER}", WEIGHTS_MEMBER, 0, h5, r)], own, version)
            except BaseException:
                h5.close()
                raise
        except BaseException:
            r.close()
            raise
    idx = join(path, "model.weights.json")
    r = RangeReader(fs, idx, f"{base}/model.weights.json", block_size=block_size, total=stats)
    ckpt = _open_remote_sharded(fs, idx, f"{base}/model.weights.json", r, own, stats, block_size, fmt="keras-dir")
    ckpt.path = uri
    return ckpt


def download(uri: str, dest: str | os.PathLike | None = None, storage_options: dict | None = None) -> str:
    """Copy a remote object to a local file (for ``fix``, which writes a patched local copy)."""
    fs, path = filesystem(uri, storage_options)
    if dest is None:
        fd, dest = tempfile.mkstemp(prefix="ckptscan-remote-", suffix=posixpath.splitext(path)[1] or ".bin")
        os.close(fd)
    _call(uri, fs.get_file, path, str(dest))
    return str(dest)


def fix_remote(uri: str, output: str, ref: str | None = None, storage_options: dict | None = None, **fix_kwargs):
    """Repair a remote checkpoint into a *new* object or local file; the source is never written.

    The object (and ``ref``, when it is a URI) is copied to a temporary folder,
    :func:`ckptscan.fix` writes a patched copy there, and only a complete, verified copy
    is uploaded to ``output`` (one PUT: object stores never show a partial object) or
    moved to a local ``output``. Returns the :class:`~ckptscan.patch.model.FixManifest`
    with paths as given. Only single-file checkpoints (``.keras``, ``.h5``).
    """
    import dataclasses
    import shutil

    from .patch.api import fix

    if output.rstrip("/") == uri.rstrip("/"):
        raise RemoteError(uri, "refusing to overwrite the source object; give a different --output")
    with tempfile.TemporaryDirectory(prefix="ckptscan-fix-") as tmp:
        name = posixpath.basename(filesystem(uri, storage_options)[1]) or "checkpoint"
        src = download(uri, os.path.join(tmp, name), storage_options)
        local_ref = ref
        if ref is not None and is_uri(ref) and not ref.startswith("file://"):
            local_ref = download(ref, os.path.join(tmp, "ref-" + posixpath.basename(ref)), storage_options)
        patched = os.path.join(tmp, "patched-" + name)
        manifest = fix(src, output=patched, ref=local_ref, **fix_kwargs)
        ff = manifest.files[0]
        if ff.status == "fixed" and os.path.exists(patched):
            if is_uri(output) and not output.startswith("file://"):
                ofs, opath = filesystem(output, storage_options)
                _call(output, ofs.put_file, patched, opath)
            else:
                dest = output[len("file://"):] if output.startswith("file://") else output
                shutil.move(patched, dest)
        files = tuple(dataclasses.replace(f, path=uri, output=output if f.status == "fixed" else "") for f in manifest.files)
        return dataclasses.replace(manifest, files=files)


def fix_paths(paths, output: str | None = None, ref: str | None = None, manifest: str | None = None, **fix_kwargs):
    """:func:`ckptscan.fix` for a list that holds URIs (its hook for ``s3://``, ``https://``…).

    A remote object is only ever repaired into ``output`` (:func:`fix_remote`); without
    one it fails with a reason and nothing is written. ``file://`` URIs and plain paths
    go to the local fixer unchanged.
    """
    from .patch.api import fix, write_manifest
    from .patch.model import FileFix, FixManifest

    paths = [os.fspath(p) for p in paths]
    if output is not None and len(paths) != 1:
        raise ValueError("output needs exactly one input checkpoint")
    local_ref = ref[len("file://"):] if ref and ref.startswith("file://") else ref
    results = []
    for p in paths:
        if not is_uri(p) or p.startswith("file://"):
            results += list(fix(p[len("file://"):] if p.startswith("file://") else p, output=output, ref=local_ref,
                                **fix_kwargs).files)
            continue
        if output is None:
            results.append(FileFix(p, "failed", reason="a remote object is never patched in place: "
                                                       "give --output (a local path or another URI)"))
            continue
        try:
            results += list(fix_remote(p, output, ref=local_ref, **fix_kwargs).files)
        except CkptscanError as exc:
            results.append(FileFix(p, "failed", reason=exc.reason))
    doc = FixManifest(tuple(results), dry_run=bool(fix_kwargs.get("dry_run", False)))
    if manifest is not None:
        write_manifest(doc, manifest)
    return doc



#: File names a remote folder listing keeps (shards are reached through their index).
_CHECKPOINT_SUFFIXES = (".keras", ".h5", ".hdf5", ".weights.json")


def expand_uris(paths) -> list[str]:
    """Expand URI globs (``s3://b/run/epoch_*.keras``) and URI folders into checkpoint URIs.

    Local paths, ``file://`` and ``http(s)://`` URIs (no listing) pass through
    unchanged, as does a URI that cannot be listed (opening it reports the error).
    A folder holding ``config.json`` is an unzipped ``.keras`` and stays one entry;
    in other folders, files named ``*.keras``, ``*.h5``, ``*.hdf5`` and
    ``*.weights.json`` are kept, except the shards an index in the same folder lists.
    """
    out: list[str] = []
    for raw in paths:
        p = os.fspath(raw)
        if not is_uri(p) or p.startswith(("file://", "http://", "https://")):
            out.append(p)
            continue
        try:
            fs, path = filesystem(p)
            if any(ch in path for ch in "*?["):
                found = sorted(fs.glob(path))
                out += [_unstrip(fs, p, f) for f in found if fs.isfile(f)] or [p]
                continue
            info = fs.info(path)
            if info.get("type") != "directory" or fs.isfile(posixpath.join(path, "config.json")):
                out.append(p)
                continue
            files = sorted(f for f in fs.find(path) if f.endswith(_CHECKPOINT_SUFFIXES))
            shards: set[str] = set()
            for idx in (f for f in files if f.endswith(".weights.json")):
                try:
                    doc = json.loads(fs.cat_file(idx))
                    for v in (doc.get("weight_map") or {}).values():
                        for n in [v] if isinstance(v, str) else v if isinstance(v, list) else []:
                            shards.add(posixpath.join(posixpath.dirname(idx), str(n)))
                except (ValueError, OSError, AttributeError):
                    pass
            out += [_unstrip(fs, p, f) for f in files if f not in shards] or [p]
        except Exception:  # noqa: BLE001 - leave it to the open to report
            out.append(p)
    return out


def _unstrip(fs, original: str, path: str) -> str:
    proto = original.split("://", 1)[0]
    return f"{proto}://{path}" if "://" not in path else path
