"""The genuinely diverged mixed_float16 run (fixtures/diverge): repair the first broken epoch.

``fix --from <last good epoch>`` copies the broken BN moving statistics back and must
restore validation accuracy to at least the last good epoch's (measured here, with the
same Keras); ``reset`` makes every weight finite but is reported as a stop-gap.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ckptscan.formats import open_checkpoint
from ckptscan.patch.rawio import read_raw
from ckptscan.report import Severity
from ckptscan import scan
from conftest import fixture_path, run_cli


@pytest.fixture(scope="module")
def run():
    man = json.loads(fixture_path("diverge", "manifest.json").read_text())
    files = {e["epoch"]: fixture_path("diverge", e["file"]) for e in man["epochs"]}
    val = np.load(fixture_path("diverge", man["val"]["file"]))
    return man, files[man["first_bad_epoch"]], files[man["last_good_epoch"]], val["x"], val["y"]


def predict(path, x):
    import keras

    model = keras.saving.load_model(path)
    return np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float32)


def test_from_last_good_epoch_restores_accuracy(run, tmp_path):
    man, bad, good, x, y = run
    p = tmp_path / bad.name
    shutil.copyfile(bad, p)
    assert not np.isfinite(predict(p, x)).all()  # what the user saw: NaN predictions
    out = run_cli("fix", p, "--from", good)
    assert out.returncode == 0, out.stderr
    assert "fixed in-place" in out.stdout
    good_probs, fixed_probs = predict(good, x), predict(p, x)
    assert np.isfinite(fixed_probs).all()
    good_acc = float(np.mean(good_probs.argmax(-1) == y))
    fixed_acc = float(np.mean(fixed_probs.argmax(-1) == y))
    assert fixed_acc >= good_acc, (fixed_acc, good_acc)
    # only the broken elements of BN moving statistics changed, to the reference's exact bits
    with open_checkpoint(p) as a, open_checkpoint(good) as b, open_checkpoint(bad) as c:
        copied = 0
        for va in a.variables:
            new, old = read_raw(a, va), read_raw(c, c.find(va.path))
            changed = new.view(f"u{new.itemsize}") != old.view(f"u{old.itemsize}")
            if not changed.any():
                continue
            assert va.name in ("moving_mean", "moving_variance"), va.path
            assert (changed == ~np.isfinite(c.read(c.find(va.path)).reshape(-1))).all(), va.path
            ref = read_raw(b, b.find(va.path))
            assert new[changed].tobytes() == ref[changed].tobytes(), va.path
            copied += int(changed.sum())
        assert copied > 0
    assert [f for f in scan([str(p)]).findings if f.severity is Severity.ERROR] == []


def test_reset_is_finite_but_reported_as_stop_gap(run, tmp_path):
    man, bad, good, x, y = run
    p = tmp_path / bad.name
    shutil.copyfile(bad, p)
    manifest = tmp_path / "manifest.json"
    out = run_cli("fix", p, "--strategy", "reset", "--manifest", manifest)
    assert out.returncode == 0, out.stderr
    assert "note: stop-gap: moving statistics reset to the initializer values" in out.stdout
    doc = json.loads(manifest.read_text())
    assert all(c["note"].startswith("stop-gap") for c in doc["files"][0]["changes"])
    with open_checkpoint(p) as ck:
        assert all(np.isfinite(ck.read(v)).all() for v in ck.weights() if v.is_float)
    assert [f for f in scan([str(p)]).findings if f.severity is Severity.ERROR] == []
