"""The scan's kernel (:func:`count_values`) against numpy on the whole array."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptscan.stats import MAX_INDICES, array_counts, count_values, tensor_stats, vector_counts

from strategies import EDGY_FLOAT_ARRAYS


def _blocks(arr: np.ndarray, size: int):
    flat = arr.reshape(-1)
    for i in range(0, flat.size, size):
        yield flat[i : i + size]


def _check(arr: np.ndarray, block: int, one_d: bool, negatives: bool) -> None:
    c = count_values(_blocks(arr, block), one_dimensional=one_d, negatives=negatives)
    flat = arr.reshape(-1)
    fin = np.isfinite(flat)
    limit = 1 << 16 if one_d else MAX_INDICES
    assert c.size == flat.size
    assert c.n_nan == int(np.isnan(flat).sum())
    assert c.n_posinf == int((flat == np.inf).sum())
    assert c.n_neginf == int((flat == -np.inf).sum())
    assert c.n_finite == int(fin.sum())
    assert c.nonfinite_indices == tuple(np.flatnonzero(~fin)[:limit].tolist())
    assert c.nan_indices == tuple(np.flatnonzero(np.isnan(flat))[:limit].tolist())
    assert c.n_negative == (int((flat[fin] < 0).sum()) if negatives else None)
    # the same counts and indices as the full statistics
    s = tensor_stats(_blocks(arr, block), one_dimensional=one_d)
    assert (c.n_nan, c.n_posinf, c.n_neginf, c.nonfinite_indices, c.nan_indices) == (
        s.n_nan, s.n_posinf, s.n_neginf, s.nonfinite_indices, s.nan_indices)
    if negatives:
        assert c.n_negative == s.n_negative


@settings(max_examples=300, deadline=None)
@given(
    arr=EDGY_FLOAT_ARRAYS,
    block=st.integers(1, 64),
    one_d=st.booleans(),
    negatives=st.booleans(),
)
def test_counts_match_numpy(arr, block, one_d, negatives):
    _check(arr, block, one_d, negatives)


def test_large_blocks_clean_and_dirty():
    # blocks larger than the reused mask's first size, clean ones and one with a NaN late
    arr = np.linspace(-1, 1, 3 * (1 << 17) + 5, dtype=np.float32)
    _check(arr, 1 << 18, False, True)
    arr[-2] = np.nan
    arr[1000] = -np.inf
    _check(arr, 1 << 17, False, True)
    c = count_values(_blocks(arr, 1 << 17))
    assert c.nonfinite_indices == (1000, arr.size - 2) and c.nan_indices == (arr.size - 2,)


def test_many_nonfinite_keep_first_indices_only():
    arr = np.full(10_000, np.nan, np.float32)
    c = count_values(_blocks(arr, 333))
    assert c.n_nan == 10_000 and c.nonfinite_indices == tuple(range(MAX_INDICES))
    v = np.full(5000, np.inf, np.float32)
    assert array_counts(v).nonfinite_indices == tuple(range(5000))
    assert array_counts(v).n_posinf == 5000 and array_counts(v).n_negative is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(EDGY_FLOAT_ARRAYS, st.booleans()), min_size=1, max_size=8))
def test_vector_counts_equal_array_counts_of_each(vectors):
    arrays = [a if i % 3 else a.reshape(1, -1) for i, (a, _) in enumerate(vectors)]  # some not 1-D
    negs = [n for _, n in vectors]
    arrays.append(np.empty(0, np.float32))  # an empty one among them
    negs.append(True)
    assert vector_counts(arrays, negs) == [array_counts(a, negatives=n) for a, n in zip(arrays, negs)]


def test_vector_counts_of_mixed_dtypes():
    vs = [np.array([1, -2, 0], np.float16), np.array([-0.0, 3], np.float64), np.array([np.inf, -1], np.float32),
          np.array([-1e-40, 2], np.float32)]
    negs = [True, True, True, False]
    got = vector_counts(vs, negs)
    assert got == [array_counts(a, negatives=n) for a, n in zip(vs, negs)]
    assert [g.n_negative for g in got] == [1, 0, 1, None]
