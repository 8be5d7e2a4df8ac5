"""ckptscan's names of tf-keras applications, in every layout tf-keras writes, against
tf-keras itself: the check behind "Checked against tf-keras on files not among the
fixtures" in ``docs/inspect.md``. Minutes of TensorFlow, so not part of the suite; the
cases it found are pinned by ``fixtures/tfk_names/`` (``tests/formats/test_tfk_names.py``).

    python tests/tfkeras_apps_check.py [--tf-python PY] [--only APP ...]

For each application, top-level and as the backbone of a ``Sequential`` (the usual
transfer-learning shape), the TF interpreter (default: ``.tfvenv``, as for the tests)
builds the model, trains one Adam step and writes a full-model ``.h5``, a weights ``.h5``,
a ``save_weights`` TensorFlow checkpoint with its config, a SavedModel, a ``.keras`` and a
``.weights.h5``, and reports every weight as ``tests/tf_child.py`` does. ckptscan must name
each file's weights (layer path, variable, shape) exactly so; a weights-only file is read
with the model's config. The TensorFlow checkpoint and the SavedModel are also restored
by tf-keras through ``tests/tf_child.py``, which compares optimizer slots and values too
(except ConvNeXt, which tf-keras cannot rebuild from its own config). Exit 1 on any
difference. One application at a time, in a temporary folder removed after it (all of
them at once take ~15 GB; InceptionResNetV2 alone ~4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

APPS = [("ResNet50V2", 32), ("MobileNetV2", 32), ("MobileNetV3Small", 32), ("EfficientNetB0", 32),
        ("EfficientNetV2B0", 32), ("ConvNeXtTiny", 32), ("DenseNet121", 32), ("Xception", 71), ("NASNetMobile", 32),
        ("InceptionV3", 75), ("InceptionResNetV2", 75), ("RegNetX002", 32), ("VGG16", 32)]
#: tf-keras cannot rebuild these from their own config (a custom layer not registered).
NOT_RESTORABLE = {"ConvNeXtTiny"}

_BUILD = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
from tf_child import keras, walk_weights
L = keras.layers
out, apps = sys.argv[2], json.loads(sys.argv[3])
expected = {}
for app, size in apps:
    for nested in (False, True):
        name = app + ("_nested" if nested else "")
        keras.utils.set_random_seed(1)
        base = getattr(keras.applications, app)(weights=None, include_top=not nested, input_shape=(size, size, 3),
                                                **({} if nested else {"classes": 5}))
        m = keras.Sequential([base, L.GlobalAveragePooling2D(), L.Dense(5, name="head")], name="transfer") \
            if nested else base
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        m.fit(np.random.rand(2, size, size, 3).astype("float32"), np.random.rand(2, 5).astype("float32"), verbose=0)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        m.save_weights(os.path.join(d, "ckpt"))
        open(os.path.join(d, "config.json"), "w").write(m.to_json())
        m.save_weights(os.path.join(d, "w.h5"))
        m.save(os.path.join(d, "m.h5"))
        m.save(os.path.join(d, "sm"), save_format="tf", save_traces=False)
        m.save(os.path.join(d, "m.keras"))
        m.save_weights(os.path.join(d, "m.weights.h5"))
        expected[name] = {"app": app, "size": size, "weights": [[lp, n, list(v.shape)] for lp, n, v in walk_weights(m)]}
        print(name, file=sys.stderr, flush=True)
json.dump(expected, open(os.path.join(out, "expected.json"), "w"))
"""


def _names(path: Path, config) -> set[tuple]:
    from ckptscan import open_checkpoint

    with open_checkpoint(path, config=config) as ck:
        return {(v.layer_path, v.name, tuple(v.shape)) for v in ck.variables if v.kind == "weight"}


def check(tf_py: str, app: str, size: int, out: Path) -> int:
    """Build ``app`` (top-level and nested) in ``out`` and compare; the number of differences."""
    from tfkeras import ckptscan_records, run_child, tf_records

    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    subprocess.run([tf_py, "-c", _BUILD, str(HERE), str(out), json.dumps([[app, size]])], check=True, env=env)
    expected = json.loads((out / "expected.json").read_text())
    bad = 0
    for name, doc in expected.items():
        d = out / name
        want = {(lp, n, tuple(s)) for lp, n, s in doc["weights"]}
        keras_config = json.loads(zipfile.ZipFile(d / "m.keras").read("config.json"))
        for file, config in (("m.h5", None), ("w.h5", str(d / "config.json")), ("ckpt", str(d / "config.json")),
                             ("sm", None), ("m.keras", None), ("m.weights.h5", keras_config)):
            got = _names(d / file, config)
            ok = got == want
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name:28s} {file:13s} {len(want)} weights"
                  + ("" if ok else f"; extra {sorted(got - want)[:3]}, missing {sorted(want - got)[:3]}"), flush=True)
    if app in NOT_RESTORABLE:
        return bad
    jobs = []
    for name in expected:
        shape = {"shape": [2, size, size, 3]}
        jobs.append({"id": name, "kind": "save_weights", "path": str(out / name / "ckpt"),
                     "config": str(out / name / "config.json"), "optimizer": "adam", "policy": None, "input": shape})
        jobs.append({"id": name + ":sm", "kind": "savedmodel", "path": str(out / name / "sm"), "config": "",
                     "optimizer": "adam", "policy": None, "input": shape})
    results = run_child(tf_py, jobs)
    for job in jobs:
        res = results[job["id"]]
        want = tf_records(res) if res["restored"] else {}
        got, _ = ckptscan_records(job["path"], job["config"])
        ok = res["restored"] and got == want
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {job['id']:31s} restored by tf-keras: {len(want)} weights, slots and state"
              + ("" if ok else f"; {res.get('error') or sorted(set(got) ^ set(want))[:3]}"), flush=True)
    return bad


def main() -> int:
    from tfkeras import tf_python

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", default=tf_python(), help="a Python with tensorflow + tf_keras (default: .tfvenv)")
    ap.add_argument("--only", nargs="*", help="these applications only")
    args = ap.parse_args()
    if not args.tf_python:
        ap.error("no TensorFlow interpreter: pass --tf-python or create .tfvenv (see README)")
    bad = 0
    for app, size in APPS:
        if args.only and app not in args.only:
            continue
        out = Path(tempfile.mkdtemp(prefix=f"ckptscan-{app}-"))
        try:
            bad += check(args.tf_python, app, size, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    print(f"{bad} difference(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
