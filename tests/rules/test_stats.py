"""Streaming statistics against numpy on the whole array."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ckptscan.stats import MAX_INDICES, array_stats, tensor_stats

from strategies import EDGY_FLOAT_ARRAYS


def _blocks(arr: np.ndarray, size: int):
    flat = arr.reshape(-1)
    for i in range(0, flat.size, size):
        yield flat[i : i + size]


def _check(arr: np.ndarray, block: int) -> None:
    s = tensor_stats(_blocks(arr, block), one_dimensional=True)
    flat = arr.reshape(-1)
    fin = np.isfinite(flat)
    assert s.size == flat.size
    assert s.n_nan == int(np.isnan(flat).sum())
    assert s.n_posinf == int((flat == np.inf).sum())
    assert s.n_neginf == int((flat == -np.inf).sum())
    assert s.n_finite == int(fin.sum())
    assert s.n_zero == int((flat == 0).sum())
    assert s.n_negative == int((flat[fin] < 0).sum())
    assert s.nonfinite_indices == tuple(np.flatnonzero(~fin).tolist())
    assert s.negative_indices == tuple(np.flatnonzero(fin & (flat < 0)).tolist())
    if fin.any():
        v = flat[fin].astype(np.float64)
        assert s.min == v.min() and s.max == v.max()
        assert s.max_abs == np.abs(v).max()
        scale = max(1.0, float(np.abs(v).max()))
        assert math.isclose(s.mean, v.mean(), rel_tol=1e-9, abs_tol=1e-9 * scale)
        assert math.isclose(s.std, v.std(), rel_tol=1e-6, abs_tol=1e-7 * scale)
    else:
        assert math.isnan(s.min) and math.isnan(s.mean) and math.isnan(s.std)


@settings(max_examples=200, deadline=None)
@given(
    arr=EDGY_FLOAT_ARRAYS,
    block=st.integers(1, 64),
)
def test_streaming_matches_numpy(arr, block):
    _check(arr, block)


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=np.float32,
        shape=st.integers(1, 400),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    block=st.integers(1, 97),
)
def test_finite_moments_match_numpy(arr, block):
    _check(arr, block)


def test_large_tensor_keeps_first_indices_only():
    arr = np.zeros((100, 100), np.float32)
    arr.reshape(-1)[::7] = np.nan
    s = tensor_stats(_blocks(arr, 333))
    assert s.n_nan == len(range(0, 10000, 7))
    assert s.nonfinite_indices == tuple(range(0, 7 * MAX_INDICES, 7))


def test_array_stats_1d_keeps_every_channel():
    v = np.ones(5000, np.float32)
    bad = [3, 100, 4000, 4999]
    v[bad] = [np.nan, np.inf, -np.inf, np.nan]
    v[7] = -2.0
    s = array_stats(v)
    assert s.nonfinite_indices == tuple(bad)
    assert s.nan_indices == (3, 4999)
    assert s.negative_indices == (7,)
    assert (s.n_nan, s.n_posinf, s.n_neginf, s.n_negative) == (2, 1, 1, 1)
    assert s.min == -2.0 and s.max == 1.0


def test_welford_is_stable_for_offset_data():
    # a large offset kills the naive sum-of-squares formula in float32/float64
    rng = np.random.default_rng(0)
    v = (1e8 + rng.standard_normal(100_000)).astype(np.float64)
    s = tensor_stats(_blocks(v, 1000))
    assert s.std == pytest.approx(v.std(), rel=1e-6)
