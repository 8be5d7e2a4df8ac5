"""Scanning a TensorFlow-format checkpoint against its raw floor and TensorFlow itself.

* floor: read every float tensor's bytes from the data shard (``preadv`` into one
  reused 512 KiB buffer, no naming, no checksum) and reduce them with ``np.isfinite``;
* ckptscan: ``ckptscan.scan(PREFIX)``: naming, CRC32C of every tensor, statistics, rules;
* CRC32C alone: ``google_crc32c.value`` over the same number of bytes, the part of the
  scan the floor does not do and no reader that verifies checksums can skip.

Best of ``--repeat`` runs each, page cache warm. TensorFlow's own restore time is
measured separately (it needs TensorFlow; see ``docs/benchmarks.md``).

    python benchmarks/tf_scan.py PREFIX [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def floor(prefix: str) -> tuple[float, int]:
    from ckptscan.formats import open_checkpoint

    with open_checkpoint(prefix) as ck:
        vs = [v for v in ck.variables if v.is_float and v.dtype == "float32"]
    buf = np.empty(1 << 17, dtype=np.float32)
    fds: dict[str, int] = {}
    t = time.perf_counter()
    total = 0
    for v in vs:
        fd = fds.get(v.file) or fds.setdefault(v.file, os.open(v.file, os.O_RDONLY))
        pos = 0
        while pos < v.size:
            n = min(buf.size, v.size - pos)
            os.preadv(fd, [memoryview(buf[:n]).cast("B")], v.offset + 4 * pos)
            np.isfinite(buf[:n]).all()
            pos += n
        total += v.nbytes
    for fd in fds.values():
        os.close(fd)
    return time.perf_counter() - t, total


def ckptscan_scan(prefix: str) -> float:
    from ckptscan import scan

    t = time.perf_counter()
    res = scan(prefix).files[0]
    assert res.status == "scanned", res.reason
    return time.perf_counter() - t


def crc_only(nbytes: int) -> float:
    import google_crc32c

    block = bytes(512 << 10)
    t = time.perf_counter()
    c = 0
    for _ in range(nbytes // len(block) + 1):
        c = google_crc32c.extend(c, block)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    floor(args.prefix), ckptscan_scan(args.prefix)  # warm the page cache and imports
    f, nbytes = min(floor(args.prefix) for _ in range(args.repeat))
    s = min(ckptscan_scan(args.prefix) for _ in range(args.repeat))
    c = min(crc_only(nbytes) for _ in range(args.repeat))
    print(f"{nbytes / 1e6:.0f} MB of float32: floor {f:.3f} s, ckptscan scan {s:.3f} s ({s / f:.1f}x floor), "
          f"CRC32C alone {c:.3f} s")


if __name__ == "__main__":
    main()
