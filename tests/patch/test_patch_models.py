"""Small Keras 3 checkpoints with known broken tensors, in every layout, for the fix tests.

Built once per test session (session fixture ``fixmodels``) with Keras on the jax
backend; no test in this module. Each variant is saved clean (the reference) and
corrupted; ``BROKEN`` records exactly what was broken.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

#: (layer path, variable) → {flat index: value} applied to the "bn" corruption.
BROKEN = {
    ("bn", "moving_mean"): {1: np.inf},
    ("bn", "moving_variance"): {2: np.nan, 3: -1.0},
    ("block/bn2", "moving_mean"): {5: np.nan},
    ("block/bn2", "moving_variance"): {0: np.inf},
}
#: Corruption a clamp can repair (no NaN in the variance).
BROKEN_CLAMP = {
    ("bn", "moving_variance"): {0: np.inf, 3: -1.0},
    ("block/bn2", "moving_variance"): {2: np.inf},
}
#: Every channel of a variance broken: median has nothing to work with.
BROKEN_ALL = {("block/bn2", "moving_variance"): {i: np.nan for i in range(6)}}
#: A non-BN tensor broken.
BROKEN_KERNEL = {("head", "kernel"): {1: np.nan, 4: np.inf}}

X = np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32")
LAYOUTS = ("keras", "weights", "sharded", "legacy", "bf16", "fp16", "deflated", "dir")


def make_model(dtype=None):
    """Conv → BN (Constant(2) variance init) → ReLU → Sequential(Conv, BN) → pool → Dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv", dtype=dtype)(inp)
    x = layers.BatchNormalization(name="bn", dtype=dtype,
                                  moving_variance_initializer=keras.initializers.Constant(2.0))(x)
    x = layers.ReLU(dtype=dtype)(x)
    block = keras.Sequential([layers.Conv2D(6, 3, name="conv2", dtype=dtype),
                              layers.BatchNormalization(name="bn2", dtype=dtype)], name="block")
    x = block(x)
    x = layers.GlobalAveragePooling2D(dtype=dtype)(x)
    out = layers.Dense(3, name="head", dtype=dtype)(x)
    model = keras.Model(inp, out, name="net")
    rng = np.random.RandomState(1)
    for lyr in (model.get_layer("bn"), block.get_layer("bn2")):  # trained-looking statistics
        g, b, mm, mv = [np.asarray(w) for w in lyr.get_weights()]
        lyr.set_weights([g, b, rng.randn(*mm.shape).astype(mm.dtype) * 0.1,
                         (0.5 + rng.rand(*mv.shape)).astype(mv.dtype)])
    return model


def layer_of(model, path):
    """The layer at a structural path (``block/bn2``)."""
    obj = model
    for part in path.split("/"):
        obj = obj.get_layer(part)
    return obj


def corrupt(model, broken):
    """Apply a BROKEN-style mapping to a model's variables."""
    for (lpath, vname), vals in broken.items():
        lyr = layer_of(model, lpath)
        var = next(v for v in lyr.weights if v.path.endswith("/" + vname) or v.name == vname)
        arr = np.array(var.numpy()).reshape(-1)
        for i, v in vals.items():
            arr[i] = v
        var.assign(arr.reshape(var.shape))


def save(model, d: Path, stem: str, layout: str) -> Path:
    """Save ``model`` in one layout; returns the checkpoint path."""
    if layout in ("keras", "bf16", "fp16"):
        p = d / f"{stem}.keras"
        model.save(p)
    elif layout == "weights":
        p = d / f"{stem}.weights.h5"
        model.save_weights(p)
    elif layout == "sharded":
        p = d / f"{stem}.weights.json"
        model.save_weights(p, max_shard_size=0.000002)
    elif layout == "legacy":
        p = d / f"{stem}.h5"
        model.save(p)
    elif layout == "deflated":
        src = save(model, d, stem + "_stored", "keras")
        p = d / f"{stem}.keras"
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info))
        src.unlink()
    elif layout == "dir":
        src = save(model, d, stem + "_z", "keras")
        p = d / f"{stem}_dir"
        with zipfile.ZipFile(src) as zf:
            zf.extractall(p)
        src.unlink()
    else:  # pragma: no cover
        raise ValueError(layout)
    return p


def dtype_for(layout: str):
    """Layer dtype used for a layout's model."""
    return {"bf16": "bfloat16", "fp16": "float16"}.get(layout)


def build(d: Path) -> dict:
    """Every layout, clean and with each corruption; returns {(layout, kind): path}."""
    out = {}
    models = {}
    for layout in LAYOUTS:
        dt = dtype_for(layout)
        if dt not in models:
            m = make_model(dt)
            models[dt] = (m, [np.array(w) for w in m.get_weights()])
        model, clean = models[dt]
        for kind, broken in (("clean", None), ("bn", BROKEN), ("clamp", BROKEN_CLAMP), ("allbad", BROKEN_ALL),
                             ("kernel", BROKEN_KERNEL)):
            if kind in ("clamp", "allbad", "kernel") and layout not in ("keras", "legacy", "sharded", "fp16"):
                continue
            sub = d / layout / kind
            sub.mkdir(parents=True)
            model.set_weights(clean)
            if broken:
                with np.errstate(over="ignore"):
                    corrupt(model, broken)
            out[(layout, kind)] = save(model, sub, "m", layout)
    return out


@pytest.fixture(scope="session")
def fixmodels(tmp_path_factory):
    """Pristine checkpoints (copy before writing!): {(layout, kind): path}."""
    return build(tmp_path_factory.mktemp("fixmodels"))


def fresh(src: Path, dst_dir: Path) -> Path:
    """Copy a checkpoint (file, folder or sharded set) into ``dst_dir``; return its new path."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    src = Path(src)
    if src.is_dir():
        shutil.copytree(src, dst_dir / src.name)
    else:
        for f in src.parent.iterdir():
            shutil.copy2(f, dst_dir / f.name)
    return dst_dir / src.name


def load_keras(path: Path, layout: str):
    """Load a checkpoint into Keras (weights-only layouts into a fresh model)."""
    import keras

    if layout in ("weights", "sharded"):
        model = make_model(dtype_for(layout))
        model.load_weights(path)
        return model
    if layout == "dir":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in sorted(Path(path).iterdir()):
                zf.write(f, f.name)
        tmp = Path(str(path) + ".zipped.keras")
        tmp.write_bytes(buf.getvalue())
        try:
            return keras.saving.load_model(tmp)
        finally:
            tmp.unlink()
    return keras.saving.load_model(path)


def h5_files(path: Path) -> dict[str, bytes]:
    """name → bytes of every HDF5 file holding the checkpoint's tensors."""
    path = Path(path)
    if path.is_dir():
        return {f.name: f.read_bytes() for f in path.iterdir() if f.suffix == ".h5"}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return {"model.weights.h5": zf.read("model.weights.h5")}
    if path.suffix == ".json":
        return {f.name: f.read_bytes() for f in path.parent.iterdir() if f.name.endswith(".h5")}
    return {path.name: path.read_bytes()}


def dataset_digests(path: Path) -> dict[str, str]:
    """``file:dataset`` → sha256 of its raw stored bytes, for every dataset."""
    import h5py

    out = {}
    for name, data in h5_files(path).items():
        with h5py.File(io.BytesIO(data), "r") as f:
            def visit(n, obj):
                if isinstance(obj, h5py.Dataset):
                    arr = np.ascontiguousarray(obj[()])
                    out[f"{name}:{n}"] = hashlib.sha256(arr.tobytes()).hexdigest()
            f.visititems(visit)
    return out


def sha256(path: Path) -> str:
    """sha256 of a file, or of every file of a folder / sharded set (sorted by name)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else (
        sorted(p for p in path.parent.iterdir() if p.name.endswith((".json", ".h5")))
        if path.suffix == ".json" else [path])
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
