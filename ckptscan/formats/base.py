"""The records every format reader yields, and the block reader they share.

A reader turns bytes into :class:`Variable` records (one per stored tensor) plus the
model description (:class:`LayerInfo` per layer, the raw model config when the archive
has one). Values are read through :meth:`Checkpoint.iter_blocks`, which never holds
more than one block of one tensor in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

#: Elements per block when streaming a tensor (4 MiB of float32).
DEFAULT_BLOCK_ELEMS = 1 << 20


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
    """``weight`` (model variable) or ``optimizer`` (optimizer state)."""

    @property
    def path(self) -> str:
        """``layer_path/name``: the name ckptscan prints and matches on."""
        return f"{self.layer_path}/{self.name}" if self.layer_path else self.name

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        """True for the dtypes whose values are checked for NaN/Inf."""
        return self.dtype in ("float16", "bfloat16", "float32", "float64")


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

    # --- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # --- values ----------------------------------------------------------------
    def _dataset(self, var: Variable):  # pragma: no cover - implemented by readers
        raise NotImplementedError

    def read(self, var: Variable) -> np.ndarray:
        """The whole tensor, decoded (bfloat16 → float32). For small tensors only."""
        parts = list(self.iter_blocks(var))
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return flat.reshape(var.shape)

    def iter_blocks(
        self, var: Variable, block_elems: int = DEFAULT_BLOCK_ELEMS
    ) -> Iterator[np.ndarray]:
        """Yield the tensor's values flattened (C order), ``block_elems`` at a time.

        Contiguous data is read straight from the file into a reused buffer; chunked
        or compressed data goes through h5py, one slab of rows at a time. bfloat16 is
        decoded to float32. The yielded array is only valid until the next one.
        """
        n = var.size
        if n == 0:
            return
        if var.offset is not None and self.direct_io:
            yield from _read_contiguous(var, block_elems)
            return
        ds = self._dataset(var)
        if ds.shape == ():
            yield _decode(np.asarray(ds[()]).reshape(1), var.dtype)
            return
        row = max(1, n // ds.shape[0])
        rows = max(1, block_elems // row)
        for start in range(0, ds.shape[0], rows):
            yield _decode(np.ascontiguousarray(ds[start : start + rows]).reshape(-1), var.dtype)


def _decode(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return bf16_to_f32(raw)
    return raw


def _read_contiguous(var: Variable, block_elems: int) -> Iterator[np.ndarray]:
    storage = np.dtype("<u2") if var.dtype == "bfloat16" else np.dtype(var.dtype).newbyteorder("<")
    total = var.size
    block_elems = min(block_elems, total)
    buf = np.empty(block_elems, dtype=storage)
    fd = os.open(var.file, os.O_RDONLY)
    try:
        pos = 0
        while pos < total:
            count = min(block_elems, total - pos)
            view = memoryview(buf[:count]).cast("B")
            got = os.preadv(fd, [view], var.offset + pos * storage.itemsize)
            if got != count * storage.itemsize:
                from ..errors import MalformedArchiveError

                raise MalformedArchiveError(var.file, f"{var.h5path}: data ends early (truncated file)")
            pos += count
            yield _decode(buf[:count], var.dtype)
    finally:
        os.close(fd)
