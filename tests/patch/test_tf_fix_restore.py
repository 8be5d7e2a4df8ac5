"""After ``ckptscan fix``, TensorFlow restores the checkpoint (issue 14, Must show 3).

Each fixture with faults is copied and repaired by ``ckptscan fix`` (in process, in the
session fixture of ``tests/tfkeras.py``); the TF child then restores original and copy with
TensorFlow's own loaders, which verify every CRC32C they read: ``load_weights``
(+ ``assert_consumed``), ``tf.train.Checkpoint.restore`` (+ ``assert_consumed``),
``load_model`` for the SavedModel (+ its optimizer slots through the same variables file)
and a TF1 ``Saver.restore`` into the rebuilt graph. Asserted:

* the broken original shows its fault in ``predict`` (non-finite, or for the seed model,
  whose NaN BN statistics feed a ReLU that TensorFlow maps to 0 or to NaN depending on the
  CPU's kernel, the same output for every input or a non-finite one), and the repaired
  copy predicts finite, input-dependent outputs;
* every tensor the fix reported as changed holds new bytes, every other one is bit-identical
  to the original as TensorFlow reads it, and every other file of the folder is untouched.
"""

from __future__ import annotations

import pytest

from tfkeras import BROKEN, BY_NAME, TF, ckptscan_records, tf_records, tf_session


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    return tf_session(tmp_path_factory)


def _spread(outputs) -> float:
    """Largest difference between the outputs for different inputs (rows)."""
    import numpy as np

    return max(float(np.nanmax(np.abs(np.asarray(o) - np.asarray(o)[0]), initial=0.0)) for o in outputs)


@pytest.mark.parametrize("name", BROKEN)
def test_tensorflow_restores_the_fixed_checkpoint_and_predicts_finite(tf, name):
    fx = BY_NAME[name]
    rep = tf.repairs[name]
    assert rep.exit_code == 0, rep.output
    (f,) = rep.manifest["files"]
    assert (f["status"], f["mode"]) == ("fixed", "in-place"), rep.output
    before, after = tf.original[name], tf.fixed[name]
    assert before["restored"], before.get("traceback") or before["error"]
    assert after["restored"], after.get("traceback") or after["error"]
    if fx.predict_broken == "nonfinite":
        assert before["predict_finite"] is False
    else:
        # NaN BN statistics into a ReLU: TensorFlow's CPU kernel returns 0 for ReLU(NaN) on
        # some instruction sets (every input then gives the same output) and NaN on others
        # (seen on a machine whose TensorFlow build takes another SIMD path). Either way the
        # original must not predict healthy, finite, input-dependent outputs.
        assert fx.predict_broken == "collapsed"
        healthy = before["predict_finite"] is True and _spread(before["outputs"]) > 0.0
        assert not healthy, before["outputs"]
    assert after["predict_finite"] is True
    assert _spread(after["outputs"]) > 0.0


@pytest.mark.parametrize("name", BROKEN)
def test_only_the_reported_tensors_changed(tf, name):
    fx = BY_NAME[name]
    rep = tf.repairs[name]
    (f,) = rep.manifest["files"]
    # the tensors the fix reports, as TF-side records (through ckptscan's names of the copy)
    _, by_path = ckptscan_records(fx.path(rep.folder.parent), fx.config_path())
    reported = {by_path[f"{c['layer_path']}/{c['variable']}"] for c in f["changes"]}
    assert reported, rep.output
    before, after = tf_records(tf.original[name]), tf_records(tf.fixed[name])
    assert set(before) == set(after)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == reported
    # nothing else in the folder was written (state file, saved_model.pb, the older checkpoint)
    written = {p for p in f["sha256_after"]}
    for p in sorted(rep.folder.rglob("*")):
        if p.is_file() and str(p) not in written and not p.name.endswith(".manifest.json"):
            assert p.read_bytes() == (TF / fx.folder / p.relative_to(rep.folder)).read_bytes(), p


def test_the_seed_repair_covers_bn_stats_and_an_optimizer_slot(tf):
    """What the repairs above exercised: BN moving statistics and an Adam slot (OPT001),
    all restored by tf-keras with the slot attached to its weight."""
    (f,) = tf.repairs["seed_broken_sw"].manifest["files"]
    assert {(c["layer_path"], c["variable"]) for c in f["changes"]} == {
        ("resnet101v2/post_bn", "moving_mean"), ("resnet101v2/post_bn", "moving_variance"),
        ("optimizer/Adam/m/class_head", "kernel")}
    before, after = tf_records(tf.original["seed_broken_sw"]), tf_records(tf.fixed["seed_broken_sw"])
    slot = ("slot", "class_head/kernel", "m", (32, 5), "float32")
    assert before[slot] != after[slot]
