"""Streaming value statistics of one tensor, in bounded memory.

:func:`tensor_stats` makes one pass over the blocks a tensor is read in
(:meth:`ckptscan.formats.Checkpoint.iter_blocks`) and keeps float64 accumulators:
counts of NaN, +Inf, -Inf, zeros, negatives and finite values; min, max, max |x|;
mean and standard deviation of the finite values, merged block by block with Chan's
parallel form of Welford's update (numerically stable, no per-element Python).

For 1-D tensors (per-channel vectors) every bad channel index is kept; for larger
tensors the first :data:`MAX_INDICES` flat indices of each kind.

:func:`count_values` is the scan's kernel: the rules over whole tensors only read how
many values are NaN/±Inf and where, so a block without any (nearly all of them) costs
one vectorised ``np.isfinite`` reduction into a reused mask, and only a block that
holds a non-finite value is looked at further. :class:`ValueCounts` is its result.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

#: How many flat indices of each kind are kept for tensors with more than one dimension.
MAX_INDICES = 32
#: How many channel indices are kept for 1-D tensors (all of them, up to this bound).
MAX_CHANNEL_INDICES = 1 << 16

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class _NonFinite:
    """What :class:`TensorStats` and :class:`ValueCounts` both answer from their counts."""

    n_nan: int
    n_posinf: int
    n_neginf: int

    @property
    def n_inf(self) -> int:
        """+Inf and -Inf together."""
        return self.n_posinf + self.n_neginf

    @property
    def n_nonfinite(self) -> int:
        """NaN and ±Inf together."""
        return self.n_nan + self.n_posinf + self.n_neginf


@dataclass(frozen=True)
class TensorStats(_NonFinite):
    """Value statistics of one tensor (NaN/Inf excluded from min/max/mean/std)."""

    size: int
    """Number of elements."""
    n_nan: int = 0
    n_posinf: int = 0
    n_neginf: int = 0
    n_zero: int = 0
    n_negative: int = 0
    """Finite values below zero (``-0.0`` is not negative)."""
    n_finite: int = 0
    min: float = math.nan
    """Smallest finite value (NaN when there is none)."""
    max: float = math.nan
    """Largest finite value (NaN when there is none)."""
    mean: float = math.nan
    """Mean of the finite values."""
    std: float = math.nan
    """Population standard deviation of the finite values."""
    max_abs: float = math.nan
    """Largest finite |x|."""
    nonfinite_indices: tuple[int, ...] = ()
    """Flat indices of NaN/±Inf values (every channel for 1-D tensors, else the first few)."""
    negative_indices: tuple[int, ...] = ()
    """Flat indices of negative finite values (same bound)."""
    nan_indices: tuple[int, ...] = field(default=(), repr=False)
    """Flat indices of NaN values (same bound)."""

    def as_dict(self) -> dict:
        """JSON-safe form (non-finite floats become None)."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "size": self.size, "nan": self.n_nan, "posinf": self.n_posinf, "neginf": self.n_neginf,
            "zero": self.n_zero, "negative": self.n_negative, "finite": self.n_finite,
            "min": num(self.min), "max": num(self.max), "mean": num(self.mean), "std": num(self.std),
            "max_abs": num(self.max_abs),
        }


@dataclass(frozen=True)
class ValueCounts(_NonFinite):
    """How many values of a tensor are NaN, +Inf, -Inf (and negative, when asked), and where."""

    size: int
    """Number of elements."""
    n_nan: int = 0
    n_posinf: int = 0
    n_neginf: int = 0
    n_negative: int | None = None
    """Finite values below zero (``-0.0`` is not negative); None when not counted."""
    nonfinite_indices: tuple[int, ...] = ()
    """Flat indices of NaN/±Inf values (every channel for 1-D tensors, else the first few)."""
    nan_indices: tuple[int, ...] = field(default=(), repr=False)
    """Flat indices of NaN values (same bound)."""

    @property
    def n_finite(self) -> int:
        """Finite values."""
        return self.size - self.n_nan - self.n_posinf - self.n_neginf


class _MaskPool:
    """One reused boolean mask per thread for the clean-block test (no allocation per block)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, n: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < n:
            buf = self._local.buf = np.empty(max(n, 1 << 17), dtype=bool)
        return buf[:n]


_MASKS = _MaskPool()


def count_values(blocks: Iterable[np.ndarray], one_dimensional: bool = False, negatives: bool = False) -> ValueCounts:
    """NaN/+Inf/-Inf counts and indices of a tensor given as flat blocks (one pass).

    A block without a non-finite value costs one ``np.isfinite`` into a reused mask
    and one ``all``; only blocks that hold NaN/Inf are counted element by kind.
    ``negatives`` also counts the finite values below zero (the BN rules need it for
    ``moving_variance``). Index bounds as in :class:`TensorStats`.
    """
    limit = MAX_CHANNEL_INDICES if one_dimensional else MAX_INDICES
    size = n_nan = n_pos = n_neg_inf = n_negative = 0
    nonfinite: list[int] = []
    nans: list[int] = []
    for block in blocks:
        n = block.size
        if n == 0:
            continue
        offset = size
        size += n
        finite = np.isfinite(block, out=_MASKS.get(n))
        clean = finite.all()
        if negatives:
            with np.errstate(invalid="ignore"):
                n_negative += int(np.count_nonzero(block < 0)) if clean else int(np.count_nonzero((block < 0) & finite))
        if clean:
            continue
        bad = ~finite
        nf = n - int(np.count_nonzero(finite))
        nan = np.isnan(block)
        k_nan = int(np.count_nonzero(nan))
        k_pos = int(np.count_nonzero(block == np.inf))
        n_nan += k_nan
        n_pos += k_pos
        n_neg_inf += nf - k_nan - k_pos
        if len(nonfinite) < limit:
            nonfinite.extend((np.flatnonzero(bad)[: limit - len(nonfinite)] + offset).tolist())
        if k_nan and len(nans) < limit:
            nans.extend((np.flatnonzero(nan)[: limit - len(nans)] + offset).tolist())
    return ValueCounts(
        size=size, n_nan=n_nan, n_posinf=n_pos, n_neginf=n_neg_inf, n_negative=n_negative if negatives else None,
        nonfinite_indices=tuple(nonfinite), nan_indices=tuple(nans),
    )


class StatsAccumulator:
    """Fold blocks of one tensor into :class:`TensorStats`; call :meth:`add` per block."""

    def __init__(self, one_dimensional: bool = False):
        self.limit = MAX_CHANNEL_INDICES if one_dimensional else MAX_INDICES
        self.size = 0
        self.n_nan = self.n_posinf = self.n_neginf = self.n_zero = self.n_negative = self.n_finite = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.mean = 0.0
        self.m2 = 0.0
        self.nonfinite: list[int] = []
        self.negative: list[int] = []
        self.nans: list[int] = []

    def _keep(self, into: list[int], mask: np.ndarray, offset: int) -> None:
        room = self.limit - len(into)
        if room > 0:
            idx = np.flatnonzero(mask)[:room]
            into.extend((idx + offset).tolist())

    def add(self, block: np.ndarray) -> None:
        """Fold in one flat block (any float dtype)."""
        n = int(block.size)
        if n == 0:
            return
        offset = self.size
        self.size += n
        finite = np.isfinite(block)
        nf = int(np.count_nonzero(finite))
        if nf != n:
            bad = ~finite
            nan = np.isnan(block)
            n_nan = int(np.count_nonzero(nan))
            n_pos = int(np.count_nonzero(block == np.inf))
            self.n_nan += n_nan
            self.n_posinf += n_pos
            self.n_neginf += n - nf - n_nan - n_pos
            self._keep(self.nonfinite, bad, offset)
            if n_nan:
                self._keep(self.nans, nan, offset)
            vals = block[finite]
        else:
            vals = block
        self.n_finite += nf
        if nf == 0:
            return
        neg = vals < 0
        n_neg = int(np.count_nonzero(neg))
        self.n_negative += n_neg
        self.n_zero += int(np.count_nonzero(vals == 0))
        if n_neg and len(self.negative) < self.limit:
            # indices in the block, not in the compacted finite values
            self._keep(self.negative, (block < 0) & finite if nf != n else neg, offset)
        lo, hi = float(vals.min()), float(vals.max())
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)
        x = vals.astype(np.float64)  # a private copy: centred in place below
        with np.errstate(over="ignore", invalid="ignore"):
            b_mean = float(x.sum()) / nf
            np.subtract(x, b_mean, out=x)
            # einsum, not np.dot: no BLAS threads (they contend badly on a busy machine)
            b_m2 = float(np.einsum("i,i->", x, x))
        n_a = self.n_finite - nf
        if n_a == 0:
            self.mean, self.m2 = b_mean, b_m2
        else:
            tot = n_a + nf
            delta = b_mean - self.mean
            self.mean += delta * nf / tot
            self.m2 += b_m2 + delta * delta * n_a * nf / tot

    def result(self) -> TensorStats:
        """The statistics of everything added so far."""
        has = self.n_finite > 0
        return TensorStats(
            size=self.size,
            n_nan=self.n_nan,
            n_posinf=self.n_posinf,
            n_neginf=self.n_neginf,
            n_zero=self.n_zero,
            n_negative=self.n_negative,
            n_finite=self.n_finite,
            min=self.lo if has else math.nan,
            max=self.hi if has else math.nan,
            mean=self.mean if has else math.nan,
            std=math.sqrt(max(self.m2, 0.0) / self.n_finite) if has else math.nan,
            max_abs=max(abs(self.lo), abs(self.hi)) if has else math.nan,
            nonfinite_indices=tuple(self.nonfinite),
            negative_indices=tuple(self.negative),
            nan_indices=tuple(self.nans),
        )


def tensor_stats(blocks: Iterable[np.ndarray], one_dimensional: bool = False) -> TensorStats:
    """Statistics of a tensor given as flat blocks (one pass, one block in memory)."""
    acc = StatsAccumulator(one_dimensional)
    for block in blocks:
        acc.add(block)
    return acc.result()


def array_stats(values: np.ndarray) -> TensorStats:
    """Statistics of an in-memory array (1-D arrays keep every bad channel)."""
    arr = np.asarray(values)
    return tensor_stats([arr.reshape(-1)], one_dimensional=arr.ndim == 1)


def stacked(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty 1-D ``arrays`` concatenated, and where each starts in the result:
    one vectorised pass over many small vectors, reduced per vector with
    ``ufunc.reduceat(x, starts)``."""
    return np.concatenate(arrays), np.cumsum([0] + [a.size for a in arrays[:-1]])


def vector_counts(vectors: Sequence[np.ndarray], negatives: Sequence[bool]) -> list[ValueCounts]:
    """:func:`array_counts` of many small 1-D arrays (the BN vectors of a model) at once.

    One ``isfinite`` and one ``x < 0`` over all of them concatenated, reduced per array
    with ``reduceat``; only an array holding NaN/±Inf goes through :func:`array_counts`
    for its counts and indices. The same results, without a hundred calls per model.
    """
    out: list[ValueCounts | None] = [None] * len(vectors)
    idx = [i for i, x in enumerate(vectors) if x.ndim == 1 and x.size]
    if idx:
        sizes = [vectors[i].size for i in idx]
        flat, starts = stacked([vectors[i] for i in idx])
        finite = np.logical_and.reduceat(np.isfinite(flat), starts).tolist()
        with np.errstate(invalid="ignore"):
            neg = np.add.reduceat(flat < 0, starts, dtype=np.int64).tolist()
        same: dict[tuple[int, int | None], ValueCounts] = {}  # immutable: one per distinct result
        for j, i in enumerate(idx):
            if finite[j]:
                key = (sizes[j], int(neg[j]) if negatives[i] else None)
                c = same.get(key)
                if c is None:
                    c = same[key] = ValueCounts(size=key[0], n_negative=key[1])
                out[i] = c
    return [c if c is not None else array_counts(x, negatives=n) for c, x, n in zip(out, vectors, negatives)]


def array_counts(values: np.ndarray, negatives: bool = False) -> ValueCounts:
    """:func:`count_values` of an in-memory array (1-D arrays keep every bad channel)."""
    arr = np.asarray(values)
    return count_values([arr.reshape(-1)], one_dimensional=arr.ndim == 1, negatives=negatives)
