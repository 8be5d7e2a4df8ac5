"""Names, asserted by tf-keras itself (issue 14, Must show 1).

For every TensorFlow-format fixture, the TF child (``tests/tf_child.py``, one process for
the session) builds the model in tf-keras, restores the committed checkpoint with
TensorFlow's own loader and reports every variable: model weights as (layer path,
variable, shape, dtype), optimizer slots as (the weight they belong to, slot name, shape,
dtype) from the optimizer's own slot creation, other training state by name. ckptscan's
inventory must be exactly that set, and the tensor ckptscan reads under each name must be
byte for byte the value TensorFlow restored into that variable (a name on the wrong
tensor, such as ``m`` and ``v`` swapped, fails here although the sets are equal).
``fixtures/tfckpt/manifest.json`` plays no part.
"""

from __future__ import annotations

import pytest

from tfkeras import BY_NAME, FIXTURES_TF, TF, ckptscan_records, tf_records, tf_session


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    return tf_session(tmp_path_factory)


@pytest.mark.parametrize("name", [f.name for f in FIXTURES_TF])
def test_inventory_equals_what_tf_keras_restores(tf, name):
    fx = BY_NAME[name]
    res = tf.original[name]
    assert res["restored"], res.get("traceback") or res["error"]
    want = tf_records(res)
    got, _ = ckptscan_records(fx.path(TF), fx.config_path())
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    wrong = sorted(k for k in want if got[k] != want[k])
    assert wrong == [], f"ckptscan reads another tensor than tf-keras restores for {wrong}"


def test_every_kind_of_variable_is_covered(tf):
    """The comparison is not vacuous: weights, slots and state in every fixture that has them,
    nested models, sub-layers, float16 and TF1 slots among them."""
    kinds = {name: {k[0] for k in tf_records(tf.original[name])} for name in BY_NAME}
    assert kinds["misc_sw"] == {"weight"}
    for name in set(BY_NAME) - {"misc_sw"}:
        assert kinds[name] == {"weight", "slot", "state"}, name
    seed = tf_records(tf.original["seed_broken_sw"])
    assert ("weight", "resnet101v2/post_bn", "moving_variance", (32,), "float32") in seed
    assert ("slot", "class_head/kernel", "m", (32, 5), "float32") in seed
    assert ("slot", "bi/backward_lstm/lstm_cell/recurrent_kernel", "v", (3, 12), "float32") in tf_records(
        tf.original["bidi_sw"])
    m16 = tf_records(tf.original["mixed16_sw"])
    assert ("slot", "half_dense/kernel", "m", (4, 4), "float16") in m16
    assert ("state", "optimizer/current_loss_scale", (), "float32") in m16
    assert ("state", "save_counter", (), "int64") in tf_records(tf.original["mgr"])
    assert ("slot", "conv1/conv/kernel", "Adam_1", (3, 3, 3, 4), "float32") in tf_records(tf.original["tf1"])
    tf1_slots = {(v["slot"], v["tf_slot"]) for v in tf.original["tf1"]["variables"] if v["kind"] == "slot"}
    assert tf1_slots == {("Adam", "m"), ("Adam_1", "v")}  # stored suffix vs TF's own slot name


def test_savedmodel_optimizer_slots_hold_trained_values(tf):
    """The SavedModel's slots were restored, not left at their zero initial values."""
    import hashlib

    import numpy as np

    zeros = hashlib.sha256(np.zeros((6, 3), np.float32).tobytes()).hexdigest()
    slots = {k: v for k, v in tf_records(tf.original["nested_broken_sm"]).items() if k[0] == "slot"}
    assert len(slots) == 24
    assert slots[("slot", "head_a/kernel", "m", (6, 3), "float32")] != zeros
