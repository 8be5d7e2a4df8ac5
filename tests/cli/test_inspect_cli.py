"""``ckptscan inspect`` on every Keras 3 layout of one real model (the CLI's ``main(argv)``, in process)."""

from __future__ import annotations

import fnmatch
import functools
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import ckptscan
from conftest import need_module, run_cli

keras = need_module("keras")

SAME_KEYS = ("path", "layer_path", "layer_name", "layer_class", "name", "shape", "dtype", "kind", "naming")


def _model():
    from keras import layers

    inner = keras.Sequential([layers.Conv2D(4, 3, name="seq_conv"), layers.BatchNormalization(name="seq_bn")], name="backbone_seq")
    inp = keras.Input((8, 8, 3), name="img")
    x = inner(inp)
    x = layers.BatchNormalization(center=False, name="post_bn")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(3, name="head")(x)
    model = keras.Model(inp, out, name="toy")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((4, 8, 8, 3)).astype("float32"), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    model = _model()
    files = {
        "keras": d / "toy.keras",
        "weights": d / "toy.weights.h5",
        "config": d / "toy.config.json",
        "sharded": d / "sharded" / "toy.weights.json",
        "folder": d / "toy_dir",
        "legacy": d / "toy.h5",
    }
    model.save(files["keras"])
    with zipfile.ZipFile(files["keras"]) as zf:
        files["config"].write_bytes(zf.read("config.json"))
    model.save_weights(files["weights"])
    files["sharded"].parent.mkdir()
    model.save_weights(files["sharded"], max_shard_size=0.0000005)  # ~540-byte shards
    keras.saving.save_model(model, files["folder"], zipped=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(files["legacy"])
    return model, files


@functools.cache
def _inspect_json(*args: str) -> str:
    proc = run_cli("inspect", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def inspect_json(*args):
    return json.loads(_inspect_json(*map(str, args)))  # the whole of stdout is one JSON document


def records(doc, keys=SAME_KEYS):
    return sorted(tuple(json.dumps(v[k]) for k in keys) for v in doc["variables"])


def keras_names(model):
    out = {}
    for layer in model.layers:
        subs = layer.layers if isinstance(layer, keras.Sequential) else [layer]
        for sub in subs:
            prefix = f"{layer.name}/{sub.name}" if sub is not layer else layer.name
            for w in sub.weights:
                out[f"{prefix}/{w.name}"] = (list(w.shape), w.dtype)
    return out


def test_table_header(saved):
    model, files = saved
    proc = run_cli("inspect", files["keras"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(files["keras"])
    assert lines[1] == f"  format keras-zip, Keras {keras.__version__}"
    n = len(model.weights)
    n_layers = len({p.rsplit("/", 1)[0] for p in keras_names(model)})
    assert lines[2].startswith(f"  {n} variables in {n_layers} layers, {model.count_params():,} parameters, ")
    assert lines[2].endswith(f"; {len(model.optimizer.variables)} optimizer variables")
    header = lines[4].split()
    assert header == ["layer", "path", "variable", "shape", "dtype", "size"]
    body = [ln for ln in lines[6:] if ln.strip()]
    assert len(body) == n
    assert any(ln.split()[:4] == ["backbone_seq/seq_bn", "moving_variance", "(4)", "float32"] for ln in body)


def test_json_matches_keras(saved):
    model, files = saved
    doc = inspect_json(files["keras"])
    assert doc["schema_version"] == 1
    assert doc["format"] == "keras-zip"
    assert doc["keras_version"] == keras.__version__
    assert doc["parameters"] == model.count_params()
    assert doc["counts"]["variables"] == len(model.weights)
    assert doc["counts"]["optimizer_variables"] == len(model.optimizer.variables)
    assert doc["counts"]["inferred_names"] == 0
    got = {v["path"]: (v["shape"], v["dtype"]) for v in doc["variables"]}
    assert got == keras_names(model)
    assert {v["kind"] for v in doc["variables"]} == {"weight"}
    post = [v for v in doc["variables"] if v["layer_path"] == "post_bn"]
    assert [v["name"] for v in post] == ["gamma", "moving_mean", "moving_variance"]  # center=False


def test_layer_glob(saved):
    _, files = saved
    doc = inspect_json(files["keras"], "--layer", "*_bn")
    paths = {v["layer_path"] for v in doc["variables"]}
    assert paths == {"backbone_seq/seq_bn", "post_bn"}
    assert all(fnmatch.fnmatchcase(p, "*_bn") for p in paths)
    doc = inspect_json(files["keras"], "--layer", "backbone_seq/*")
    assert {v["layer_path"] for v in doc["variables"]} == {"backbone_seq/seq_conv", "backbone_seq/seq_bn"}
    # counts describe the whole file, the list only the selection
    assert doc["counts"]["variables"] == len(saved[0].weights)
    proc = run_cli("inspect", files["keras"], "--layer", "nothing*")
    assert proc.returncode == 0 and "head" not in proc.stdout


def test_include_optimizer(saved):
    model, files = saved
    plain = inspect_json(files["keras"])
    doc = inspect_json(files["keras"], "--include-optimizer")
    opt = [v for v in doc["variables"] if v["kind"] == "optimizer"]
    assert len(opt) == len(model.optimizer.variables)
    assert all(v["layer_path"].startswith("optimizer") for v in opt)
    assert records(plain) == records({"variables": [v for v in doc["variables"] if v["kind"] == "weight"]})
    assert sorted(tuple(v["shape"]) for v in opt) == sorted(tuple(w.shape) for w in model.optimizer.variables)


def test_config_names_bare_weights(saved):
    _, files = saved
    ref = inspect_json(files["keras"])
    bare = inspect_json(files["weights"])
    assert bare["format"] == "keras3-weights"
    named = inspect_json(files["weights"], "--config", files["config"])
    assert named["counts"]["inferred_names"] == 0
    assert records(named) == records(ref)
    # without the config, layer names still come from the `name` attributes (Keras >= 3.6)
    assert {v["layer_path"] for v in bare["variables"]} == {v["layer_path"] for v in ref["variables"]}


def test_sharded_index(saved):
    _, files = saved
    shards = sorted(p.name for p in files["sharded"].parent.glob("*.weights.h5"))
    assert len(shards) > 1, shards
    doc = inspect_json(files["sharded"], "--config", files["config"])
    assert doc["format"] == "keras3-sharded"
    assert records(doc) == records(inspect_json(files["keras"]))
    assert {v["member"] for v in doc["variables"]} <= set(shards)


def test_unzipped_folder(saved):
    _, files = saved
    assert (files["folder"] / "config.json").is_file()
    doc = inspect_json(files["folder"])
    assert doc["format"] == "keras-dir"
    assert doc["keras_version"] == keras.__version__
    assert records(doc) == records(inspect_json(files["keras"]))


def test_deflated_weights_member_same_result(saved, tmp_path):
    _, files = saved
    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(files["keras"]) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(deflated) as zf:
        assert zf.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
    assert records(inspect_json(deflated)) == records(inspect_json(files["keras"]))
    # and the values read through the temporary inflated copy are the same
    with ckptscan.open_checkpoint(deflated) as a, ckptscan.open_checkpoint(files["keras"]) as b:
        # the stored member is read in place; the deflated one from one inflated temporary copy
        assert {v.file for v in b.variables} == {str(files["keras"])}
        (inflated,) = {v.file for v in a.variables}
        assert inflated != str(deflated) and Path(inflated).is_file()
        for va in a.variables:
            np.testing.assert_array_equal(a.read(va), b.read(b.find(va.path)))
    assert not Path(inflated).exists()  # removed on close


def test_legacy_h5_same_names(saved):
    _, files = saved
    doc = inspect_json(files["legacy"])
    assert doc["format"] == "legacy-model"
    keys = ("path", "shape", "dtype", "kind", "naming")
    assert records(doc, keys) == records(inspect_json(files["keras"]), keys)


def test_layer_checkpoint_dependencies_layout(saved, tmp_path):
    """Keras 2.13-era stores: every ``layers`` group is ``_layer_checkpoint_dependencies``.

    Made by renaming a Keras 3 store; Keras 3 itself still loads the renamed copy
    (``H5IOStore`` falls back by replacing every ``layers`` in the path), which the test
    checks before asking ckptscan about it.
    """
    model, files = saved
    old = tmp_path / "old.weights.h5"
    shutil.copy(files["weights"], old)
    with h5py.File(old, "r+") as f:
        groups = []
        f.visit(lambda name: groups.append(name) if name.rsplit("/", 1)[-1] == "layers" and isinstance(f[name], h5py.Group) else None)
        for name in sorted(groups, key=lambda n: -n.count("/")):  # deepest first
            f.move(name, name[: -len("layers")] + "_layer_checkpoint_dependencies")
        assert "layers" not in f and "_layer_checkpoint_dependencies" in f
    fresh = keras.models.clone_model(model)
    fresh.load_weights(old)
    for a, b in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    doc = inspect_json(old, "--config", files["config"])
    assert doc["format"] == "keras3-weights"
    ref = inspect_json(files["weights"], "--config", files["config"])
    assert records(doc) == records(ref)
    assert doc["counts"]["inferred_names"] == 0


def test_help_and_bad_option():
    proc = run_cli("inspect", "--help")
    assert proc.returncode == 0
    for opt in ("--json", "--layer", "--include-optimizer", "--config"):
        assert opt in proc.stdout
    proc = run_cli("inspect", "--no-such-option", "x")
    assert proc.returncode == 4
