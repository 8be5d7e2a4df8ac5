"""What TensorFlow + tf-keras themselves see in a checkpoint: run under the TF interpreter.

Started once per test session by ``tests/tfkeras.py`` with the interpreter of ``.tfvenv``
(TensorFlow + tf-keras 2.21; ckptscan itself never imports them). Reads a JSON job list
on stdin, writes one JSON document on stdout::

    {"jobs": [{"id": ..., "kind": "save_weights" | "checkpoint" | "savedmodel" | "tf1",
               "path": ..., "config": ..., "optimizer": "adam" | null,
               "policy": "mixed_float16" | null, "input": {"shape": [...], "dtype": ..., "high": N}}]}
    -> {"versions": {...}, "results": {id: {"restored": bool, "error": str,
                                            "variables": [...], "predict_finite": bool,
                                            "outputs": [...]}}}

Each job builds the model in tf-keras (from the committed ``*.config.json``, or
``load_model`` for a SavedModel), restores the checkpoint with TensorFlow's own loader
(``load_weights`` / ``tf.train.Checkpoint.restore`` / ``load_model`` / a TF1 ``Saver``;
all of them verify every CRC32C they read), then reports every restored variable and
whether ``predict`` on a fixed input is finite.

A variable is reported as one of
  ``{"kind": "weight", "layer_path", "name", ...}``  a model weight: ``layer_path`` is the
      structural path of ``fixtures/_common.LAYER_PATH_DEFINITION`` (enclosing models from
      ``model.layers``, the leaf layer's name, sub-layers from the variable's name), ``name``
      the variable's own name without scope and ``:0`` (``bn_b/moving_variance:0`` ->
      ``moving_variance``);
  ``{"kind": "slot", "slot_of", "slot", ...}``  an optimizer slot: ``slot_of`` is the path
      (``layer_path/name``) of the model weight it was created for and ``slot`` its slot
      name, both taken from the optimizer's own ``add_variable_from_reference(model_variable,
      variable_name)`` calls while it builds (tf-keras 2.21 ``optimizers/optimizer.py``; no
      name is parsed); for TF1, ``optimizer.get_slot(var, name)``;
  ``{"kind": "state", "path", ...}``  any other variable reachable from the checkpoint's
      root (``tf.train.TrackableView``): ``optimizer/<name>`` under the optimizer
      (iteration, learning_rate, the loss scale), ``<name>`` elsewhere (``save_counter``).
Every entry carries ``shape``, ``dtype`` (the variable's true dtype) and ``sha256`` of its
restored value's bytes. A variable reachable from the root that fits none of these is
reported as ``{"kind": "unclassified"}`` so a comparison fails on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import traceback

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
import tf_keras as keras  # noqa: E402


def strip(name: str) -> str:
    return re.sub(r":\d+$", "", name)


def digest(value) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(value)).tobytes()).hexdigest()


def true_dtype(v) -> str:
    return getattr(v, "true_dtype", v.dtype).name


def entry(v, **fields) -> dict:
    return {**fields, "shape": list(v.shape), "dtype": true_dtype(v), "sha256": digest(v.numpy())}


def sublayer_suffix(leaf_name: str, path: str) -> list[str]:
    """Sub-layer names inside a leaf layer, from the variable's name after the leaf's name."""
    parts = path.split("/")[:-1]
    pat = re.compile(re.escape(leaf_name) + r"(_\d+)?$")
    for i in range(len(parts) - 1, -1, -1):
        if pat.fullmatch(parts[i]):
            return parts[i + 1:]
    return []


def walk_weights(model):
    """``(layer_path, name, variable)`` for every weight of ``model``, first owner wins."""
    seen: set[int] = set()

    def rec(container, prefix):
        for layer in container.layers:
            if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
                yield from rec(layer, prefix + [layer.name])
                continue
            for v in layer.weights:
                if id(v) in seen:
                    continue
                seen.add(id(v))
                full = strip(v.name)
                yield "/".join(prefix + [layer.name] + sublayer_suffix(layer.name, full)), full.split("/")[-1], v

    yield from rec(model, [])


class SlotRecorder:
    """Records the optimizer's ``add_variable_from_reference`` calls while it builds."""

    def __init__(self, optimizer):
        self.optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self.created: list[tuple] = []  # (model variable, slot name, slot variable)

    def build(self, var_list) -> None:
        cls = type(self.optimizer)
        own = "add_variable_from_reference" in cls.__dict__
        orig = cls.add_variable_from_reference
        created = self.created

        def recording(opt, model_variable, variable_name, shape=None, initial_value=None):
            var = orig(opt, model_variable, variable_name, shape, initial_value)
            created.append((model_variable, variable_name, var))
            return var

        cls.add_variable_from_reference = recording
        try:
            self.optimizer.build(var_list)
        finally:
            if own:
                cls.add_variable_from_reference = orig
            else:
                del cls.add_variable_from_reference


def _key(v):
    return getattr(v, "_unique_id", None) or id(v)


def report(root, model, optimizer, recorder) -> list[dict]:
    """Every variable reachable from ``root``, classified (see the module docstring)."""
    out: list[dict] = []
    done: set = set()
    owner = {}
    for lp, name, v in walk_weights(model):
        out.append(entry(v, kind="weight", layer_path=lp, name=name))
        owner[_key(v)] = f"{lp}/{name}"
        done.add(_key(v))
    for w in model.weights:  # every weight tf-keras lists is in the walk
        if _key(w) not in done:
            out.append(entry(w, kind="unclassified", path=strip(w.name), why="in model.weights, not in the layer walk"))
            done.add(_key(w))
    if recorder is not None:
        for model_var, slot, var in recorder.created:
            out.append(entry(var, kind="slot", slot_of=owner.get(_key(model_var), "?" + model_var.name), slot=slot))
            done.add(_key(var))
    under_opt = set()
    if optimizer is not None:
        for o in tf.train.TrackableView(optimizer).descendants():
            if isinstance(o, tf.Variable) and _key(o) not in done:
                out.append(entry(o, kind="state", path="optimizer/" + strip(o.name)))
                under_opt.add(_key(o))
                done.add(_key(o))
    for o in tf.train.TrackableView(root).descendants():
        if isinstance(o, tf.Variable) and _key(o) not in done:
            out.append(entry(o, kind="state", path=strip(o.name)))
            done.add(_key(o))
    return out


def make_input(spec: dict):
    rng = np.random.default_rng(1234)
    shape = tuple(spec["shape"])
    if spec.get("dtype", "float32").startswith("int"):
        return rng.integers(0, spec["high"], shape).astype(spec["dtype"])
    return rng.standard_normal(shape).astype(spec.get("dtype", "float32"))


def predicted(outputs) -> dict:
    """``predict_finite`` and the outputs themselves (one list per model output)."""
    outs = [np.asarray(o, dtype=np.float64) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    return {"predict_finite": all(bool(np.all(np.isfinite(o))) for o in outs), "outputs": [o.tolist() for o in outs]}


def compiled_model(job):
    policy = job.get("policy")
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        with open(job["config"]) as fh:
            model = keras.models.model_from_json(fh.read())
        recorder = None
        if job.get("optimizer") == "adam":
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
            recorder = SlotRecorder(model.optimizer)
            recorder.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, recorder


# ---------------------------------------------------------------------------------- jobs ---


def run_keras(job) -> dict:
    kind = job["kind"]
    if kind == "savedmodel":
        # load_model reads (and checksums) the model's variables; the optimizer it rebuilds
        # is empty until built, then the same variables file restores its slots
        model = keras.models.load_model(job["path"])
        recorder = SlotRecorder(model.optimizer)
        recorder.build(model.trainable_variables)
        status = model.load_weights(os.path.join(job["path"], "variables", "variables"))
        status.assert_existing_objects_matched()
        root = model
    elif kind == "save_weights":
        model, recorder = compiled_model(job)
        status = model.load_weights(job["path"])
        status.assert_consumed()
        root = model
    elif kind == "checkpoint":
        model, recorder = compiled_model(job)
        root = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        prefix = job["path"]
        if os.path.isdir(prefix):
            prefix = tf.train.latest_checkpoint(prefix)
        root.restore(prefix).assert_consumed()
    else:
        raise ValueError(kind)
    optimizer = model.optimizer if recorder is not None else None
    variables = report(root, model, optimizer, recorder)
    outputs = model.predict(make_input(job["input"]), verbose=0)
    return {"variables": variables, **predicted(outputs)}


def run_tf1(job) -> dict:
    """The TF1 graph of ``fixtures/gen_tfckpt.py`` (``tf1_checkpoint``), restored by a Saver."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, (None, 8, 8, 3))
        y = v1.placeholder(tf.float32, (None, 2))
        training = v1.placeholder_with_default(True, ())
        with v1.variable_scope("conv1"):
            h = v1.layers.conv2d(x, 4, 3, name="conv")
            h = v1.layers.batch_normalization(h, training=training)
            h = tf.nn.relu(h)
        h = tf.reduce_mean(h, axis=[1, 2])
        out = v1.layers.dense(h, 2, name="logits")
        loss = tf.reduce_mean(tf.square(out - y))
        opt = v1.train.AdamOptimizer(1e-3)
        opt.minimize(loss, global_step=v1.train.get_or_create_global_step())
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            saver.restore(sess, job["path"])
            variables = []
            slots = {}
            for var in v1.trainable_variables():
                for name in opt.get_slot_names():
                    s = opt.get_slot(var, name)
                    if s is not None:
                        slots[s.op.name] = (var.op.name, name)
            non_slot = {v.op.name for v in opt._non_slot_variables()} | {v1.train.get_global_step().op.name}
            for var in v1.global_variables():
                fields = {"shape": var.shape.as_list(), "dtype": var.dtype.base_dtype.name,
                          "sha256": digest(sess.run(var))}
                name = var.op.name
                if name in slots:
                    owner, tf_slot = slots[name]
                    # the slot as stored: the suffix after its variable (Adam, Adam_1); TF's
                    # own slot name (m, v) alongside
                    variables.append({"kind": "slot", "slot_of": owner, "slot": name[len(owner) + 1:],
                                      "tf_slot": tf_slot, **fields})
                elif name in non_slot:
                    variables.append({"kind": "state", "path": name, **fields})
                else:
                    variables.append({"kind": "weight", "layer_path": name.rpartition("/")[0],
                                      "name": name.rpartition("/")[2], **fields})
            value = sess.run(out, {x: make_input(job["input"]), training: False})
    return {"variables": variables, **predicted(value)}


def main() -> int:
    jobs = json.load(sys.stdin)["jobs"]
    results = {}
    for job in jobs:
        keras.backend.clear_session()
        try:
            res = run_tf1(job) if job["kind"] == "tf1" else run_keras(job)
            results[job["id"]] = {"restored": True, "error": "", **res}
        except Exception as exc:  # reported per job: a failed restore is a test result
            results[job["id"]] = {"restored": False, "error": f"{type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc(), "variables": [], "predict_finite": None, "outputs": []}
    json.dump({"versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__}, "results": results},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
