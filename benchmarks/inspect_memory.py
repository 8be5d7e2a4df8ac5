"""Peak RSS of ``ckptscan inspect`` on a ~1 GB checkpoint (issue 2, "Must show" 4).

Builds a real Keras model at run time (16 Dense 4096x4096 layers = 1.07 GB of float32,
random weights), saves it as ``.keras``, ``.weights.h5`` and legacy ``.h5``, then runs
``ckptscan inspect --json`` on each in a fresh subprocess and records its peak resident
set size (``ru_maxrss`` of the waited child, ``resource.getrusage(RUSAGE_CHILDREN)``;
each measurement runs in its own helper process so the figures do not mix).

    python benchmarks/inspect_memory.py [--dir DIR] [--layers 16] [--units 4096] [--keep]

Prints one line per file and exits 1 if any run exceeds the 100 MB target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 100

_MEASURE = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
import json
print(json.dumps({"rc": p.returncode, "maxrss_kb": r.ru_maxrss, "wall": wall, "stdout_bytes": len(p.stdout), "stderr": p.stderr.decode()[-500:]}))
"""


def build(out: Path, n_layers: int, units: int) -> dict[str, Path]:
    """Write the model in three formats with real Keras (numpy backend: no tracing cost)."""
    code = f"""
import os, warnings
os.environ["KERAS_BACKEND"] = "numpy"
import keras
from keras import layers
inp = keras.Input(({units},))
x = inp
for i in range({n_layers}):
    x = layers.Dense({units}, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=i), name=f"dense_{{i}}")(x)
model = keras.Model(inp, x, name="big")
model.save({str(out / 'big.keras')!r})
model.save_weights({str(out / 'big.weights.h5')!r})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model.save({str(out / 'big.h5')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return {"keras": out / "big.keras", "weights": out / "big.weights.h5", "legacy": out / "big.h5"}


def measure(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the checkpoint (default: a temporary folder)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--units", type=int, default=4096)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ckptscan-mem-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        files = build(tmp, args.layers, args.units)
        print(f"built in {time.perf_counter() - t:.0f} s under {tmp}")
        ckptscan = [sys.executable, "-m", "ckptscan"]
        base = measure([sys.executable, "-c", "import ckptscan.cli.program"])
        print(f"baseline (python + import ckptscan.cli.program): peak RSS {base['maxrss_kb'] / 1024:.1f} MB")
        worst = 0.0
        for kind, path in files.items():
            size = path.stat().st_size
            r = measure(ckptscan + ["inspect", str(path), "--json"])
            if r["rc"] != 0:
                print(f"{kind}: inspect failed rc={r['rc']}: {r['stderr']}")
                return 2
            mb = r["maxrss_kb"] / 1024
            worst = max(worst, mb)
            print(f"{kind:8s} {path.name:16s} {size / 1e9:.2f} GB  peak RSS {mb:6.1f} MB  wall {r['wall']:.2f} s")
        print(f"worst peak RSS {worst:.1f} MB (target < {TARGET_MB} MB): {'OK' if worst < TARGET_MB else 'OVER'}")
        return 0 if worst < TARGET_MB else 1
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
