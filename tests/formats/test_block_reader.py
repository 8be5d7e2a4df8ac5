"""The block reader (``Checkpoint.iter_blocks``) against h5py's own reads."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import ckptscan
from ckptscan.errors import MalformedArchiveError
from ckptscan.formats.base import Variable, _IOCache, _read_contiguous, _read_h5, _slabs


def _bf16_expected(raw: np.ndarray) -> np.ndarray:
    return (np.asarray(raw).view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1)


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    p = tmp_path_factory.mktemp("blocks") / "layouts.h5"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        f.create_dataset("contig", data=rng.standard_normal((37, 19)).astype("f4"))
        f.create_dataset("chunk", data=rng.standard_normal((100, 30, 7)).astype("f4"), chunks=(7, 4, 3), compression="gzip")
        f.create_dataset("big_endian", data=rng.standard_normal((50, 3)).astype(">f8"))
        f.create_dataset("scalar", data=np.float32(3.5))
        bits = (np.arange(1000, dtype=np.uint16) + 0x3F00).reshape(10, 100)
        f.create_dataset("bf16", data=bits.view("V2"), chunks=(3, 50))
        f.create_dataset("bf16_contig", data=bits.view("V2"))
        f.create_dataset("wide_f16", data=rng.standard_normal((2, 5000)).astype("f2"), chunks=(1, 1000))
    return str(p)


def _var(f: h5py.File, name: str, path: str, offset: bool) -> Variable:
    ds = f[name]
    dtype = "bfloat16" if ds.dtype.kind == "V" else ds.dtype.newbyteorder("=").name
    off = ds.id.get_offset() if offset else None
    return Variable("layer", name, "layer", None, tuple(ds.shape), dtype, ds.name, path, offset=off)


@pytest.mark.parametrize("name", ["contig", "chunk", "big_endian", "scalar", "bf16", "wide_f16"])
@pytest.mark.parametrize("block", [1, 5, 64, 1000, 1 << 20])
def test_h5py_path_matches_h5py(h5file, name, block):
    io = _IOCache()
    with h5py.File(h5file, "r") as f:
        v = _var(f, name, h5file, offset=False)
        want = _bf16_expected(f[name][()]) if v.dtype == "bfloat16" else np.asarray(f[name][()]).reshape(-1)
        blocks = [b.copy() for b in _read_h5(f[name], v, block, io)]
    assert np.array_equal(np.concatenate(blocks), want)
    assert blocks[0].dtype == (np.float32 if v.dtype == "bfloat16" else want.dtype.newbyteorder("="))


@pytest.mark.parametrize("name", ["contig", "bf16_contig"])
@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_contiguous_path_matches_h5py_and_bounds_blocks(h5file, name, block):
    with h5py.File(h5file, "r") as f:
        v = _var(f, name, h5file, offset=True)
        raw = f[name][()]
    want = _bf16_expected(raw) if v.dtype == "bfloat16" else raw.reshape(-1)
    io = _IOCache()
    blocks = [b.copy() for b in _read_contiguous(v, block, io)]
    assert max(b.size for b in blocks) == min(block, v.size)
    assert np.array_equal(np.concatenate(blocks), want)
    io.close()


def test_slabs_cover_in_c_order_and_align_to_chunks():
    shape, chunks = (10, 6, 4), (3, 2, 4)
    seen = np.zeros(shape, dtype=int)
    order = []
    for sel in _slabs(shape, chunks, 30, 4):
        seen[sel] += 1
        order.extend(np.arange(240).reshape(shape)[sel].reshape(-1).tolist())
    assert (seen == 1).all()
    assert order == list(range(240))
    # the leading axis is cut on chunk rows: 30 // 24 = 1 row, but a chunk row is 3
    assert [s[0] for s in _slabs(shape, chunks, 30, 4)][:2] == [slice(0, 3), slice(3, 6)]
    # a trailing size larger than a block walks the leading axes one index at a time
    assert list(_slabs((2, 100), None, 40, 4))[:3] == [(0, slice(0, 40)), (0, slice(40, 80)), (0, slice(80, 100))]


def test_truncated_contiguous_data_is_an_error(tmp_path, h5file):
    with h5py.File(h5file, "r") as f:
        v = _var(f, "contig", h5file, offset=True)
    short = tmp_path / "short.h5"
    short.write_bytes(open(h5file, "rb").read()[: v.offset + 100])
    v = Variable(v.layer_path, v.name, v.layer_name, None, v.shape, v.dtype, v.h5path, str(short), offset=v.offset)
    with pytest.raises(MalformedArchiveError, match="data ends early"):
        list(_read_contiguous(v, 1 << 20))


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("kblocks")
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(300, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, x, name="m")
    paths = [str(d / "m.keras"), str(d / "m.weights.h5"), str(d / "m.h5")]
    model.save(paths[0])
    model.save_weights(paths[1])
    model.save(paths[2])
    return paths


def test_checkpoint_blocks_match_h5py_in_every_format(keras_files):
    for path in keras_files:
        with ckptscan.open_checkpoint(path) as ck:
            assert all(v.offset is not None for v in ck.variables), path
            for v in ck.variables:
                want = np.asarray(ck._dataset(v)[()]).reshape(-1)
                got = np.concatenate([b.copy() for b in ck.iter_blocks(v, 1000)])
                assert np.array_equal(got, want), (path, v.path)
                assert np.array_equal(ck.read(v), want.reshape(v.shape))


def test_interleaved_generators_keep_their_own_buffers(keras_files):
    with ckptscan.open_checkpoint(keras_files[0]) as ck:
        kernel = ck.find("conv/kernel")
        ga, gb = ck.iter_blocks(kernel, 500), ck.iter_blocks(kernel, 700)
        a1 = next(ga)
        b1 = next(gb)
        assert np.array_equal(a1, ck.read(kernel).reshape(-1)[:500])
        assert np.array_equal(b1, ck.read(kernel).reshape(-1)[:700])


def test_exit_closes_file_descriptors(keras_files):
    with ckptscan.open_checkpoint(keras_files[1]) as ck:
        for v in ck.variables:
            for _ in ck.iter_blocks(v):
                pass
        fds = list(ck._io.fds.values())
        assert fds
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_variable_make_equals_the_dataclass_constructor():
    import dataclasses

    from ckptscan.formats.base import Variable

    kw = dict(layer_path="m/bn", name="gamma", layer_name="m", layer_class="BatchNormalization", shape=(4,),
              dtype="float32", h5path="k", file="/x/ck.data-00000-of-00001")
    for extra in ({}, {"offset": 12, "nbytes": 16, "member": "ck.data-00000-of-00001", "naming": "inferred",
                       "kind": "optimizer", "about": "slot"}):
        a, b = Variable(**kw, **extra), Variable.make(**kw, **extra)
        assert a == b and hash(a) == hash(b) and dataclasses.asdict(a) == dataclasses.asdict(b)
        with pytest.raises(dataclasses.FrozenInstanceError):
            b.name = "beta"
    with pytest.raises(TypeError, match="no field 'nmae'"):
        Variable.make(**kw, nmae="x")
    with pytest.raises(TypeError, match="needs 'file'"):
        Variable.make(**{k: v for k, v in kw.items() if k != "file"})
