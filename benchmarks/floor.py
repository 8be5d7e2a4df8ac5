"""The raw floor: read every dataset's bytes and reduce them with ``np.isfinite``.

Nothing else: no naming, no statistics, no rules. One Python process over all the
files given. ``.keras`` archives are read through their stored ``model.weights.h5``
member in place (a read-only window over the zip, as any reader without extraction
would). Each dataset is read whole (``ds[()]``) and reduced with
``np.isfinite(a).all()``; memory therefore grows with the largest tensor, which is
exactly what a bounded-memory scanner must not do, but it is the fastest honest
"just read it and check it" baseline.

    python benchmarks/floor.py FILE... [--repeat N] [--json]
"""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import zipfile

import h5py
import numpy as np


class _Window(io.RawIOBase):
    """Read-only view of ``size`` bytes at ``start`` of a file (a stored zip member)."""

    def __init__(self, path: str, start: int, size: int):
        super().__init__()
        self._f = open(path, "rb", buffering=0)
        self.start, self.size, self.pos = start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        return self.pos

    def readinto(self, b):
        n = max(0, min(len(b), self.size - self.pos))
        if not n:
            return 0
        self._f.seek(self.start + self.pos)
        got = self._f.readinto(memoryview(b)[:n]) or 0
        self.pos += got
        return got

    def close(self):
        self._f.close()
        super().close()


def _open(path: str):
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        return h5py.File(path, "r", locking=False), None
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model.weights.h5")
    if info.compress_type != zipfile.ZIP_STORED:
        raise SystemExit(f"{path}: compressed member; the floor reads stored members only")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", fh.read(4))
    window = _Window(path, info.header_offset + 30 + n + m, info.file_size)
    return h5py.File(window, "r", locking=False), window


def floor(paths: list[str]) -> dict:
    """Read and ``isfinite``-reduce every dataset of every file; returns counts."""
    nbytes = 0
    datasets = 0
    nonfinite_datasets = 0
    for path in paths:
        h5, window = _open(path)
        try:
            found: list[h5py.Dataset] = []
            h5.visititems(lambda _n, o: found.append(o) if isinstance(o, h5py.Dataset) else None)
            for ds in found:
                a = ds[()]
                if a.dtype.kind in "fiu":
                    datasets += 1
                    nbytes += a.nbytes
                    if not np.isfinite(a).all():
                        nonfinite_datasets += 1
        finally:
            h5.close()
            if window is not None:
                window.close()
    return {"bytes": nbytes, "datasets": datasets, "nonfinite_datasets": nonfinite_datasets}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    repeat = 1
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i : i + 2]
    as_json = "--json" in args
    paths = [a for a in args if a != "--json"]
    times = []
    result: dict = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = floor(paths)
        times.append(time.perf_counter() - t0)
    result["seconds"] = times
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{result['datasets']} datasets, {result['bytes'] / 1e6:.1f} MB, best {min(times):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
