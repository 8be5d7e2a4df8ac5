"""Safe, format-neutral HDF5 helpers: open, decode attributes, walk without links.

Links are never followed: soft links, external links, external-storage datasets and
virtual datasets are refused (:class:`MalformedArchiveError`), as are datasets whose
declared size cannot be backed by the bytes they store.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import h5py
import numpy as np

from ..errors import MalformedArchiveError, NotAnArchiveError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Declared-but-unstored data above this many bytes is refused (a shape bomb).
MAX_UNBACKED_BYTES = 1 << 30
_MAX_DEPTH = 64


def find_hdf5_superblock(head: bytes) -> int | None:
    """Offset of the HDF5 signature in ``head`` (0, 512, 1024, … as the spec allows)."""
    off = 0
    while off + 8 <= len(head):
        if head[off : off + 8] == HDF5_MAGIC:
            return off
        off = 512 if off == 0 else off * 2
    return None


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turn h5py/OS/zip/JSON errors raised while reading into ckptscan errors."""
    import json
    import zipfile

    try:
        yield
    except (MalformedArchiveError, NotAnArchiveError):
        raise
    except zipfile.BadZipFile as exc:
        raise MalformedArchiveError(path, f"corrupt zip archive ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise MalformedArchiveError(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    except RecursionError as exc:
        raise MalformedArchiveError(path, "structure nested too deeply") from exc
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = re.sub(r"\s*\(.*(file read failed|addr overflow).*\)", " (truncated file)", msg)
        raise MalformedArchiveError(path, f"unreadable HDF5 data: {msg}") from exc


def open_h5(source: Any, path: str) -> h5py.File:
    """Open an HDF5 file (path or file object) read-only, with errors translated."""
    with translate_errors(path):
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


def chunked_attr(obj: h5py.HLObject, name: str) -> list[str] | None:
    """Read a Keras list attribute that may be split into ``name0``, ``name1``, …."""
    attrs = obj.attrs
    if name in attrs:
        return str_list(attrs[name])
    if f"{name}0" not in attrs:
        return None
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(str_list(attrs[f"{name}{i}"]))
        i += 1
    return out


def has_attr(obj: h5py.HLObject, name: str) -> bool:
    """True if the plain or chunked attribute exists."""
    return name in obj.attrs or f"{name}0" in obj.attrs


def attr_str(obj: h5py.HLObject, name: str) -> str | None:
    """A scalar string attribute, decoded, or None."""
    if name not in obj.attrs:
        return None
    return decode_str(obj.attrs[name])


def safe_child(group: h5py.Group, name: str, where: str):
    """``group[name]`` after checking every link on the way is a hard link."""
    obj = group
    for part in [p for p in name.split("/") if p]:
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            kind = "external link" if isinstance(link, h5py.ExternalLink) else "soft link"
            raise MalformedArchiveError(where, f"{obj.name.rstrip('/')}/{part} is a {kind}; links are never followed")
        obj = obj[part]
    return obj


def walk(group: h5py.Group, where: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield ``(relative name, object)`` for every group and dataset, hard links only.

    Deterministic order (sorted names); refuses links and absurd nesting.
    """
    if depth > _MAX_DEPTH:
        raise MalformedArchiveError(where, f"{group.name}: groups nested more than {_MAX_DEPTH} deep")
    for key in sorted(group.keys()):
        obj = safe_child(group, key, where)
        yield key, obj
        if isinstance(obj, h5py.Group):
            for sub, o in walk(obj, where, depth + 1):
                yield f"{key}/{sub}", o


def dataset_dtype(ds: h5py.Dataset, hint: str | None = None) -> str:
    """The stored dtype name; 2-byte opaque data is bfloat16 (Keras' encoding)."""
    dt = ds.dtype
    if dt.kind == "V" and dt.itemsize == 2 and dt.names is None:
        return "bfloat16"
    if hint == "bfloat16" and dt.itemsize == 2 and dt.kind in "Vu":
        return "bfloat16"
    if dt.kind in "fiub" and dt.names is None and dt.subdtype is None:
        return dt.newbyteorder("=").name if dt.byteorder not in ("=", "|") else dt.name
    return str(dt)


def check_dataset(ds: h5py.Dataset, where: str) -> tuple[int | None, int]:
    """Validate a weight dataset; return ``(file offset or None, stored bytes)``.

    Refuses external storage, virtual datasets and shapes whose declared size is not
    backed by stored bytes.
    """
    name = ds.name
    if ds.is_virtual:
        raise MalformedArchiveError(where, f"{name} is a virtual dataset; links out of the file are never followed")
    if ds.external:
        raise MalformedArchiveError(where, f"{name} stores its data in an external file; never followed")
    dt = ds.dtype
    if dt.names is not None or dt.kind in "OSUV" and not (dt.kind == "V" and dt.itemsize == 2) or dt.subdtype:
        raise MalformedArchiveError(where, f"{name} has dtype {dt}, not a numeric weight")
    shape = ds.shape
    if shape is None:
        raise MalformedArchiveError(where, f"{name} has no shape (null dataspace)")
    declared = int(np.prod(shape, dtype=np.float64)) * dt.itemsize if shape else dt.itemsize
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    stored = ds.id.get_storage_size()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:
            if declared > MAX_UNBACKED_BYTES:
                raise MalformedArchiveError(where, f"{name} declares {declared} bytes but stores none (shape {shape})")
            return None, 0
        if stored < declared:
            raise MalformedArchiveError(where, f"{name} declares {declared} bytes but stores {stored}")
        little = dt.byteorder in ("<", "=", "|")
        return (offset if little else None), stored
    if layout == h5py.h5d.CHUNKED:
        if plist.get_nfilters() == 0 and declared > max(stored, 1) * 1000 and declared > MAX_UNBACKED_BYTES:
            raise MalformedArchiveError(where, f"{name} declares {declared} bytes over {stored} stored (shape bomb)")
        if plist.get_nfilters() > 0 and declared > max(stored, 1) * 1000 and declared > MAX_UNBACKED_BYTES:
            raise MalformedArchiveError(where, f"{name} expands {declared // max(stored, 1)}x when decompressed (shape bomb)")
        return None, stored
    # compact: data lives in the object header, small by construction
    if declared > 65536:
        raise MalformedArchiveError(where, f"{name} declares {declared} bytes in a compact layout")
    return None, declared
