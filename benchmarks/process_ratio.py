"""Floor process vs ``ckptscan scan`` process on the ResNet101V2 inputs, per Python.

Start-up is part of what a user waits for: this times whole processes (best of N,
``benchmarks/run.py``'s ``best_of``: wall and CPU of the child) for each Python given,
so a plain ``pip install .`` venv can be compared with a development one.

    python benchmarks/process_ratio.py [--inputs benchmarks/out/inputs/resnet]
                                       [--python PY ...] [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import best_of  # noqa: E402

FILES = ("resnet.keras", "resnet.weights.h5", "resnet.h5", "tf_resnet.h5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default=str(HERE / "out" / "inputs" / "resnet"))
    ap.add_argument("--python", nargs="+", default=[sys.executable],
                    help="Pythons with ckptscan installed (each also runs the floor)")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print("| python | file | floor proc s (CPU) | `ckptscan scan` proc s (CPU) | ratio wall (CPU) |")
    print("|---|---|---:|---:|---:|")
    for py in args.python:
        for name in FILES:
            f = Path(args.inputs) / name
            if not f.exists():
                continue
            fl = best_of([py, str(HERE / "floor.py"), str(f)], args.repeat)
            sc = best_of([py, "-m", "ckptscan", "scan", str(f), "--format", "json", "-o", "/dev/null"], args.repeat)
            print(f"| {py} | {name} | {fl['wall']:.3f} ({fl['cpu']:.3f}) | {sc['wall']:.3f} ({sc['cpu']:.3f}) "
                  f"| {sc['wall'] / fl['wall']:.2f}× ({sc['cpu'] / fl['cpu']:.2f}×) |", flush=True)


if __name__ == "__main__":
    main()
