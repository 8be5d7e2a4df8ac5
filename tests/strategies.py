"""Hypothesis strategies shared by the statistics property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: 1-D float16/32/64 arrays of up to 300 values, with NaN, ±Inf, ±0 and values far past
#: float16's range mixed in (float16 arrays draw from every float16 bit pattern).
EDGY_FLOAT_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=st.integers(0, 300),
    elements=st.floats(-2.0**100, 2.0**100, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]),
) | hnp.arrays(dtype=np.float16, shape=st.integers(0, 300))
