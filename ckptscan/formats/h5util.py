"""Safe, format-neutral HDF5 helpers: open, decode attributes, walk without links.

Links are never followed: soft links, external links, external-storage datasets and
virtual datasets are refused (:class:`MalformedArchiveError`), as are datasets whose
declared size cannot be backed by the bytes they store.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import h5py
import numpy as np

from ..errors import MalformedArchiveError, UnsafeArchiveError
from ..runtime.bounds import (
    MAX_ATTR_BYTES,
    MAX_ATTR_ELEMS,
    MAX_DATASET_EXPANSION,
    MAX_GROUP_DEPTH,
    MAX_UNBACKED_BYTES,
)
from ._errors import Refused, translate_errors

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Largest chunk (bytes) of a chunked dataset; HDF5 materialises whole chunks.
MAX_CHUNK_BYTES = 256 << 20


def find_hdf5_superblock(head: bytes) -> int | None:
    """Offset of the HDF5 signature in ``head`` (0, 512, 1024, … as the spec allows)."""
    off = 0
    while off + 8 <= len(head):
        if head[off : off + 8] == HDF5_MAGIC:
            return off
        off = 512 if off == 0 else off * 2
    return None


class _WindowedFile(h5py.File):
    """An ``h5py.File`` read through a :class:`FileWindow` it owns (closed with it)."""

    _window = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._window is not None:
                self._window.close()
                self._window = None


def open_h5(source: Any, path: str) -> h5py.File:
    """Open an HDF5 file (path or file object) read-only, with errors translated.

    A path is read through a :class:`~ckptscan.formats.zipmember.FileWindow` over the
    whole file, so every read the HDF5 library makes passes through Python and
    honours the ``--timeout`` deadline (:func:`ckptscan.runtime.timeout.check_deadline`).
    """
    from .zipmember import FileWindow

    with translate_errors(path):
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            import os

            window = FileWindow(os.fspath(source), 0, os.path.getsize(source))
            try:
                f = _WindowedFile(window, "r", locking=False)
            except BaseException:
                window.close()
                raise
            f._window = window
            return f
        return h5py.File(source, "r", locking=False)


def decode_str(value: Any) -> str:
    """Decode a str, bytes or numpy scalar attribute to ``str``."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return decode_str(value[()])
    return str(value)


def str_list(value: Any) -> list[str]:
    """Decode a list-valued attribute (vlen str, fixed bytes, empty float array)."""
    if value is None:
        return []
    arr = np.asarray(value)
    if arr.dtype.kind in "fiu" and arr.size == 0:
        return []
    if arr.shape == ():
        return [decode_str(arr[()])]
    return [decode_str(v) for v in arr.reshape(-1)]


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """``obj.attrs[name]`` after refusing attributes larger than the limits.

    Checks the declared element count and fixed size before any byte is read
    (a variable-length string counts its descriptor; its heap bytes are bounded by the
    file). Raises :class:`Refused`. ``obj``: an h5py object or an :class:`Attrs`.
    """
    aid = obj.attrs.get_id(name)
    shape = aid.shape
    dtype = aid.dtype
    elems = math.prod(shape or ())
    if elems > MAX_ATTR_ELEMS or elems * dtype.itemsize > MAX_ATTR_BYTES:
        where = f"{obj.name.rstrip('/')}@{name}"
        raise Refused(f"attribute {where} declares {elems} elements of {dtype.itemsize} bytes (too large)")
    return _attr_value(aid, shape, dtype)


def _attr_value(aid: Any, shape: Any, dtype: np.dtype) -> Any:
    """h5py's ``AttributeManager.__getitem__`` on an attribute already open (one open, not two)."""
    if shape is None:  # empty dataspace
        return h5py.Empty(dtype)
    htype = h5py.h5t.py_create(dtype)
    if dtype.subdtype is not None:
        subdtype, subshape = dtype.subdtype
        shape = shape + subshape
        dtype = subdtype
    arr = np.zeros(shape, dtype=dtype, order="C")
    aid.read(arr, mtype=htype)
    string_info = h5py.h5t.check_string_dtype(dtype)
    if string_info and string_info.length is None:
        arr = np.array([b.decode("utf-8", "surrogateescape") for b in arr.flat], dtype=dtype).reshape(arr.shape)
    if arr.ndim == 0:
        return arr[()]
    return arr


def chunked_attr(obj: h5py.HLObject, name: str) -> list[str] | None:
    """Read a Keras list attribute that may be split into ``name0``, ``name1``, …."""
    attrs = obj.attrs
    if name in attrs:
        return str_list(read_attr(obj, name))
    if f"{name}0" not in attrs:
        return None
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(str_list(read_attr(obj, f"{name}{i}")))
        if len(out) > MAX_ATTR_ELEMS:
            raise Refused(f"attribute {obj.name.rstrip('/')}@{name} lists more than {MAX_ATTR_ELEMS} names")
        i += 1
    return out


def has_attr(obj: h5py.HLObject, name: str) -> bool:
    """True if the plain or chunked attribute exists."""
    return name in obj.attrs or f"{name}0" in obj.attrs


def attr_str(obj: h5py.HLObject, name: str) -> str | None:
    """A scalar string attribute, decoded, or None."""
    if name not in obj.attrs:
        return None
    return decode_str(read_attr(obj, name))


def _link_kind(link: object) -> str:
    if isinstance(link, h5py.ExternalLink):
        return f"an external link to {link.filename}:{link.path}"
    if isinstance(link, h5py.SoftLink):
        return f"a soft link to {link.path}"
    return "a user-defined link"


def decode_name(name: bytes) -> str | bytes:
    """A name from the HDF5 library as h5py shows it (UTF-8, else the raw bytes)."""
    try:
        return name.decode("utf8")
    except UnicodeDecodeError:
        return name


def encode_name(name: str | bytes) -> bytes:
    """A name for the HDF5 library, encoded as h5py encodes it."""
    return name if isinstance(name, bytes) else name.encode("utf8")


def h5name(oid: Any) -> str:
    """The path an open low-level object was reached by (``h5py`` ``obj.name``)."""
    return decode_name(h5py.h5i.get_name(oid))


class Attrs:
    """The little of an h5py object that the attribute helpers need, over a bare id.

    ``Attrs(oid)`` has ``.id``, ``.attrs`` (h5py's own ``AttributeManager``, so values
    decode exactly as ``obj.attrs[...]``) and ``.name``, without building the
    high-level object (``Group._get`` builds a ``File`` per child to learn its mode).
    """

    __slots__ = ("id", "attrs")

    def __init__(self, oid: Any):
        self.id = oid
        self.attrs = h5py.AttributeManager(self)

    @property
    def name(self) -> str:
        return h5name(self.id)


_GROUP, _DATASET, _DATATYPE = h5py.h5i.GROUP, h5py.h5i.DATASET, h5py.h5i.DATATYPE
_HARD, _SOFT, _EXTERNAL = h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT, h5py.h5l.TYPE_EXTERNAL
_NO_GET = {_DATASET: "'Dataset' object has no attribute 'get'", _DATATYPE: "'Datatype' object has no attribute 'get'"}


def is_group(oid: Any) -> bool:
    return h5py.h5i.get_type(oid) == _GROUP


def is_dataset(oid: Any) -> bool:
    return h5py.h5i.get_type(oid) == _DATASET


def safe_open(gid: Any, name: str, where: str) -> Any:
    """Low-level ``safe_child``: the id of ``gid/name`` (hard links only), or None.

    Same checks, same errors and messages as :func:`safe_child` (which wraps it), on
    bare h5py ids: no high-level object is built.
    """
    oid = gid
    kind = None
    for part in [p for p in name.split("/") if p]:
        if part in (".", ".."):
            raise UnsafeArchiveError(where, f"HDF5 path {name!r} contains {part!r}")
        if kind is None:
            kind = h5py.h5i.get_type(oid)
        if kind != _GROUP and not isinstance(oid, h5py.h5f.FileID):
            raise AttributeError(_NO_GET.get(kind, "object has no attribute 'get'"))
        b = encode_name(part)
        try:
            ltype = oid.links.get_info(b).type
        except Exception:
            # h5py's ``name in group`` (one component: is there such a link?) first
            if not h5py.h5g._path_valid(oid, b, None):
                return None
            raise
        if ltype != _HARD:
            if ltype == _SOFT:
                link = h5py.SoftLink(decode_name(oid.links.get_val(b)))
            elif ltype == _EXTERNAL:
                from h5py._hl.compat import filename_decode

                fb, lb = oid.links.get_val(b)
                link = h5py.ExternalLink(filename_decode(fb), decode_name(lb))
            else:
                raise TypeError("Unknown link type")
            raise UnsafeArchiveError(
                where, f"{h5name(oid).rstrip('/')}/{part} is {_link_kind(link)}; links are never followed"
            )
        oid = h5py.h5o.open(oid, b)
        kind = h5py.h5i.get_type(oid)
        if kind not in (_GROUP, _DATASET, _DATATYPE):
            raise TypeError("Unknown object type")
    return oid


def only_hard_links(gid: Any) -> bool:
    """True if every link below ``gid`` is a hard link (one C-level ``H5Lvisit``).

    Then :func:`open_path` may open a path in one call: :func:`safe_open`'s per-link
    checks could not refuse anything on the way. False on any error.
    """
    try:
        return gid.links.visit(_hard_and_shallow, info=True) is None
    except Exception:
        return False


def _hard_and_shallow(name: bytes, info: Any) -> int | None:
    """``H5Lvisit`` callback: stop (1) at a link that is not hard, or one nested more than
    :data:`~ckptscan.runtime.bounds.MAX_GROUP_DEPTH` deep. ``H5Lvisit`` recurses in C,
    one level per group, and calls this before it enters a group: stopping here keeps
    its recursion that shallow (groups nested ~10,000 deep overflow the C stack and kill
    the process)."""
    return 1 if info.type != _HARD or name.count(b"/") >= MAX_GROUP_DEPTH else None


def open_path(gid: Any, name: str, where: str, hard_only: bool) -> Any:
    """:func:`safe_open`, in one ``H5Oopen`` when ``hard_only`` (see :func:`only_hard_links`).

    Anything unusual (a missing name, ``.``/``..``, an intermediate that is not a group,
    an odd object type, any error) goes through :func:`safe_open` itself, which gives
    the exact answer or refusal.
    """
    parts = [p for p in name.split("/") if p]
    if len(parts) > MAX_GROUP_DEPTH:
        raise Refused(f"{_short_path(parts)}: groups nested more than {MAX_GROUP_DEPTH} deep", unsafe=False)
    if hard_only:
        if parts and "." not in parts and ".." not in parts:
            try:
                oid = h5py.h5o.open(gid, encode_name("/".join(parts)))
            except Exception:
                return safe_open(gid, name, where)
            if h5py.h5i.get_type(oid) in (_GROUP, _DATASET, _DATATYPE):
                return oid
    return safe_open(gid, name, where)


def wrap(oid: Any) -> Any:
    """The h5py high-level object for a low-level id (as ``Group.__getitem__`` builds it)."""
    kind = h5py.h5i.get_type(oid)
    if kind == _GROUP:
        return h5py.Group(oid)
    if kind == _DATASET:
        return h5py.Dataset(oid, readonly=True)
    if kind == _DATATYPE:
        return h5py.Datatype(oid)
    raise TypeError("Unknown object type")  # pragma: no cover - safe_open refuses it


def safe_child(group: h5py.Group, name: str, where: str):
    """``group[name]`` after checking every link on the way is a hard link.

    Soft, external and user-defined links raise :class:`UnsafeArchiveError`: they are
    never followed, even when they would stay inside the file.
    """
    oid = safe_open(group.id, name, where)
    if oid is None:
        return None
    return group if oid is group.id else wrap(oid)


def walk(group: h5py.Group, where: str, depth: int = 0, _seen: set | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(relative name, object)`` for every group and dataset, hard links only.

    Deterministic order (sorted names). Refuses links, groups nested more than
    :data:`~ckptscan.runtime.bounds.MAX_GROUP_DEPTH` deep, and a group reachable twice (a hard
    link cycle or diamond, which Keras never writes and which would make the walk
    explode).

    The exact (slow) walk: readers try :func:`hard_link_tree` first and come here only
    when it declines, so that hostile files get these exact refusals.
    """
    if depth > MAX_GROUP_DEPTH:
        parts = group.name.strip("/").split("/")
        raise Refused(f"{'/' + _short_path(parts)}: groups nested more than {MAX_GROUP_DEPTH} deep", unsafe=False)
    seen = set() if _seen is None else _seen
    if _seen is None:
        seen.add(_object_key(group))
    for key in sorted(group.keys()):
        obj = safe_child(group, key, where)
        if obj is None:  # listed but unresolvable: a dangling name
            raise Refused(f"{group.name.rstrip('/')}/{key} cannot be resolved", unsafe=False)
        if isinstance(obj, h5py.Group):
            k = _object_key(obj)
            if k in seen:
                raise Refused(f"{group.name.rstrip('/')}/{key} is a group linked more than once (hard-link cycle)")
            seen.add(k)
        yield key, obj
        if isinstance(obj, h5py.Group):
            for sub, o in walk(obj, where, depth + 1, seen):
                yield f"{key}/{sub}", o


def _short_path(parts: list[str]) -> str:
    """A path of many components for a message: the first three, ``…``, the last (each
    cut to 40 characters)."""
    cut = [p if len(p) <= 40 else p[:39] + "…" for p in parts]
    return "/".join(cut[:3] + ["…"] + cut[-1:]) if len(cut) > 5 else "/".join(cut)


def _object_key(obj: h5py.HLObject) -> object:
    info = h5py.h5o.get_info(obj.id)
    return (info.fileno, getattr(info, "token", None) or getattr(info, "addr", None))


class Declined(Exception):
    """The fast index met something unusual; the exact (slow) path must decide."""


def hard_link_tree(fid: Any) -> list[tuple[str, ...]]:
    """Every link below the root as its name components, in :func:`walk` order.

    One C-level ``H5Lvisit`` (link types and target addresses). Raises
    :class:`Declined` unless the tree is exactly what :func:`walk` accepts without a
    word: hard links only, every object reached by one link (no cycle, no diamond,
    nothing linking back to the root), UTF-8 names without ``.``/``..`` components,
    nesting within :data:`~ckptscan.runtime.bounds.MAX_GROUP_DEPTH`. The order is
    :func:`walk`'s: depth first, siblings sorted by name.
    """
    names: list[bytes] = []
    addrs: set = set()
    root = h5py.h5o.get_info(fid).addr

    def visit(name: bytes, info) -> int | None:
        if _hard_and_shallow(name, info) is not None:  # also keeps H5Lvisit's C recursion shallow
            return 1
        a = info.u
        if a in addrs or a == root:
            return 1
        addrs.add(a)
        names.append(name)
        return None

    if fid.links.visit(visit, info=True) is not None:
        raise Declined("not a plain tree of hard links")
    out = []
    for raw in names:
        try:
            parts = tuple(raw.decode("utf8").split("/"))
        except UnicodeDecodeError:
            raise Declined("name that is not UTF-8") from None
        if len(parts) > MAX_GROUP_DEPTH or "." in parts or ".." in parts or "" in parts:
            raise Declined("deep or odd path")
        out.append(parts)
    out.sort()
    return out


def dtype_name(dt: np.dtype, hint: str | None = None) -> str:
    """The stored dtype name; 2-byte opaque data is bfloat16 (Keras' encoding)."""
    if dt.kind == "V" and dt.itemsize == 2 and dt.names is None:
        return "bfloat16"
    if hint == "bfloat16" and dt.itemsize == 2 and dt.kind in "Vu":
        return "bfloat16"
    if dt.kind in "fiub" and dt.names is None and dt.subdtype is None:
        return dt.newbyteorder("=").name if dt.byteorder not in ("=", "|") else dt.name
    return str(dt)


def needs_hint(dt: np.dtype) -> bool:
    """True when a ``dtype`` attribute can change :func:`dtype_name` (2-byte non-opaque
    data); everything else is named from the stored type alone, attribute unread."""
    return dt.itemsize == 2 and dt.kind == "u"


def dataset_dtype(ds: h5py.Dataset, hint: str | None = None) -> str:
    """The stored dtype name of a dataset (see :func:`dtype_name`)."""
    return dtype_name(ds.dtype, hint)


def check_dataset(ds: h5py.Dataset, where: str) -> tuple[int | None, int]:
    """Validate a weight dataset; return ``(file offset or None, stored bytes)``.

    See :func:`check_dataset_id` (this is it for a high-level dataset).
    """
    return check_dataset_id(ds.id, where, ds.file.id.get_filesize())


def check_dataset_id(dsid: Any, where: str, filesize: int, dt: np.dtype | None = None,
                     shape: Any = False) -> tuple[int | None, int]:
    """Validate a weight dataset by its id; return ``(file offset or None, stored bytes)``.

    Refuses (:class:`UnsafeArchiveError`) external storage, virtual datasets, and
    shapes whose declared size is not backed by stored bytes; refuses
    (:class:`MalformedArchiveError`) non-numeric dtypes and contiguous data that would
    end past the end of the file (``filesize``: of the HDF5 file the dataset is in).
    Reads no data. ``dt``/``shape``: the dataset's, when the caller has them already.
    """
    offset = dsid.get_offset()
    if offset is not None:
        # H5Dget_offset has an address only for contiguous data stored in this file:
        # never virtual, never in external files; the property list is not needed
        plist, layout = None, h5py.h5d.CONTIGUOUS
    else:
        plist = dsid.get_create_plist()
        layout = plist.get_layout()
        if layout == h5py.h5d.VIRTUAL:
            raise UnsafeArchiveError(
                where, f"{h5name(dsid)} is a virtual dataset; links out of the file are never followed")
        if plist.get_external_count():
            target = plist.get_external(0)[0].decode("utf-8", "replace")
            raise UnsafeArchiveError(where, f"{h5name(dsid)} stores its data in external file {target!r}; never followed")
    if dt is None:
        dt = dsid.dtype
    if dt.names is not None or dt.subdtype is not None or (dt.kind in "OSUV" and not (dt.kind == "V" and dt.itemsize == 2)):
        raise MalformedArchiveError(where, f"{h5name(dsid)} has dtype {_dtype_label(dt)}, not a numeric weight")
    if dt.kind not in "fiubV" or h5py.check_string_dtype(dt) or h5py.check_vlen_dtype(dt):
        raise MalformedArchiveError(where, f"{h5name(dsid)} has dtype {_dtype_label(dt)}, not a numeric weight")
    if shape is False:
        shape = dsid.shape
    if shape is None:
        raise MalformedArchiveError(where, f"{h5name(dsid)} has no shape (null dataspace)")
    declared = math.prod(shape) * dt.itemsize
    stored = dsid.get_storage_size()
    if layout == h5py.h5d.CONTIGUOUS:
        if offset is None:
            if declared > MAX_UNBACKED_BYTES:
                raise UnsafeArchiveError(
                    where, f"{h5name(dsid)} declares {declared} bytes (shape {shape}) but stores none (shape bomb)")
            return None, 0
        if stored < declared:
            raise MalformedArchiveError(where, f"{h5name(dsid)} declares {declared} bytes but stores {stored}")
        if offset + declared > filesize:
            raise MalformedArchiveError(where, f"{h5name(dsid)}: data ends past the end of the file (truncated file)")
        little = dt.byteorder in ("<", "=", "|")
        return (offset if little else None), stored
    if layout == h5py.h5d.CHUNKED:
        chunk = plist.get_chunk()
        if math.prod(chunk) * dt.itemsize > MAX_CHUNK_BYTES:
            raise UnsafeArchiveError(
                where, f"{h5name(dsid)} has chunks of {math.prod(chunk) * dt.itemsize} bytes (too large)")
        if declared > MAX_UNBACKED_BYTES and declared > max(stored, 1) * MAX_DATASET_EXPANSION:
            if plist.get_nfilters() == 0:
                raise UnsafeArchiveError(
                    where, f"{h5name(dsid)} declares {declared} bytes (shape {shape}) over {stored} stored (shape bomb)")
            raise UnsafeArchiveError(
                where, f"{h5name(dsid)} expands {declared // max(stored, 1)}x when decompressed (shape bomb)"
            )
        return None, stored
    # compact: data lives in the object header, small by construction
    if declared > 65536:
        raise MalformedArchiveError(where, f"{h5name(dsid)} declares {declared} bytes in a compact layout")
    return None, declared


def _dtype_label(dt: np.dtype) -> str:
    if h5py.check_string_dtype(dt):
        return "string"
    if h5py.check_vlen_dtype(dt) is not None:
        return "variable-length"
    if dt.names is not None:
        return "compound"
    if dt.kind == "O":
        return "object reference"
    return str(dt)
