"""``Checkpoint.iter_blocks`` streams exactly ``ds[...]`` for every storage layout.

Files are written with h5py in the Keras 3 weights-store layout (``layers/<x>/vars/<i>``):
contiguous, chunked + gzip (what ``h5repack -f GZIP=…`` produces), scalar, float16 and
bfloat16 (HDF5 opaque 2-byte, ``dtype="bfloat16"`` attribute, as Keras writes it).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckptscan
from ckptscan.formats.base import bf16_to_f32


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """Truncating float32 → bfloat16 bits (exact for values already representable)."""
    return (np.array(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_store(path, arrays: dict[str, tuple[np.ndarray, dict]]) -> None:
    """One ``layers/<name>/vars/0`` dataset per entry; kwargs go to ``create_dataset``."""
    with h5py.File(path, "w") as f:
        for name, (arr, kw) in arrays.items():
            g = f.create_group(f"layers/{name}/vars")
            kw = dict(kw)
            bf16 = kw.pop("bfloat16", False)
            if bf16:
                ds = g.create_dataset("0", data=bf16_bits(arr).view("V2"), **kw)
                ds.attrs["dtype"] = "bfloat16"
            else:
                g.create_dataset("0", data=arr, **kw)


def reference(path, var) -> np.ndarray:
    with h5py.File(path, "r") as f:
        raw = f[var.h5path][...]
    if var.dtype == "bfloat16":
        return bf16_to_f32(np.asarray(raw).reshape(-1))
    return np.asarray(raw).reshape(-1)


def streamed(ckpt, var, block: int) -> np.ndarray:
    parts = [np.array(b, copy=True) for b in ckpt.iter_blocks(var, block)]  # blocks are reused buffers
    return np.concatenate(parts) if parts else np.zeros(0)


def assert_stream_equal(path, block: int) -> None:
    with ckptscan.open_checkpoint(path) as ckpt:
        assert ckpt.variables
        for var in ckpt.variables:
            got = streamed(ckpt, var, block)
            want = reference(path, var)
            assert got.shape == want.shape, var.h5path
            np.testing.assert_array_equal(got, want, err_msg=var.h5path)
            if var.dtype == "bfloat16":
                assert got.dtype == np.float32
            else:
                assert got.dtype == np.dtype(var.dtype)
            np.testing.assert_array_equal(ckpt.read(var).reshape(-1), want)


def test_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((300, 70)).astype(np.float32)
    big[5, 7] = np.nan
    big[200, 1] = np.inf
    arrays = {
        "contiguous": (big, {}),
        "chunked_gzip": (big, {"chunks": True, "compression": "gzip"}),
        "chunked_small": (big, {"chunks": (7, 3), "compression": "gzip", "shuffle": True}),
        "scalar": (np.float32(3.5), {}),
        "scalar_int": (np.int64(42), {}),
        "float16": (rng.standard_normal((33, 5)).astype(np.float16), {}),
        "float16_chunked": (rng.standard_normal((33, 5)).astype(np.float16), {"chunks": True, "compression": "gzip"}),
        "bfloat16": (rng.standard_normal((41, 9)).astype(np.float32), {"bfloat16": True}),
        "bfloat16_chunked": (rng.standard_normal((41, 9)).astype(np.float32), {"bfloat16": True, "chunks": (5, 9), "compression": "gzip"}),
        "vector": (rng.standard_normal(1000).astype(np.float64), {}),
    }
    path = tmp_path / "layouts.weights.h5"
    write_store(path, arrays)
    with ckptscan.open_checkpoint(path) as ckpt:
        by_layer = {v.layer_path.rsplit("/", 1)[-1]: v for v in ckpt.variables}
        assert by_layer["contiguous"].offset is not None
        assert by_layer["chunked_gzip"].offset is None
        assert by_layer["bfloat16"].dtype == "bfloat16"
        assert by_layer["bfloat16_chunked"].dtype == "bfloat16"
        assert by_layer["float16"].dtype == "float16"
        assert by_layer["scalar"].shape == ()
    for block in (1, 7, 64, 1 << 20):
        assert_stream_equal(path, block)
    # bfloat16 decoded: equal to the float32 values truncated to bfloat16
    with ckptscan.open_checkpoint(path) as ckpt:
        v = next(v for v in ckpt.variables if v.layer_path.endswith("bfloat16"))
        src = arrays["bfloat16"][0]
        np.testing.assert_array_equal(ckpt.read(v), bf16_to_f32(bf16_bits(src)).reshape(src.shape))


def test_blocks_never_exceed_block_size_for_contiguous(tmp_path):
    path = tmp_path / "c.weights.h5"
    write_store(path, {"w": (np.arange(1000, dtype=np.float32).reshape(10, 100), {})})
    with ckptscan.open_checkpoint(path) as ckpt:
        sizes = [b.size for b in ckpt.iter_blocks(ckpt.variables[0], 64)]
    assert max(sizes) == 64 and sum(sizes) == 1000


_dtypes = st.sampled_from(["float32", "float16", "bfloat16", "float64", "int32"])
_shape = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shape, dtype=_dtypes, layout=st.sampled_from(["contiguous", "chunked", "gzip"]),
       block=st.integers(1, 300), data=st.data())
def test_stream_equals_dataset_property(tmp_path_factory, shape, dtype, layout, block, data):
    n = int(np.prod(shape)) if shape else 1
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        arr = rng.integers(-1000, 1000, size=shape).astype(np.int32)
    else:
        arr = (rng.standard_normal(n) * 100).astype(np.float32 if dtype == "bfloat16" else dtype).reshape(shape)
    kw: dict = {}
    if dtype == "bfloat16":
        kw["bfloat16"] = True
    if layout != "contiguous" and shape and n > 0:
        kw["chunks"] = tuple(data.draw(st.integers(1, d)) for d in shape)
        if layout == "gzip":
            kw["compression"] = "gzip"
    path = tmp_path_factory.mktemp("prop") / "p.weights.h5"
    write_store(path, {"w": (arr, kw)})
    with ckptscan.open_checkpoint(path) as ckpt:
        (var,) = ckpt.variables
        assert var.shape == tuple(shape)
        assert var.dtype == dtype
        got = streamed(ckpt, var, block)
    np.testing.assert_array_equal(got, reference(path, var))


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_keras_written_low_precision(tmp_path, policy):
    """A real Keras file: streamed values equal Keras' own variables (bfloat16 decoded)."""
    from conftest import need_module

    keras = need_module("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, dtype=policy), keras.layers.BatchNormalization(dtype=policy)])
    path = tmp_path / "m.keras"
    model.save(path)
    with ckptscan.open_checkpoint(path) as ckpt:
        assert {v.dtype for v in ckpt.variables} == {policy}
        names = {f"{layer.name}/{w.name}": w for layer in model.layers for w in layer.weights}
        assert sorted(v.path for v in ckpt.variables) == sorted(names)
        for name, w in names.items():
            var = ckpt.find(name)
            want = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(w, "float32")))
            np.testing.assert_array_equal(ckpt.read(var).astype(np.float32), want)
