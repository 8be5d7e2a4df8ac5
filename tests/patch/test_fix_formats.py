"""ckptscan fix on every layout × every applicable strategy, checked with Keras itself.

Each repaired checkpoint must load in Keras 3 (jax) and predict finite values; only
the targeted elements may change (every other dataset bit-identical); a re-scan must
report no error; ``from REF`` must copy the reference bits exactly.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import ckptscan
from ckptscan.formats import open_checkpoint
from ckptscan.patch.rawio import read_raw
from ckptscan.report import Severity
from ckptscan import scan
from test_patch_models import (  # noqa: F401  (fixmodels is a fixture)
    BROKEN, BROKEN_CLAMP, BROKEN_KERNEL, LAYOUTS, X, dataset_digests, fixmodels, fresh, load_keras, sha256,
)


def raw_of(path, names):
    """(layer, variable) → stored bits, for the given names."""
    with open_checkpoint(path) as ck:
        return {n: read_raw(ck, ck.find("/".join(n))) for n in names}


def errors_of(path):
    rep = scan([str(path)])
    assert all(r.status == "scanned" for r in rep.files), rep.files
    return [f for f in rep.findings if f.severity is Severity.ERROR]


def check_repaired(path, layout, broken, before_digests, before_raw):
    # only the datasets holding the broken variables differ
    after = dataset_digests(path)
    assert set(after) == set(before_digests)
    changed = {k for k in after if after[k] != before_digests[k]}
    assert len(changed) == len(broken), changed
    # inside those, only the broken elements differ
    after_raw = raw_of(path, list(broken))
    for name, vals in broken.items():
        a, b = before_raw[name], after_raw[name]
        diff = set(np.nonzero(a.view(f"u{a.itemsize}") != b.view(f"u{b.itemsize}"))[0].tolist())
        assert diff <= set(vals), (name, diff)
    assert errors_of(path) == []
    p = path
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            assert zf.testzip() is None
    model = load_keras(p, layout)
    y = np.asarray(model.predict(X, verbose=0))
    assert np.isfinite(y).all()
    return model


@pytest.mark.parametrize("strategy", ["reset", "median", "value", "from"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_every_strategy(fixmodels, tmp_path, layout, strategy):
    p = fresh(fixmodels[(layout, "bn")], tmp_path / "w")
    ref = fixmodels[(layout, "clean")]
    before = dataset_digests(p)
    before_raw = raw_of(p, list(BROKEN))
    assert len(errors_of(p)) >= 4
    kw = {"ref": str(ref)} if strategy == "from" else {"value": 0.75} if strategy == "value" else {}
    man = ckptscan.fix(str(p), strategy=strategy, **kw)
    (f,) = man.files
    assert f.status == "fixed", f
    assert f.mode == ("rewrite" if layout == "deflated" else "in-place")
    assert {(c.layer_path, c.variable): set(c.indices) for c in f.changes} == {k: set(v) for k, v in BROKEN.items()}
    model = check_repaired(p, layout, BROKEN, before, before_raw)
    if layout == "deflated":  # the atomic rewrite keeps member order, names and compression
        def members(z):
            with zipfile.ZipFile(z) as zf:
                return [(i.filename, i.compress_type, i.date_time) for i in zf.infolist()]
        assert members(p) == members(fixmodels[(layout, "bn")])
    after_raw = raw_of(p, list(BROKEN))
    if strategy == "from":  # bit for bit the reference's bits at the broken elements
        ref_raw = raw_of(ref, list(BROKEN))
        for name, idx in BROKEN.items():
            i = list(idx)
            assert after_raw[name][i].tobytes() == ref_raw[name][i].tobytes()
    if strategy == "reset":  # Constant(2.0) honoured for bn, ones for bn2, zeros for means
        bn = model.get_layer("bn")
        init = 1.0 if layout in ("weights", "sharded") else 2.0  # bare weights: no config, Keras default
        assert float(np.asarray(bn.moving_variance)[2]) == init and float(np.asarray(bn.moving_variance)[3]) == init
        assert float(np.asarray(bn.moving_mean)[1]) == 0.0
        bn2 = model.get_layer("block").get_layer("bn2")
        assert float(np.asarray(bn2.moving_variance)[0]) == 1.0
        assert all(c.note.startswith("stop-gap") for c in f.changes)
    if strategy == "value":
        assert float(np.asarray(model.get_layer("bn").moving_variance)[2]) == 0.75


@pytest.mark.parametrize("layout", ["keras", "legacy", "sharded", "fp16"])
def test_clamp(fixmodels, tmp_path, layout):
    p = fresh(fixmodels[(layout, "clamp")], tmp_path / "w")
    before, before_raw = dataset_digests(p), raw_of(p, list(BROKEN_CLAMP))
    (f,) = ckptscan.fix(str(p), strategy="clamp", clamp_max=65504.0).files
    assert f.status == "fixed", f
    model = check_repaired(p, layout, BROKEN_CLAMP, before, before_raw)
    mv = np.asarray(model.get_layer("bn").moving_variance, dtype=np.float32)
    assert mv[0] == 65504.0 and mv[3] == 0.0
    assert np.asarray(model.get_layer("block").get_layer("bn2").moving_variance, dtype=np.float32)[2] == 65504.0


@pytest.mark.parametrize("layout", ["keras", "legacy", "sharded", "fp16"])
def test_kernel_value_and_from(fixmodels, tmp_path, layout):
    src, ref = fixmodels[(layout, "kernel")], fixmodels[(layout, "clean")]
    p = fresh(src, tmp_path / "auto")
    (f,) = ckptscan.fix(str(p)).files  # no automatic repair for a kernel
    assert f.status == "unfixed" and f.unfixed == (
        "head/kernel: no automatic repair for a non-BN tensor; use --value V or --from REF",)
    assert sha256(p) == sha256(src)
    for kw in ({"strategy": "value", "value": 0.0}, {"ref": str(ref)}):
        p = fresh(src, tmp_path / kw.get("strategy", "from"))
        before, before_raw = dataset_digests(p), raw_of(p, list(BROKEN_KERNEL))
        (f,) = ckptscan.fix(str(p), **kw).files
        assert f.status == "fixed", f
        check_repaired(p, layout, BROKEN_KERNEL, before, before_raw)
        if "ref" in kw:
            assert raw_of(p, list(BROKEN_KERNEL)) [("head", "kernel")].tobytes() == \
                raw_of(ref, list(BROKEN_KERNEL))[("head", "kernel")].tobytes()


@pytest.mark.parametrize("layout,ref_layout", [("keras", "legacy"), ("legacy", "sharded"), ("sharded", "keras"),
                                               ("dir", "weights")])
def test_from_any_format(fixmodels, tmp_path, layout, ref_layout):
    p = fresh(fixmodels[(layout, "bn")], tmp_path / "w")
    ref = fixmodels[(ref_layout, "clean")]
    before = dataset_digests(p)
    (f,) = ckptscan.fix(str(p), ref=str(ref), whole_tensor=True).files
    assert f.status == "fixed", f
    assert all(c.indices is None for c in f.changes)
    after = dataset_digests(p)
    assert len({k for k in after if after[k] != before[k]}) == len(BROKEN)
    got, want = raw_of(p, list(BROKEN)), raw_of(ref, list(BROKEN))
    for name in BROKEN:
        assert got[name].tobytes() == want[name].tobytes()
    assert errors_of(p) == []
    assert np.isfinite(np.asarray(load_keras(p, layout).predict(X, verbose=0))).all()


@pytest.mark.parametrize("layout", ["weights", "sharded"])
def test_reset_reads_initializer_from_config(fixmodels, tmp_path, layout):
    p = fresh(fixmodels[(layout, "bn")], tmp_path / "w")
    cfg = tmp_path / "config.json"
    with zipfile.ZipFile(fixmodels[("keras", "clean")]) as zf:
        cfg.write_bytes(zf.read("config.json"))
    (f,) = ckptscan.fix(str(p), strategy="reset", config=str(cfg)).files
    assert f.status == "fixed", f
    new = {(c.layer_path, c.variable): c.new for c in f.changes}
    assert new[("bn", "moving_variance")] == (2.0, 2.0) and new[("block/bn2", "moving_variance")] == (1.0,)
    assert "no layer config" not in f.changes[0].note


def test_median_refuses_without_healthy_channel(fixmodels, tmp_path):
    src = fixmodels[("keras", "allbad")]
    p = fresh(src, tmp_path / "w")
    (f,) = ckptscan.fix(str(p), strategy="median").files
    assert f.status == "refused"
    assert f.reason == ("block/bn2/moving_variance: no healthy channel left for median; "
                        "strategies that apply: reset, from REF, value V (V > 0)")
    assert sha256(p) == sha256(src)
    (f,) = ckptscan.fix(str(p)).files  # auto falls back to reset and says it is a stop-gap
    assert f.status == "fixed" and [c.strategy for c in f.changes] == ["reset"]
    assert f.changes[0].note.startswith("stop-gap")
