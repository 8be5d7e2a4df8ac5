"""The records every format reader yields, and the block reader they share.

A reader turns bytes into :class:`Variable` records (one per stored tensor) plus the
model description (:class:`LayerInfo` per layer, the raw model config when the archive
has one). Values are read through :meth:`Checkpoint.iter_blocks`, which never holds
more than one block of one tensor in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np

#: Elements per block when streaming a tensor (512 KiB of float32: a block and the
#: temporaries of a few reductions over it stay in a core's L2 cache; measured in
#: ``docs/benchmarks.md``).
DEFAULT_BLOCK_ELEMS = 1 << 17
#: Most rows of a chunked dataset read at once when one chunk row exceeds a block.
_MAX_SLAB_BYTES = 64 << 20


@dataclass(frozen=True)
class Variable:
    """One stored tensor, named the way Keras names it."""

    layer_path: str
    """Structural path of the owning layer: enclosing models, the layer, its sub-layers
    (``resnet101v2/conv5_block3_2_bn``, ``bi/forward_lstm/lstm_cell``)."""
    name: str
    """Variable name (``moving_variance``, ``kernel``); ``vars/3`` when unknown."""
    layer_name: str
    """The user's name of the top-most layer that owns the variable's sub-layer chain."""
    layer_class: str | None
    """Keras class of the layer that owns the variable (``BatchNormalization``)."""
    shape: tuple[int, ...]
    dtype: str
    """Stored dtype: ``float32``, ``float16``, ``bfloat16``, ``int32``…"""
    h5path: str
    """Dataset path inside its HDF5 file."""
    file: str
    """The physical file holding the HDF5 bytes (the archive, or a shard)."""
    member: str | None = None
    """Zip member name (``model.weights.h5``) or shard file name, if any."""
    offset: int | None = None
    """Absolute byte offset of contiguous data in :attr:`file`; None if chunked/unwritten."""
    nbytes: int = 0
    """Size of the stored data in bytes."""
    naming: str = "known"
    """``known`` (config or legacy weight names) or ``inferred`` (heuristics)."""
    kind: str = "weight"
    """``weight`` (model variable), ``optimizer`` (optimizer state) or ``metric``
    (compiled-metric state some tf-keras ``.keras`` files carry)."""
    about: str = ""
    """What an optimizer variable is, when known: ``bn_b/gamma (Adam momentum)``
    (:mod:`ckptscan.formats.optnames`)."""

    @classmethod
    def make(cls, **fields) -> Variable:
        """``Variable(**fields)`` for readers that make hundreds: a frozen dataclass's
        ``__init__`` sets each field through ``object.__setattr__`` (1.8 us for 15
        fields, a millisecond per ResNet checkpoint); this fills the instance dict at
        once (0.3 us). Same fields, defaults and equality; unknown names are refused."""
        if not fields.keys() <= _VARIABLE_FIELDS.keys():
            raise TypeError(f"Variable has no field {sorted(fields.keys() - _VARIABLE_FIELDS.keys())[0]!r}")
        if not _REQUIRED_FIELDS <= fields.keys():
            raise TypeError(f"Variable needs {next(k for k in _VARIABLE_FIELDS if k in _REQUIRED_FIELDS - fields.keys())!r}")
        obj = object.__new__(cls)
        d = obj.__dict__
        d.update(_VARIABLE_FIELDS)
        d.update(fields)
        lp, name = d["layer_path"], d["name"]
        d["path"] = f"{lp}/{name}" if lp else name  # :attr:`path` and :attr:`is_float`, made at once
        d["is_float"] = d["dtype"] in _FLOAT_DTYPES
        return obj

    @functools.cached_property
    def path(self) -> str:
        """``layer_path/name``: the name ckptscan prints and matches on (made once: a scan
        asks each variable for it several times)."""
        return f"{self.layer_path}/{self.name}" if self.layer_path else self.name

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @functools.cached_property
    def is_float(self) -> bool:
        """True for the dtypes whose values are checked for NaN/Inf (made once, like
        :attr:`path`: a scan asks every variable several times)."""
        return self.dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the model config describes it."""

    path: str
    name: str
    class_name: str
    config: dict = field(default_factory=dict, hash=False, compare=False)


def itemsize(dtype: str) -> int:
    """Bytes per element of a stored dtype name."""
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Decode bfloat16 bits (any 2-byte array) to float32."""
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Encode float32 values as bfloat16 bits, rounding to nearest even (NaN kept NaN)."""
    f = np.ascontiguousarray(values, dtype=np.float32)
    bits = f.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


class Checkpoint:
    """An open Keras weight archive: its variables, its model description, its values.

    Use as a context manager; it owns open file handles. Read-only.
    """

    #: True when :attr:`Variable.offset` may be read directly from :attr:`Variable.file`
    #: (a local file); False for remote or file-object backed checkpoints.
    direct_io: bool = True

    #: Format identifier (``keras-zip``, ``keras-dir``, ``keras3-weights``,
    #: ``keras3-sharded``, ``legacy-model``, ``legacy-weights``).
    format: str = "unknown"

    def __init__(self, path: str):
        self.path = str(path)
        self.variables: list[Variable] = []
        self.layers: dict[str, LayerInfo] = {}
        self.model_config: dict | None = None
        self.keras_version: str | None = None
        self.notes: list[str] = []
        self._datasets: dict[tuple[str, str], Any] = {}
        self._io = _IOCache()

    # --- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            self._io.close()

    def __repr__(self) -> str:
        return f"<ckptscan {self.format} {self.path!r}: {len(self.variables)} variables>"

    # --- lookup ----------------------------------------------------------------
    def weights(self, include_optimizer: bool = False) -> list[Variable]:
        """The variables, optimizer state only when asked for."""
        return [v for v in self.variables if include_optimizer or v.kind == "weight"]

    def find(self, path: str) -> Variable:
        """The variable whose :attr:`Variable.path` is ``path`` (KeyError otherwise)."""
        for v in self.variables:
            if v.path == path:
                return v
        raise KeyError(path)

    def layer_for(self, var: Variable) -> LayerInfo | None:
        """The config description of the layer owning ``var``, if known."""
        return self.layers.get(var.layer_path)

    def patch_refusal(self, var: Variable) -> str | None:
        """Why ``fix`` cannot patch ``var`` in this checkpoint, or None (it can)."""
        return None

    # --- values ----------------------------------------------------------------
    def screen(self, variables: Sequence[Variable], keep: Collection[str] = (),
               progress: Callable[[int], None] | None = None) -> dict[str, bool]:
        """Optional fast pass: path → "all values finite" for the variables it could
        check, with their integrity verified; the values of the paths in ``keep`` are
        held for :meth:`read`; ``progress(bytes done)`` as it goes. A variable missing
        from the result goes through :meth:`iter_blocks` as usual. This reader has
        none: an empty dict."""
        return {}

    def _dataset(self, var: Variable):  # pragma: no cover - implemented by readers
        raise NotImplementedError


    def read(self, var: Variable) -> np.ndarray:
        """The whole tensor, decoded (bfloat16 → float32), as a new array.

        Holds the whole tensor in memory: for small tensors (and tests) only.
        """
        out = np.empty(var.size, dtype=np.float32 if var.dtype == "bfloat16" else _native(var.dtype))
        pos = 0
        for block in self.iter_blocks(var):
            out[pos : pos + block.size] = block
            pos += block.size
        return out.reshape(var.shape)

    def iter_blocks(
        self, var: Variable, block_elems: int = DEFAULT_BLOCK_ELEMS
    ) -> Iterator[np.ndarray]:
        """Yield the tensor's values flattened (C order), at most ``block_elems`` at a time.

        Contiguous data (``var.offset`` set, also inside a stored ``.keras`` member) is
        read with ``preadv`` straight from the file into a reused buffer: one kernel
        copy into a cache-resident block, no allocation per block, no h5py. Chunked,
        compressed or compact data goes through h5py ``read_direct`` into the same kind
        of reused buffer, one slab of whole chunk rows at a time, so every chunk is
        decompressed once. bfloat16 is decoded to float32 in a second reused buffer.

        The yielded array is a view into a buffer owned by the generator: it is only
        valid until the next block is requested (or the generator is closed).
        Several generators may be interleaved; each has its own buffers.
        """
        if var.size == 0:
            return
        if var.offset is not None and self.direct_io:
            yield from _read_contiguous(var, block_elems, self._io)
            return
        yield from _read_h5(self._dataset(var), var, block_elems, self._io)


def _native(dtype: str) -> np.dtype:
    return np.dtype(dtype)


_REQUIRED = object()
_FLOAT_DTYPES = frozenset(("float16", "bfloat16", "float32", "float64"))
_VARIABLE_FIELDS = {f.name: (f.default if f.default is not dataclasses.MISSING else _REQUIRED)
                    for f in dataclasses.fields(Variable)}
_REQUIRED_FIELDS = frozenset(k for k, v in _VARIABLE_FIELDS.items() if v is _REQUIRED)

_STORAGE: dict[str, np.dtype] = {}


def _storage(dtype: str) -> np.dtype:
    """Little-endian numpy dtype of the stored bytes (bfloat16 as raw ``<u2``); one dtype
    object per name, made once (hundreds of calls per scan)."""
    got = _STORAGE.get(dtype)
    if got is None:
        got = _STORAGE[dtype] = np.dtype("<u2") if dtype == "bfloat16" else np.dtype(dtype).newbyteorder("<")
    return got


class _IOCache:
    """Per-checkpoint read resources: one read-only fd per file, buffers from a pool.

    Buffers come from a small process-wide pool (:data:`_POOL`), are owned by one
    block generator for its lifetime and go back when it finishes, so scanning a
    thousand files allocates a handful of buffers in total, not some per tensor or per
    file. File descriptors are closed on :meth:`close` (``Checkpoint.__exit__``) or
    when the checkpoint is garbage-collected.
    """

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, _close_fds, self.fds)

    def fd(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return fd

    @staticmethod
    def take(nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes``."""
        return _POOL.take(nbytes)

    @staticmethod
    def give(buf: np.ndarray) -> None:
        _POOL.give(buf)

    def close(self) -> None:
        _close_fds(self.fds)


class _BufferPool:
    """Free read buffers shared by every checkpoint of the process (thread-safe)."""

    #: Buffers kept when free, and the largest size kept (bigger ones are freed).
    KEEP, MAX_BYTES = 8, 8 << 20

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.nbytes >= nbytes:
                    return self._free.pop(i)
        return np.empty(max(nbytes, 4096), dtype=np.uint8)

    def give(self, buf: np.ndarray) -> None:
        if buf.nbytes > self.MAX_BYTES:
            return
        with self._lock:
            if len(self._free) < self.KEEP:
                self._free.append(buf)


_POOL = _BufferPool()


def _close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:  # pragma: no cover - already closed
            pass
    fds.clear()


class _Decoder:
    """Turns a block of stored elements into the values yielded (bfloat16 → float32)."""

    def __init__(self, dtype: str, block_elems: int, io: _IOCache):
        self.bf16 = dtype == "bfloat16"
        self.io = io
        self.out = io.take(block_elems * 4).view(np.float32) if self.bf16 else None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if not self.bf16:
            return raw
        n = raw.size
        bits = self.out[:n].view(np.uint32)
        np.copyto(bits, raw.reshape(-1).view(np.uint16), casting="safe")
        np.left_shift(bits, 16, out=bits)
        return self.out[:n]

    def release(self) -> None:
        if self.out is not None:
            self.io.give(self.out.view(np.uint8))
            self.out = None


def _read_contiguous(var: Variable, block_elems: int, io: _IOCache | None = None) -> Iterator[np.ndarray]:
    """Stream a contiguous little-endian dataset from its absolute file offset."""
    io = io or _IOCache()
    storage = _storage(var.dtype)
    total = var.size
    block_elems = max(1, min(block_elems, total))
    raw = io.take(block_elems * storage.itemsize)
    buf = raw[: block_elems * storage.itemsize].view(storage)
    decode = _Decoder(var.dtype, block_elems, io)
    try:
        fd = io.fd(var.file)
        pos = 0
        step = storage.itemsize
        while pos < total:
            count = min(block_elems, total - pos)
            got = os.preadv(fd, [memoryview(raw[: count * step])], var.offset + pos * step)
            if got != count * step:
                from ..errors import MalformedArchiveError

                raise MalformedArchiveError(var.file, f"{var.h5path}: data ends early (truncated file)")
            pos += count
            yield decode(buf[:count])
    finally:
        decode.release()
        io.give(raw)


def _read_h5(ds: Any, var: Variable, block_elems: int, io: _IOCache) -> Iterator[np.ndarray]:
    """Stream a chunked, compressed, compact or big-endian dataset through h5py.

    The tensor is cut into C-order slabs: whole trailing rows along the first axis
    whose trailing size fits a block (``_slabs``), aligned to the chunk grid so every
    chunk is read (and decompressed) once; each slab lands in a reused buffer through
    ``read_direct`` (HDF5 converts byte order on the way).
    """
    shape = tuple(ds.shape)
    if var.dtype == "bfloat16":
        mem = np.dtype(ds.dtype) if ds.dtype.kind == "V" else np.dtype("<u2")
    else:
        mem = np.dtype(var.dtype)
    if shape == ():
        arr = np.empty((), dtype=mem)
        ds.read_direct(arr)
        decode = _Decoder(var.dtype, 1, io)
        try:
            yield decode(arr.reshape(1))
        finally:
            decode.release()
        return
    slabs = list(_slabs(shape, ds.chunks, block_elems, mem.itemsize))
    most = max(_count(sel) for sel in slabs)
    raw = io.take(most * mem.itemsize)
    decode = _Decoder(var.dtype, most, io)
    try:
        for sel in slabs:
            dims = tuple(s.stop - s.start if isinstance(s, slice) else 1 for s in sel)
            n = _prod(dims)
            dest = raw[: n * mem.itemsize].view(mem).reshape(_squeeze(sel, dims, len(shape)))
            ds.read_direct(dest, source_sel=sel)
            yield decode(dest.reshape(-1))
    finally:
        decode.release()
        io.give(raw)


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _count(sel: tuple) -> int:
    return _prod(tuple(s.stop - s.start if isinstance(s, slice) else 1 for s in sel))


def _squeeze(sel: tuple, dims: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    # integer indices drop their axis in h5py selections; keep the slice extents
    out = [d for s, d in zip(sel, dims) if isinstance(s, slice)]
    return tuple(out) if out else (1,)


def _slabs(shape: tuple[int, ...], chunks: tuple[int, ...] | None, block_elems: int, itemsize: int):
    """C-order selections covering ``shape``, each at most about ``block_elems`` elements.

    Axis ``d`` is the first whose trailing size (product of the later axes) fits a
    block; the axes before it are walked one index at a time, axis ``d`` in steps of
    whole chunk rows (so chunks are not re-read), later axes whole.
    """
    ndim = len(shape)
    trailing = [1] * (ndim + 1)
    for i in range(ndim - 1, -1, -1):
        trailing[i] = trailing[i + 1] * shape[i]
    d = next(i for i in range(ndim) if trailing[i + 1] <= block_elems)
    inner = trailing[d + 1]
    step = max(1, block_elems // inner)
    if chunks is not None:
        c = chunks[d]
        if step >= c:
            step -= step % c
        elif c * inner * itemsize <= _MAX_SLAB_BYTES:
            step = c
    step = min(step, shape[d])
    rest = tuple(slice(0, n) for n in shape[d + 1 :])
    for lead in np.ndindex(*shape[:d]) if d else [()]:
        for start in range(0, shape[d], step):
            yield tuple(lead) + (slice(start, min(start + step, shape[d])),) + rest
