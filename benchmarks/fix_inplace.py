"""Benchmark: fix one BatchNormalization layer of a ~1 GB ``.keras`` in place vs a full rewrite.

Builds (with Keras, jax backend) a model whose ``wide`` Dense kernel is 16384×16384
float32 (1 GiB), breaks 3 channels of ``bn/moving_variance``, saves it as ``.keras``
(stored zip member, as Keras writes it), then times on fresh copies:

1. ``ckptscan.patch.apply`` of an explicit one-layer plan, ``verify="targets"``:
   lock, journal, ``pwrite`` of 12 bytes + two CRC-32 fields, re-read of the tensor;
2. the same plan with ``force_rewrite=True``: extract ``model.weights.h5``, write with
   h5py, re-zip, fsync, ``os.replace`` (what a compressed member needs);
3. ``ckptscan fix FILE --verify targets`` end to end (scan to find the targets + 1);
4. ``ckptscan fix FILE`` with the default full verification (+ every tensor hashed
   before and after, zip CRCs checked);
5. the Keras way: ``load_model``, ``set_weights`` on the layer, ``model.save``.

Usage: ``python benchmarks/fix_inplace.py [--dir DIR] [--repeat N] [--markdown]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

BAD = {0: np.nan, 7: -1.0, 63: np.inf}


def build(path: Path) -> None:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(64, 3, name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16384, name="wide_in")(x)
    x = layers.Dense(16384, name="wide")(x)
    out = layers.Dense(10, name="head")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    g, b, mm, mv = [np.array(w) for w in bn.get_weights()]
    for i, v in BAD.items():
        mv[i] = v
    bn.set_weights([g, b, mm, mv])
    model.save(path)


def timed(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        runs.append(fn())
    return statistics.median(runs), min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="ckptscan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "big.keras"
    if not src.exists():
        t = time.perf_counter()
        build(src)
        print(f"built {src} ({src.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    import ckptscan
    from ckptscan.formats import open_checkpoint
    from ckptscan.patch import Change, PatchPlan, apply

    with open_checkpoint(src) as ck:
        var = ck.find("bn/moving_variance")
        old = ck.read(var).astype(np.float64)
    idx = tuple(sorted(BAD))
    plan = PatchPlan(str(src), (Change(var, idx, np.ones(len(idx)), old[list(idx)], strategy="reset"),))

    def fresh() -> Path:
        dst = work / "copy.keras"
        if dst.exists():
            dst.unlink()
        shutil.copyfile(src, dst)
        os.sync()
        return dst

    def run_apply(force_rewrite: bool) -> float:
        p = fresh()
        pl = PatchPlan(str(p), plan.changes)
        t = time.perf_counter()
        f = apply(pl, verify="targets", force_rewrite=force_rewrite)
        dt = time.perf_counter() - t
        assert f.status == "fixed" and f.mode == ("rewrite" if force_rewrite else "in-place"), f
        return dt

    def run_cli(*extra: str) -> float:
        p = fresh()
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ckptscan", "fix", str(p), "--strategy", "reset", *extra],
                             capture_output=True, text=True)
        dt = time.perf_counter() - t
        assert out.returncode == 0, out.stderr
        return dt

    def run_keras() -> float:
        import keras

        p = fresh()
        t = time.perf_counter()
        model = keras.saving.load_model(p)
        bn = model.get_layer("bn")
        w = [np.array(x) for x in bn.get_weights()]
        w[3][list(idx)] = 1.0
        bn.set_weights(w)
        model.save(p)
        return time.perf_counter() - t

    size = src.stat().st_size
    rows = [
        ("apply plan in place (verify targets)", *timed(lambda: run_apply(False), args.repeat)),
        ("apply plan, full archive rewrite (verify targets)", *timed(lambda: run_apply(True), args.repeat)),
        ("`ckptscan fix --verify targets` (scan + patch)", *timed(lambda: run_cli("--verify", "targets"), args.repeat)),
        ("`ckptscan fix` (scan + patch + full verify)", *timed(lambda: run_cli(), args.repeat)),
        ("Keras load_model + set_weights + save", *timed(run_keras, 1)),
    ]
    _ = ckptscan
    if args.markdown:
        print(f"File: {size / 2**30:.2f} GiB `.keras` (stored member), 3 channels of one BN variance changed "
              f"(12 bytes + 2 CRC fields); median of {args.repeat} runs (Keras: 1 run).\n")
        print("| method | median s | min s |")
        print("|---|---:|---:|")
        for name, med, mn in rows:
            print(f"| {name} | {med:.3f} | {mn:.3f} |")
    else:
        for name, med, mn in rows:
            print(f"{name:55s} median {med:8.3f} s  min {mn:8.3f} s")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
