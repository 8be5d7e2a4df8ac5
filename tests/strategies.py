"""Hypothesis strategies shared by the property tests (statistics, the TF screening passes)."""

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


@st.composite
def shard_layouts(draw, overlap_shift: int = 0, max_tensors: int = 12, max_values: int = 700):
    """Tensors laid out in a data shard as a hostile or unusual index may describe them:
    adjacent or with gaps, mixed float widths at odd offsets, some kept, some with a
    wrong checksum or none, NaN/±Inf anywhere, some overlapping an earlier one (starting
    ``overlap_shift`` bytes after it). Each: ``name, x, offset, keep, crc ("ok", "wrong",
    "none"), overlap``."""
    specs, pos = [], 0
    for i in range(draw(st.integers(1, max_tensors))):
        dt = draw(st.sampled_from([np.float16, np.float32, np.float64]))
        n = draw(st.integers(1, max_values))
        x = np.arange(n, dtype=np.float64).astype(dt) / 7
        for _ in range(draw(st.integers(0, 2))):
            x[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        pos += draw(st.sampled_from([0, 0, 0, 1, 3, 8]))  # mostly adjacent: long runs
        overlap = i > 0 and draw(st.integers(0, 9)) == 0
        specs.append(dict(name=f"t{i}", x=x, offset=specs[-1]["offset"] + overlap_shift if overlap else pos,
                          keep=draw(st.booleans()), crc=draw(st.sampled_from(["ok", "ok", "ok", "wrong", "none"])),
                          overlap=overlap))
        if not overlap:
            pos += x.nbytes
    return specs


def write_shard(path, layout) -> bytes:
    """Write ``layout`` (from :func:`shard_layouts`) to ``path``: each tensor not marked
    overlapping at its offset, zeros in the gaps. Returns the bytes written."""
    size = max(s["offset"] + s["x"].nbytes for s in layout)
    data = bytearray(size)
    for s in layout:
        if not s["overlap"]:
            data[s["offset"]: s["offset"] + s["x"].nbytes] = s["x"].tobytes()
    path.write_bytes(bytes(data))
    return bytes(data)
