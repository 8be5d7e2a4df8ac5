"""Build the benchmark inputs at run time (never committed).

Run under Keras 3 (``KERAS_BACKEND=jax``)::

    python benchmarks/inputs.py --out benchmarks/out/inputs [--quick]

Writes, into ``--out``:

``resnet/``   ``keras.applications.ResNet101V2(weights=None)`` (random weights, ~171 MB of
              float32) saved as ``resnet.keras``, ``resnet.weights.h5`` and legacy
              ``resnet.h5`` (Keras 3 ``legacy_h5_format``).
``big/``      a ~2 GB model built and saved by Keras itself: one 1 GiB ``Embedding``
              (262,144 × 1,024 float32) followed by 64 ``Dense(2048)`` layers (16 MiB
              each) and a head, as ``big.keras`` and ``big.weights.h5``.
``many/``     1,000 small ``.keras`` checkpoints (a small CNN with BatchNormalization,
              ~0.4 MB each). One model is saved by Keras; the other 999 are byte copies
              whose every weight dataset is then overwritten in place with fresh random
              values through h5py (same layout Keras wrote, different values).

``--quick`` builds tiny stand-ins (same layouts, a few MB) so the scripts can be tested.
A ``manifest.json`` records what was built; existing outputs are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _keras():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def build_resnet(out: Path, quick: bool) -> dict:
    keras = _keras()
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"resnet{k}" for k in (".keras", ".weights.h5", ".h5")}
    if all(p.exists() for p in paths.values()):
        return {k: str(p) for k, p in paths.items()}
    if quick:
        inp = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(32, 3, name="conv1_conv")(inp)
        x = keras.layers.BatchNormalization(name="conv1_bn")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(1000, name="predictions")(x)
        model = keras.Model(inp, x, name="resnet101v2")
    else:
        model = keras.applications.ResNet101V2(weights=None)
    model.save(paths[".keras"])
    model.save_weights(paths[".weights.h5"])
    model.save(paths[".h5"])  # Keras 3 writes the legacy HDF5 layout for .h5
    return {k: str(p) for k, p in paths.items()}


def build_big(out: Path, quick: bool) -> dict:
    keras = _keras()
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"big{k}" for k in (".keras", ".weights.h5")}
    if all(p.exists() for p in paths.values()):
        return {k: str(p) for k, p in paths.items()}
    vocab, dim, width, depth = (2048, 256, 256, 8) if quick else (262_144, 1024, 2048, 64)
    inp = keras.Input((16,), dtype="int32")
    x = keras.layers.Embedding(vocab, dim, name="embedding")(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i:02d}")(x)
        if i % 8 == 7:
            x = keras.layers.LayerNormalization(name=f"norm_{i:02d}")(x)
    x = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inp, x, name="big")
    model.save(paths[".keras"])
    model.save_weights(paths[".weights.h5"])
    del model
    return {k: str(p) for k, p in paths.items()}


def _small_cnn(keras):
    inp = keras.Input((32, 32, 3))
    x = inp
    for i, f in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, x, name="small")


def _rewrite_values(src: Path, dst: Path, rng) -> None:
    """Copy a stored .keras and give every float weight new values, in place.

    The datasets are located through h5py (their offsets inside the stored
    ``model.weights.h5`` member) and overwritten with numpy; the layout Keras wrote
    is untouched. The zip CRCs are then recomputed so the archive stays valid.
    """
    import h5py
    import numpy as np

    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = zf.getinfo("model.weights.h5")
        assert info.compress_type == zipfile.ZIP_STORED
        targets = []
        with zf.open(info) as member, h5py.File(member, "r") as h5:
            def visit(_name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size > 1:
                    targets.append((obj.id.get_offset(), obj[...]))
            h5.visititems(visit)
    with open(dst, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        n, m = np.frombuffer(fh.read(4), "<u2")
        start = info.header_offset + 30 + int(n) + int(m)
        for offset, old in targets:
            new = old + (rng.standard_normal(old.shape) * 0.01 * (np.abs(old) + 0.01)).astype(old.dtype)
            fh.seek(start + offset)
            fh.write(np.ascontiguousarray(new, dtype=old.dtype.newbyteorder("<")).tobytes())
    _fix_crc(dst, "model.weights.h5")


def _fix_crc(path: Path, member: str) -> None:
    import struct
    import zlib

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        central_offset = zf.start_dir
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", fh.read(4))
        fh.seek(info.header_offset + 30 + n + m)
        crc = zlib.crc32(fh.read(info.file_size)) & 0xFFFFFFFF
        fh.seek(info.header_offset + 14)
        fh.write(struct.pack("<I", crc))
        # the central directory entry of the member: find it by its name
        fh.seek(central_offset)
        central = fh.read()
        key = b"PK\x01\x02"
        pos = 0
        while True:
            pos = central.find(key, pos)
            if pos < 0:
                raise RuntimeError("central directory entry not found")
            name_len = struct.unpack("<H", central[pos + 28 : pos + 30])[0]
            if central[pos + 46 : pos + 46 + name_len] == member.encode():
                fh.seek(central_offset + pos + 16)
                fh.write(struct.pack("<I", crc))
                break
            pos += 4


def build_many(out: Path, quick: bool) -> dict:
    import numpy as np

    count = 10 if quick else 1000
    out.mkdir(parents=True, exist_ok=True)
    names = [out / f"ckpt_{i:04d}.keras" for i in range(count)]
    if all(p.exists() for p in names):
        return {"count": count, "dir": str(out), "files": [str(p) for p in names]}
    keras = _keras()
    model = _small_cnn(keras)
    model.save(names[0])
    rng = np.random.default_rng(0)
    for p in names[1:]:
        if not p.exists():
            _rewrite_values(names[0], p, rng)
    with zipfile.ZipFile(names[-1]) as zf:  # the rewritten archives stay valid zips
        assert zf.testzip() is None
    return {"count": count, "dir": str(out), "files": [str(p) for p in names]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny stand-ins for tests")
    ap.add_argument("--only", choices=["resnet", "big", "many"], action="append")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    builders = {"resnet": build_resnet, "big": build_big, "many": build_many}
    for name in args.only or list(builders):
        t0 = time.perf_counter()
        manifest[name] = builders[name](args.out / name, args.quick)
        print(f"built {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    manifest["quick"] = args.quick
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
