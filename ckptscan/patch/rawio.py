"""Raw stored bits of a tensor: read them, encode new values into them, hash them."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import PatchRefusedError
from ..formats.base import Checkpoint, Variable, bf16_to_f32, f32_to_bf16_bits

#: Bytes hashed / copied per step.
BLOCK = 8 << 20


def storage_dtype(var: Variable) -> np.dtype:
    """Little-endian numpy dtype of the stored bits (``<u2`` for bfloat16)."""
    if var.dtype == "bfloat16":
        return np.dtype("<u2")
    return np.dtype(var.dtype).newbyteorder("<")


def read_raw(ckpt: Checkpoint, var: Variable) -> np.ndarray:
    """The stored bits of ``var``, flattened, in :func:`storage_dtype` (whole tensor)."""
    dt = storage_dtype(var)
    if var.size == 0:
        return np.zeros(0, dtype=dt)
    if var.offset is not None:
        buf = np.empty(var.size, dtype=dt)
        with open(var.file, "rb") as fh:
            fh.seek(var.offset)
            got = fh.readinto(memoryview(buf).cast("B"))
        if got != buf.nbytes:
            raise PatchRefusedError(var.file, f"{var.h5path}: data ends early (truncated file)")
        return buf
    if var.path in getattr(ckpt, "partitioned", {}):  # a TensorFlow partitioned variable, stitched
        values = np.asarray(ckpt.read(var)).reshape(-1)
        return f32_to_bf16_bits(values) if var.dtype == "bfloat16" else values.astype(dt)
    ds = ckpt._dataset(var)
    arr = np.asarray(ds[()])
    if var.dtype == "bfloat16":
        return np.ascontiguousarray(arr).view("<u2").reshape(-1).copy()
    return np.ascontiguousarray(arr.astype(dt)).reshape(-1)


def read_at(ckpt: Checkpoint, var: Variable, idx: np.ndarray) -> np.ndarray:
    """The stored bits of ``var`` at the ascending flat indices ``idx``.

    A contiguous tensor is read only around those indices, one window of at most
    :data:`BLOCK` bytes at a time, so memory is ``idx`` plus one window whatever the
    tensor's size (repairing a few NaNs in a 1 GiB embedding reads kilobytes). A
    chunked or compact one is read whole through h5py.
    """
    dt = storage_dtype(var)
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.zeros(0, dtype=dt)
    if var.offset is None:
        return read_raw(ckpt, var)[idx]
    out = np.empty(idx.size, dtype=dt)
    isz = dt.itemsize
    per = max(1, BLOCK // isz)
    with open(var.file, "rb", buffering=0) as fh:
        i = 0
        while i < idx.size:
            start = int(idx[i])
            j = int(np.searchsorted(idx, start + per, side="left"))
            n = int(idx[j - 1]) - start + 1  # up to the last wanted element of the window
            out[i:j] = np.frombuffer(_elements(fh, var, start, n, isz), dtype=dt)[idx[i:j] - start]
            i = j
    return out


def _elements(fh, var: Variable, start: int, n: int, isz: int) -> bytes:
    """``n`` stored elements of a contiguous ``var`` from element ``start``."""
    buf = os.pread(fh.fileno(), n * isz, var.offset + start * isz)
    if len(buf) != n * isz:
        raise PatchRefusedError(var.file, f"{var.h5path}: data ends early (truncated file)")
    return buf


def patched_hash(ckpt: Checkpoint, var: Variable, idx: np.ndarray, new_raw: np.ndarray) -> str:
    """sha256 that :func:`element_hash` gives once ``new_raw`` is stored at ``idx`` (ascending).

    Streams a contiguous tensor block by block, patching each block in memory: what the
    verification of a patch compares the re-read tensor against, in bounded memory.
    """
    dt = storage_dtype(var)
    if var.offset is None:
        raw = read_raw(ckpt, var)
        raw[idx] = new_raw
        return hashlib.sha256(raw.tobytes()).hexdigest()
    h = hashlib.sha256()
    isz = dt.itemsize
    per = max(1, BLOCK // isz)
    idx = np.asarray(idx, dtype=np.int64)
    with open(var.file, "rb", buffering=0) as fh:
        for start in range(0, var.size, per):
            n = min(per, var.size - start)
            buf = _elements(fh, var, start, n, isz)
            a, b = np.searchsorted(idx, [start, start + n])
            if b > a:
                block = np.frombuffer(buf, dtype=dt).copy()
                block[idx[a:b] - start] = new_raw[a:b]
                buf = block.tobytes()
            h.update(buf)
    return h.hexdigest()


def decode(raw: np.ndarray, var: Variable) -> np.ndarray:
    """Stored bits → values (bfloat16 → float32; others as stored)."""
    if var.dtype == "bfloat16":
        return bf16_to_f32(raw)
    return raw


def encode(values: np.ndarray, var: Variable) -> np.ndarray:
    """Values → stored bits (bfloat16 rounds to nearest even; float16 is a cast)."""
    values = np.asarray(values).reshape(-1)
    if var.dtype == "bfloat16":
        return f32_to_bf16_bits(values.astype(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(storage_dtype(var))


def element_hash(ckpt: Checkpoint, var: Variable) -> str:
    """sha256 of the stored bits of ``var`` (for the untouched-tensor check)."""
    h = hashlib.sha256()
    if var.offset is not None:
        left = var.size * storage_dtype(var).itemsize
        with open(var.file, "rb") as fh:
            fh.seek(var.offset)
            while left > 0:
                chunk = fh.read(min(BLOCK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
        return h.hexdigest()
    h.update(read_raw(ckpt, var).tobytes())
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(BLOCK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def pread_exact(fd: int, n: int, offset: int, where: str) -> bytes:
    """Exactly ``n`` bytes at ``offset`` (error if the file is shorter)."""
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise PatchRefusedError(where, f"file ends before offset {offset + n}")
    return data


def runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique flat indices → ``[(start, length), …]`` of consecutive runs."""
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    if idx.size == 0:
        return []
    breaks = np.nonzero(np.diff(idx) != 1)[0] + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [idx.size]])
    return [(int(idx[s]), int(e - s)) for s, e in zip(starts, ends)]
