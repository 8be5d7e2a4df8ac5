"""In-process timing helper for ``run.py``: warm up once, then time N repeats.

    python benchmarks/_inproc.py floor|scan|blocks REPEAT FILE...

``floor``   :func:`floor.floor` (read every dataset, ``np.isfinite``)
``scan``    :func:`ckptscan.scan` (the full scan: naming, statistics, rules, report)
``blocks``  open with ckptscan and stream every tensor through ``iter_blocks`` with
            an ``np.isfinite`` reduction (the reader alone, without statistics/rules)

Prints one JSON object: wall and CPU seconds per repeat, bytes, and a check value.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _floor(paths):
    from floor import floor

    r = floor(paths)
    return r["bytes"], r["nonfinite_datasets"]


def _scan(paths):
    import ckptscan

    report = ckptscan.scan(paths, timeout=0)
    bad = [r for r in report.files if r.status != "scanned"]
    if bad:
        raise SystemExit(f"{bad[0].path}: {bad[0].status}: {bad[0].reason}")
    return sum(r.bytes_scanned for r in report.files), len(report.findings)


def _blocks(paths):
    import numpy as np

    import ckptscan

    nbytes = bad = 0
    for p in paths:
        with ckptscan.open_checkpoint(p) as ck:
            for v in ck.variables:
                nbytes += v.nbytes
                for b in ck.iter_blocks(v):
                    if not np.isfinite(b).all():
                        bad += 1
    return nbytes, bad


MODES = {"floor": _floor, "scan": _scan, "blocks": _blocks}


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode, repeat, paths = args[0], int(args[1]), args[2:]
    fn = MODES[mode]
    fn(paths)  # warm-up: page cache, imports, first-call costs
    walls, cpus = [], []
    out = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn(paths)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    print(json.dumps({"mode": mode, "wall": walls, "cpu": cpus, "bytes": out[0], "check": out[1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
