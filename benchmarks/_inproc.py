"""In-process timing helper for ``run.py``: warm up once, then time N repeats.

    python benchmarks/_inproc.py floor|scan|blocks REPEAT FILE...

``floor``   :func:`floor.floor` (read every dataset, ``np.isfinite``)
``scan``    :func:`ckptscan.scan` (the full scan: naming, statistics, rules, report)
``blocks``  open with ckptscan and stream every tensor through ``iter_blocks`` with
            an ``np.isfinite`` reduction (the reader alone, without statistics/rules)
``open``    ``open_checkpoint`` only (indexing, naming: the metadata cost)
``read``    ``iter_blocks`` + ``np.isfinite`` on checkpoints opened beforehand (data path)
``stats``   ``tensor_stats`` on checkpoints opened beforehand (data path + full statistics:
            counts, min/max, mean/std; what the scan computed before 2026-11-27 05:00)
``counts``  ``count_values`` on checkpoints opened beforehand (data path + the scan's kernel:
            NaN/±Inf counts and indices, what the rules read)

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

    report = ckptscan.scan(paths)
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


class _Open:
    """Checkpoints opened once, untimed: for timing the data path alone."""

    cache: dict = {}

    @classmethod
    def get(cls, paths):
        import ckptscan

        key = tuple(paths)
        if key not in cls.cache:
            cls.cache[key] = [ckptscan.open_checkpoint(p) for p in paths]
        return cls.cache[key]


def _open_only(paths):
    import ckptscan

    n = 0
    for p in paths:
        with ckptscan.open_checkpoint(p) as ck:
            n += sum(v.nbytes for v in ck.variables)
    return n, 0


def _read_only(paths):
    import numpy as np

    nbytes = bad = 0
    for ck in _Open.get(paths):
        for v in ck.variables:
            nbytes += v.nbytes
            for b in ck.iter_blocks(v):
                bad += not np.isfinite(b).all()
    return nbytes, bad


def _kernel_only(kernel: str):
    """The data path through one of :mod:`ckptscan.stats`' kernels, on checkpoints opened beforehand."""

    def run(paths):
        from ckptscan import stats

        fn = getattr(stats, kernel)
        nbytes = bad = 0
        for ck in _Open.get(paths):
            for v in ck.variables:
                if v.is_float:
                    nbytes += v.nbytes
                    bad += fn(ck.iter_blocks(v), len(v.shape) == 1).n_nonfinite > 0
        return nbytes, bad

    return run


MODES = {"floor": _floor, "scan": _scan, "blocks": _blocks, "open": _open_only, "read": _read_only,
         "stats": _kernel_only("tensor_stats"), "counts": _kernel_only("count_values")}


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
