"""What tf-keras writes otherwise than Keras 3 is named as tf-keras names it, in every
layout tf-keras writes (``fixtures/tfk_names/``, ``fixtures/gen_tfk_names.py``).

Layer names holding ``/`` (MobileNetV3's ``Conv/BatchNorm``, DenseNet's ``conv1/bn``):
the ``slash`` model has both traps, nested and at the top: ``conv1/bn`` beside a layer
``bn``, ``Conv/BatchNorm`` and ``expanded_conv/squeeze_excite/Conv`` beside ``Conv``.
Before, a full-model ``.h5`` gave ``conv1/bn``'s weights to the layer ``bn`` and
``expanded_conv/squeeze_excite/Conv``'s to ``Conv``; a top-level ``top/bn`` came out as
``top/bn/top/bn`` in an ``.h5`` and, with a config, in a TensorFlow checkpoint.

The ``traps`` model, in tf-keras' ``.keras`` and ``.weights.h5`` (Keras 3's layout, names
from the config): ``DepthwiseConv2D``'s ``depthwise_kernel`` came out as Keras 3's
``kernel``, ConvNeXt's ``LayerScale`` ``gamma`` as ``variable``, and the ``scale`` of
``Attention``/``AdditiveAttention`` as ``vars/0``; tf-keras was not recognised behind a
``Sequential``, whose config says only ``keras``. Its legacy weights-only ``.h5`` with a
config: the config was ignored, so the ``Sequential`` ``block`` nested in ``inner`` was
missing from its layers' paths.

``expected_names.json`` is what tf-keras reported when it wrote the files: every weight,
and every Adam slot with the weight it belongs to, each with the sha256 of its value, so
a name on another layer's tensor fails although the sets look alike.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from conftest import fixture_path

from ckptscan import open_checkpoint, scan
from ckptscan.naming import scope_end

DIR = "tfk_names"
EXPECTED = json.loads(fixture_path(DIR, "expected_names.json").read_text())
CONFIG = str(fixture_path(DIR, "slash.config.json"))
TRAPS_CONFIG = str(fixture_path(DIR, "traps.config.json"))


def _sha(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(values)).tobytes()).hexdigest()


def _weights(path, config=None) -> set[tuple]:
    with open_checkpoint(path, config=config) as ck:
        return {(v.layer_path, v.name, tuple(v.shape), v.dtype, _sha(ck.read(v))) for v in ck.variables
                if v.kind == "weight"}


def _expected_weights(model: str = "slash") -> set[tuple]:
    return {(lp, n, tuple(shape), dt, sha) for lp, n, shape, dt, sha in EXPECTED[model]["weights"]}


@pytest.mark.parametrize("name", ["slash.h5", "slash_weights.h5"])
def test_hdf5_names_equal_tf_keras(name):
    got = _weights(fixture_path(DIR, name))
    want = _expected_weights()
    assert got == want, (sorted(got - want), sorted(want - got))


def test_tf_checkpoint_names_and_slots_equal_tf_keras():
    path = fixture_path(DIR, "slash_sw", "ckpt.index")
    assert _weights(path, CONFIG) == _expected_weights()
    with open_checkpoint(path, config=CONFIG) as ck:
        slots = {(*ck.slots[v.path], tuple(v.shape), v.dtype, _sha(ck.read(v))) for v in ck.variables
                 if v.path in ck.slots}
        assert all(v.naming == "known" for v in ck.variables)
    assert slots == {(of, s, tuple(shape), dt, sha) for of, s, shape, dt, sha in EXPECTED["slash"]["slots"]}


def test_tf_checkpoint_without_config_names_the_top_level_and_infers_the_nested_model():
    """Without a config the nested model's name is unknown (marked inferred); the top-level
    layers with ``/`` in their names are still whole."""
    with open_checkpoint(fixture_path(DIR, "slash_sw", "ckpt.index")) as ck:
        top = {(v.layer_path, v.name) for v in ck.variables if v.kind == "weight" and v.naming == "known"}
        nested = {v.path for v in ck.variables if v.kind == "weight" and v.naming == "inferred"}
    assert top == {("top/bn", n) for n in ("gamma", "beta", "moving_mean", "moving_variance")} | {
        ("top", "kernel"), ("top", "bias")}
    assert "layer_with_weights-0/conv1/bn/moving_variance" in nested and len(nested) == 18


@pytest.mark.parametrize(("name", "config"), [("traps.keras", None), ("traps.weights.h5", TRAPS_CONFIG),
                                              ("traps_weights.h5", TRAPS_CONFIG)])
def test_tf_keras_variable_names_and_nesting(name, config):
    got = _weights(fixture_path(DIR, name), config)
    want = _expected_weights("traps")
    assert got == want, (sorted(got - want), sorted(want - got))
    with open_checkpoint(fixture_path(DIR, name), config=config) as ck:
        assert {v.naming for v in ck.variables} == {"known"}


@pytest.mark.parametrize("name", ["slash.h5", "slash_weights.h5", "slash_sw", "traps.keras", "traps_weights.h5"])
def test_clean_fixture_scans_clean(name):
    cfg = TRAPS_CONFIG if name.startswith("traps") else CONFIG
    res = scan(str(fixture_path(DIR, name)), config=cfg).files[0]
    assert res.status == "scanned", res.reason
    assert res.findings == ()


def test_nan_in_conv1_bn_is_reported_at_conv1_bn(tmp_path):
    """The fault is found at the layer that holds it, not at its namesake ``bn``."""
    p = tmp_path / "slash.h5"
    shutil.copy(fixture_path(DIR, "slash.h5"), p)
    with open_checkpoint(p) as ck:
        where = {v.path: v.h5path for v in ck.variables}
    with h5py.File(p, "r+") as f:
        ds = f[where["backbone/conv1/bn/moving_variance"]]
        vals = ds[...]
        vals[2] = np.nan
        ds[...] = vals
    found = scan(str(p)).files[0].findings
    assert {(f.layer_path, f.variable, f.indices) for f in found if f.rule_id == "BN001"} == {
        ("backbone/conv1/bn", "moving_variance", (2,))}


@pytest.mark.parametrize(("scopes", "name", "end"), [
    (["dense"], "dense", 0),
    (["outer", "dense_1", "cell"], "dense", 1),  # made unique by TensorFlow
    (["conv1", "bn"], "conv1/bn", 1),
    (["conv1", "bn_2"], "conv1/bn", 1),
    (["x", "Conv", "BatchNorm", "sub"], "Conv/BatchNorm", 2),
    (["expanded_conv", "squeeze_excite", "Conv"], "expanded_conv/squeeze_excite/Conv", 2),
    (["conv1", "bn"], "bn", 1),
    (["conv1"], "conv1/bn", None),
    (["conv2", "bn"], "conv1/bn", None),
    (["dense_x"], "dense", None),
])
def test_scope_end(scopes, name, end):
    assert scope_end(scopes, name) == end


def test_tf_keras_recognised_behind_a_sequential_and_not_by_a_users_module():
    from ckptscan.naming import written_by_tf_keras

    with zipfile.ZipFile(fixture_path(DIR, "traps.keras")) as z:
        doc = json.loads(z.read("config.json"))
    assert doc["class_name"] == "Sequential" and doc["module"] == "keras"  # what tf-keras writes
    assert written_by_tf_keras(doc)
    keras3 = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "myproj.engine.layers", "class_name": "MyLayer", "config": {}},
        {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"layers": []}}]}}
    assert not written_by_tf_keras(keras3)
