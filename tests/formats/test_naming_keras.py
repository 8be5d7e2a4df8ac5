"""ckptscan names every variable exactly as Keras does (issue 2, "Must show" 1).

Models are built by real Keras in a worker subprocess (this file run as a script with
``KERAS_BACKEND=numpy``: the same Keras, naming is backend-independent, and building
``keras.applications`` models there is ~10x cheaper than symbolic tracing under jax).
The worker builds a model, saves it as ``.keras``, ``.weights.h5`` (plus the
``config.json`` taken from the ``.keras``) and legacy ``.h5``, and returns what Keras
itself reports:

    for every leaf layer L (not Functional/Sequential) reached by walking ``layers``
    recursively, first traversal only, inside containers named P (top model excluded),
    for every ``w`` in ``L.weights``: comps = ``w.path.split('/')``, i = index of L.name,
    layer path = P + [L.name] + comps[i+1:-1], name = ``w.name``, shape, ``w.dtype``.

The test side opens the three files with ckptscan and requires the same set of
(layer path, variable, shape, dtype), every name ``known``. No exceptions list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()

# --- expected side (runs inside the worker, where keras is imported) -------------------


def digest(values) -> str:
    """Fingerprint of a tensor's values (exact: every stored dtype widens to float64)."""
    import hashlib

    import numpy as np

    arr = np.ascontiguousarray(np.asarray(values).astype(np.float64))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


def randomize(model, seed: int = 0) -> None:
    """Give every variable distinct random values, so a name attached to the wrong
    dataset (BN's four same-shaped vectors, LSTM halves…) changes the values it reads."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.uniform(0.5, 2.0, size=tuple(w.shape))
        w.assign(v.astype("int64") if "int" in str(w.dtype) else v.astype("float32"))


def keras_reported(model) -> list[list]:
    """(layer path, variable, shape, dtype) for every variable, as Keras reports them."""
    import keras

    out: list[list] = []
    seen: set[int] = set()

    def is_container(layer) -> bool:
        return isinstance(layer, keras.Model) and type(layer).__name__ in ("Functional", "Sequential")

    def walk(container, prefix: list[str]) -> None:
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if is_container(layer):
                walk(layer, prefix + [layer.name])
                continue
            for w in layer.weights:
                comps = w.path.split("/")
                assert comps[-1] == w.name, (w.path, w.name)
                # a model built in one go names variables under the enclosing scopes
                # (``bi/forward_lstm/lstm_cell/kernel``); one rebuilt by load_model may
                # start at the sub-layer (``forward_lstm/lstm_cell/kernel``)
                idx = comps.index(layer.name) if layer.name in comps else -1
                values = keras.ops.convert_to_numpy(w)
                out.append(["/".join(prefix + [layer.name] + comps[idx + 1 : -1]), w.name, list(w.shape), str(w.dtype),
                            digest(values)])

    walk(model, [])
    return out


# --- random model specs (pure data, drawn by hypothesis, built by the worker) ----------

SEQ_LEN = 4


def build_block(spec, x, ctx):
    """Apply one block spec to ``x`` (shape ``(batch, SEQ_LEN, F)``)."""
    import keras
    from keras import layers, ops

    kind, *a = spec
    F = x.shape[-1]
    if kind == "dense":
        units, bias, dtype = a
        return layers.Dense(units, use_bias=bias, dtype=dtype)(x)
    if kind == "bn":
        center, scale, renorm = a
        return layers.BatchNormalization(center=center, scale=scale, renorm=renorm)(x)
    if kind == "ln":
        center, scale, rms = a
        return layers.LayerNormalization(center=center, scale=scale, rms_scaling=rms)(x)
    if kind == "gn":
        center, scale = a
        return layers.GroupNormalization(groups=1, center=center, scale=scale)(x)
    if kind == "rnn":
        cls, units, bias, reset_after = a
        kw = {"reset_after": reset_after} if cls == "GRU" else {}
        return getattr(layers, cls)(units, use_bias=bias, return_sequences=True, **kw)(x)
    if kind == "bidi":
        cls, units = a
        return layers.Bidirectional(getattr(layers, cls)(units, return_sequences=True))(x)
    if kind == "td":
        units, bias = a
        return layers.TimeDistributed(layers.Dense(units, use_bias=bias))(x)
    if kind == "conv1d":
        cls, filters, bias = a
        if cls == "DepthwiseConv1D":
            return layers.DepthwiseConv1D(3, padding="same", use_bias=bias)(x)
        return getattr(layers, cls)(filters, 3, padding="same", use_bias=bias)(x)
    if kind == "conv2d":
        filters, bias = a
        y = layers.Reshape((SEQ_LEN, F, 1))(x)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=bias)(y)
        return layers.Reshape((SEQ_LEN, F * filters))(y)
    if kind == "prelu":
        return layers.PReLU()(x)
    if kind == "normalization":
        return layers.Normalization()(x)
    if kind == "rmsnorm":
        return layers.RMSNormalization()(x)
    if kind == "dropout":
        return layers.Dropout(0.1, seed=1)(x)
    if kind == "einsum":
        units, bias = a
        return layers.EinsumDense("btf,fu->btu", output_shape=(SEQ_LEN, units), bias_axes="u" if bias else None)(x)
    if kind == "mha":
        heads, key_dim, bias = a
        return layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, use_bias=bias)(x, x)
    if kind == "attention":
        use_scale, concat = a
        return layers.Attention(use_scale=use_scale, score_mode="concat" if concat else "dot")([x, x])
    if kind == "additive":
        (use_scale,) = a
        return layers.AdditiveAttention(use_scale=use_scale)([x, x])
    if kind == "op":
        (which,) = a
        return {"add": lambda t: ops.add(t, t), "tanh": ops.tanh, "mul": lambda t: ops.multiply(t, t)}[which](x)
    if kind == "shared":
        (twice,) = a
        d = layers.Dense(F)
        return d(d(x)) if twice else d(x)
    if kind == "shared_nested":
        # one Dense used at this level and inside a nested Sequential
        (units,) = a
        d = layers.Dense(F)
        y = d(x)
        return keras.Sequential([d, layers.Dense(units)])(y)
    if kind == "seq":
        (blocks,) = a
        inner = [keras.Input((SEQ_LEN, F))] if ctx.get("explicit_input") else []
        model = keras.Sequential(inner + [_seq_layer(b) for b in blocks])
        return model(x)
    if kind == "func":
        (blocks,) = a
        inp = keras.Input((SEQ_LEN, F))
        y = inp
        for b in blocks:
            y = build_block(b, y, ctx)
        return keras.Model(inp, y)(x)
    raise ValueError(kind)


def _seq_layer(spec):
    """A single layer for a Sequential (blocks that are one layer on one input)."""
    from keras import layers

    kind, *a = spec
    if kind == "dense":
        return layers.Dense(a[0], use_bias=a[1], dtype=a[2])
    if kind == "bn":
        return layers.BatchNormalization(center=a[0], scale=a[1], renorm=a[2])
    if kind == "ln":
        return layers.LayerNormalization(center=a[0], scale=a[1], rms_scaling=a[2])
    if kind == "rnn":
        kw = {"reset_after": a[3]} if a[0] == "GRU" else {}
        return getattr(layers, a[0])(a[1], use_bias=a[2], return_sequences=True, **kw)
    if kind == "bidi":
        return layers.Bidirectional(getattr(layers, a[0])(a[1], return_sequences=True))
    if kind == "td":
        return layers.TimeDistributed(layers.Dense(a[0], use_bias=a[1]))
    if kind == "conv1d":
        if a[0] == "DepthwiseConv1D":
            return layers.DepthwiseConv1D(3, padding="same", use_bias=a[2])
        return getattr(layers, a[0])(a[1], 3, padding="same", use_bias=a[2])
    if kind == "seq":
        import keras

        return keras.Sequential([_seq_layer(b) for b in a[0]])
    raise ValueError(kind)


SEQ_KINDS = {"dense", "bn", "ln", "rnn", "bidi", "td", "conv1d", "seq"}


def build_spec_model(spec):
    """A Functional model from ``{"features", "embedding", "blocks", "explicit_input"}``."""
    import keras
    from keras import layers

    ctx = {"explicit_input": spec.get("explicit_input", False)}
    inp = keras.Input((SEQ_LEN, spec["features"]), name="x")
    inputs = [inp]
    x = inp
    if spec.get("embedding"):
        vocab, dim = spec["embedding"]
        ids = keras.Input((SEQ_LEN,), dtype="int32", name="ids")
        inputs.append(ids)
        x = layers.Concatenate()([x, layers.Embedding(vocab, dim)(ids)])
    for b in spec["blocks"]:
        x = build_block(b, x, ctx)
    out = layers.Dense(2, name="head")(layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, out, name="random_model")


def build_app(name: str, size: int):
    import keras

    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)


def save_all(model, out: str) -> dict[str, list]:
    """Save ``.keras``, ``.weights.h5`` + config.json, legacy ``.h5``: {file: [path, config]}."""
    import warnings
    import zipfile

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    model.save(out + ".keras")
    with zipfile.ZipFile(out + ".keras") as zf:
        Path(out + ".config.json").write_bytes(zf.read("config.json"))
    model.save_weights(out + ".weights.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(out + ".h5")
    return {"keras": [out + ".keras", None], "weights": [out + ".weights.h5", out + ".config.json"], "legacy": [out + ".h5", None]}


def worker() -> None:
    """Line protocol: one JSON request per stdin line, one JSON reply per stdout line."""
    import logging
    import traceback

    logging.disable(logging.WARNING)
    import keras

    reply_to = sys.stdout
    sys.stdout = sys.stderr  # keras prints go to stderr; stdout is the protocol
    for line in sys.stdin:
        req = json.loads(line)
        try:
            keras.backend.clear_session()  # fresh auto-name counters, as in a new process
            if req["kind"] == "load":
                # an existing file: Keras loads it, or builds the model its config describes
                reply = {}
                if req.get("config"):
                    model = keras.models.model_from_json(Path(req["config"]).read_text())
                    model.load_weights(req["path"])  # the file fits this model
                else:
                    try:
                        model = keras.saving.load_model(req["path"], compile=False)
                    except (ValueError, TypeError) as exc:
                        if not req["path"].endswith(".h5"):
                            raise
                        # Keras cannot load some legacy files it wrote (bfloat16 weights:
                        # "No cast function available"; a model_config its legacy loader
                        # cannot rebuild). Names still come from Keras: the model is built
                        # from the config.json of the same model (else model_config)
                        reply["load_error"] = f"{type(exc).__name__}: {exc}"
                        if req.get("fallback_config"):
                            model = keras.models.model_from_json(Path(req["fallback_config"]).read_text())
                        else:
                            import h5py

                            from keras.src.legacy.saving import saving_utils  # what load_model uses

                            with h5py.File(req["path"], "r") as f:
                                raw = f.attrs["model_config"]
                            model = saving_utils.model_from_config(json.loads(raw))
                        try:
                            model.load_weights(req["path"])
                            reply["values_loaded"] = True
                        except Exception as exc2:  # noqa: BLE001 - recorded, asserted by the test
                            reply["load_weights_error"] = f"{type(exc2).__name__}: {exc2}"
                rows = keras_reported(model)
                reply["expected"] = [r[:4] for r in rows] if "load_weights_error" in reply else rows
            else:
                model = build_app(req["name"], req["size"]) if req["kind"] == "app" else build_spec_model(req["spec"])
                if req["kind"] == "spec" and req["spec"].get("quantize"):
                    model.quantize(req["spec"]["quantize"])
                randomize(model)
                reply = {"expected": keras_reported(model), "files": save_all(model, req["out"])}
        except Exception:
            reply = {"error": traceback.format_exc()}
        reply_to.write(json.dumps(reply) + "\n")
        reply_to.flush()


class Worker:
    def __init__(self) -> None:
        env = dict(os.environ, KERAS_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )
        self.err: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("keras worker died:\n" + "".join(self.err[-40:]))
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def keras_worker():
    w = Worker()
    yield w
    w.close()


# --- comparison ------------------------------------------------------------------------


def ckptscan_reported(path: str, config: str | None = None):
    import ckptscan

    with ckptscan.open_checkpoint(path, config=config) as ckpt:
        vs = ckpt.weights()
        rows = [(v.layer_path, v.name, tuple(v.shape), v.dtype, v.h5path, digest(ckpt.read(v))) for v in vs]
        return rows, [v.path for v in vs if v.naming != "known"], ckpt.format


def as_set(rows) -> set:
    return {(p, n, tuple(s), d) for p, n, s, d, *_ in rows}


def assert_same_names(expected_rows, path: str, config: str | None = None, fmt: str | None = None) -> None:
    expected = as_set(expected_rows)
    assert len(expected) == len(expected_rows), "Keras reported a variable twice"
    got_rows, inferred, got_fmt = ckptscan_reported(path, config)
    got = as_set(r[:4] for r in got_rows)
    if fmt:
        assert got_fmt == fmt
    # one record per stored tensor: a name repeats only for a shared layer's second
    # stored copy, which legacy HDF5 writes (Keras 3 stores shared layers once)
    assert len({r[4] for r in got_rows}) == len(got_rows)
    if not fmt or not fmt.startswith("legacy"):
        assert len(got) == len(got_rows), f"{path}: ckptscan reports a variable twice"
    missing, extra = sorted(expected - got), sorted(got - expected)
    assert not missing and not extra, f"{path}:\n  Keras only: {missing[:8]}\n  ckptscan only: {extra[:8]}"
    assert not inferred, f"{path}: names not known: {inferred[:8]}"
    if all(len(r) > 4 for r in expected_rows):
        # each name sits on the right dataset: the values ckptscan reads under a name are
        # the values Keras holds in the variable of that name
        want = {(r[0], r[1], r[4]) for r in expected_rows}
        have = {(r[0], r[1], r[5]) for r in got_rows}
        wrong = sorted(have - want)
        assert not wrong, f"{path}: names on the wrong values: {wrong[:8]}"


FORMATS = {"keras": "keras-zip", "weights": "keras3-weights", "legacy": "legacy-model"}


def check_reply(reply: dict) -> None:
    assert "error" not in reply, reply.get("error")
    assert reply["expected"], "model has no variables"
    for key, (path, config) in reply["files"].items():
        assert_same_names(reply["expected"], path, config, FORMATS[key])


# --- keras.applications ------------------------------------------------------------------

APPS = [
    ("ResNet50V2", 32), ("ResNet101V2", 32), ("MobileNetV2", 32), ("MobileNetV3Small", 32),
    ("EfficientNetB0", 32), ("EfficientNetV2B0", 32), ("DenseNet121", 32), ("ConvNeXtTiny", 32),
    ("Xception", 71), ("NASNetMobile", 32), ("InceptionV3", 75),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", APPS, ids=[a for a, _ in APPS])
def test_applications_named_as_keras(keras_worker, tmp_path, name, size):
    reply = keras_worker.ask({"kind": "app", "name": name, "size": size, "out": str(tmp_path / name)})
    check_reply(reply)


# --- random nested models ------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_b = st.booleans()
_units = st.integers(1, 5)
_dtype = st.sampled_from([None, None, "bfloat16", "mixed_float16", "float16", "mixed_bfloat16"])

seq_leaf = st.one_of(
    st.tuples(st.just("dense"), _units, _b, _dtype),
    st.tuples(st.just("bn"), _b, _b, _b),
    st.tuples(st.just("ln"), _b, _b, _b),
    st.tuples(st.just("rnn"), st.sampled_from(["LSTM", "GRU", "SimpleRNN"]), _units, _b, _b),
    st.tuples(st.just("bidi"), st.sampled_from(["LSTM", "GRU"]), _units),
    st.tuples(st.just("td"), _units, _b),
    st.tuples(st.just("conv1d"), st.sampled_from(["Conv1D", "SeparableConv1D", "DepthwiseConv1D"]), _units, _b),
)
func_leaf = st.one_of(
    seq_leaf,
    st.tuples(st.just("gn"), _b, _b),
    st.tuples(st.just("conv2d"), st.integers(1, 2), _b),
    st.tuples(st.just("prelu")),
    st.tuples(st.just("normalization")),
    st.tuples(st.just("rmsnorm")),
    st.tuples(st.just("dropout")),
    st.tuples(st.just("einsum"), _units, _b),
    st.tuples(st.just("mha"), st.integers(1, 2), st.integers(1, 3), _b),
    st.tuples(st.just("attention"), _b, _b),
    st.tuples(st.just("additive"), _b),
    st.tuples(st.just("op"), st.sampled_from(["add", "tanh", "mul"])),
    st.tuples(st.just("shared"), _b),
    st.tuples(st.just("shared_nested"), _units),
)
seq_block = st.recursive(seq_leaf, lambda kids: st.tuples(st.just("seq"), st.lists(kids, min_size=1, max_size=3)), max_leaves=6)
func_block = st.recursive(
    st.one_of(func_leaf, st.tuples(st.just("seq"), st.lists(seq_block, min_size=1, max_size=3))),
    lambda kids: st.tuples(st.just("func"), st.lists(kids, min_size=1, max_size=4)),
    max_leaves=8,
)
model_spec = st.fixed_dictionaries({
    "features": st.integers(2, 4),
    "embedding": st.none() | st.tuples(st.integers(3, 10), st.integers(1, 3)),
    "explicit_input": st.booleans(),
    "blocks": st.lists(func_block, min_size=1, max_size=5),
})


def _jsonable(spec):
    return json.loads(json.dumps(spec))


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("CKPTSCAN_NAMING_EXAMPLES", "50")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(spec=model_spec)
def test_random_nested_models_named_as_keras(keras_worker, tmp_path, spec):
    out = tmp_path / f"m{abs(hash(json.dumps(spec))) % 10**9}" / "model"
    reply = keras_worker.ask({"kind": "spec", "spec": _jsonable(spec), "out": str(out)})
    check_reply(reply)


HANDPICKED = {
    # Sequential in Functional in Functional, shared layers, bare ops, every BN flag
    "deep": {
        "features": 3, "embedding": [7, 2], "explicit_input": True,
        "blocks": [
            ["func", [["func", [["seq", [["dense", 3, False, None], ["bn", False, False, True]]], ["op", "add"]]],
                      ["shared_nested", 2], ["mha", 2, 2, False]]],
            ["shared", True], ["bidi", "GRU", 2], ["rnn", "GRU", 2, True, False], ["td", 2, False],
            ["bn", True, False, False], ["bn", False, True, True], ["ln", True, True, True],
            ["dense", 3, True, "bfloat16"], ["conv1d", "SeparableConv1D", 2, False],
            ["normalization"], ["rmsnorm"], ["dropout"], ["prelu"], ["gn", False, True],
        ],
    },
    # quantized layers: int4 in blocks (Keras 3.13+, mode "int4/128") adds kernel_zero
    # and g_idx (embeddings_zero and g_idx for Embedding) to the scale
    "int4": {"features": 3, "embedding": [7, 2], "explicit_input": False, "quantize": "int4",
             "blocks": [["dense", 3, True, None], ["einsum", 2, True], ["dense", 2, False, None]]},
    "int8": {"features": 3, "embedding": [7, 2], "explicit_input": False, "quantize": "int8",
             "blocks": [["dense", 3, True, None], ["einsum", 2, False]]},
    # Attention / AdditiveAttention: "scale" and "concat_score_weight" by their flags
    "attention": {"features": 3, "embedding": None, "explicit_input": False,
                  "blocks": [["attention", True, True], ["additive", True], ["attention", False, False],
                             ["additive", False], ["func", [["attention", True, False]]]]},
    # found by hypothesis: a Dense shared by the top model and a nested Sequential is
    # written twice in legacy .h5 (Keras names both by the first traversal)
    "shared_top": {"features": 2, "embedding": None, "explicit_input": False,
                   "blocks": [["dense", 1, False, None], ["shared_nested", 1]]},
    # ... and the same two levels down, where the second copy's name is ambiguous by leaf name
    "shared_deep": {"features": 2, "embedding": None, "explicit_input": False,
                    "blocks": [["dense", 1, False, None], ["func", [["func", [["shared_nested", 1]]]]]]},
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(HANDPICKED))
def test_handpicked_models_named_as_keras(keras_worker, tmp_path, key):
    check_reply(keras_worker.ask({"kind": "spec", "spec": HANDPICKED[key], "out": str(tmp_path / key)}))


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker()
