"""The seed's method: load the model with TensorFlow, ``check_numerics`` every weight.

Runs under a Python that has TensorFlow and tf-keras (Keras 2), e.g. ``/work/tfenv``::

    python benchmarks/seed_method.py convert SRC.h5 DST.h5   # build tf-keras ResNet101V2,
                                                             # load SRC's weights, save DST
    python benchmarks/seed_method.py check FILE.h5 [--json]  # the measured method

tf-keras cannot deserialize Keras 3 configs, so the Keras-3-written legacy ``.h5`` is
first converted once (same architecture built by ``tf_keras.applications``, same
values via ``load_weights``) into a file tf-keras itself wrote; ckptscan and the floor
are measured on that same converted file too.

``check`` prints the wall time of each phase: importing TensorFlow, ``load_model``,
and ``tf.debugging.check_numerics`` over ``model.weights``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def convert(src: str, dst: str) -> None:
    import tf_keras

    model = tf_keras.applications.ResNet101V2(weights=None)
    model.load_weights(src)
    model.save(dst)


def check(path: str) -> dict:
    t0 = time.perf_counter()
    import tensorflow as tf
    import tf_keras

    t1 = time.perf_counter()
    model = tf_keras.models.load_model(path, compile=False)
    t2 = time.perf_counter()
    bad = 0
    for w in model.weights:
        try:
            tf.debugging.check_numerics(w, message=w.name)
        except tf.errors.InvalidArgumentError:
            bad += 1
    t3 = time.perf_counter()
    nbytes = sum(int(w.shape.num_elements()) * w.dtype.size for w in model.weights)
    return {"import_s": t1 - t0, "load_s": t2 - t1, "check_s": t3 - t2, "total_s": t3 - t0,
            "weights": len(model.weights), "bytes": nbytes, "nonfinite_weights": bad}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["convert"]:
        convert(args[1], args[2])
        return 0
    if args[:1] == ["check"]:
        res = check(args[1])
        print(json.dumps(res) if "--json" in args else res)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
