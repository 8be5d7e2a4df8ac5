"""Scanning a TensorFlow-format checkpoint against its raw floor and TensorFlow itself.

* floor: read every float tensor's bytes from the data shard (``preadv`` into one
  reused 512 KiB buffer, no naming, no checksum) and reduce them with ``np.isfinite``;
* ckptscan: ``ckptscan.scan(PREFIX)``: naming, one screening pass over the shard
  (CRC32C of every tensor + "all finite?", ``formats/tfbundle/screen.py``), rules;
* CRC32C alone: ``google_crc32c.value`` over the same number of bytes, the part of the
  scan the floor does not do and no reader that verifies checksums can skip.

Best of ``--repeat`` runs each, page cache warm, wall and CPU time (user + system of
this process: the better guide on a shared machine), runs interleaved so that load
swings hit every measure alike. With ``--tf-python PY`` (a Python with ``tensorflow``
and ``tf_keras``), TensorFlow's own restore is measured in a child process:
``tf_keras.applications.ResNet101V2(weights=None)`` built, then ``load_weights(PREFIX)``
timed (first and best of 3), then TensorFlow's own reader without a model
(``tf.train.load_checkpoint``, every tensor with ``get_tensor``, which checks its
CRC32C, and ``np.isfinite``: what the scan does, done by TensorFlow). When
``PREFIX.index`` does not exist, that child first writes it with ``save_weights``
(this is how the checkpoint is built). On a VM the share of CPU time its host took
(steal, ``/proc/stat``) during the runs is printed: above a few per cent, the figures
are slower than the machine is.

The scan's screening pass is the C loop where it is built (``CKPTSCAN_NATIVE=0`` runs the
Python one instead, for comparison); the script prints which one ran.

With ``--copies N`` the checkpoint is first copied N times into fresh temporary folders
and every copy is measured in turn (floor, scan and opening interleaved per copy), one
line each, then removed. On the KVM guests of docs/benchmarks.md the page cache of one
copy and of another are read at different speeds (``preadv`` of the same 179 MB at 21-30
ms), and the floor, nearly all copying, moves with them while the scan's Python does not:
the ratio of a single copy says as much about where its pages landed as about the scan.

With ``--cold`` (root on Linux) the page cache is dropped before every timed read
(``sync; echo 1 > /proc/sys/vm/drop_caches``), the floor's, the scan's and each of
TensorFlow's loads: the data come from the disk, as for a checkpoint not read since it
was written or copied in; the CRC32C-alone row stays in memory.

    python benchmarks/tf_scan.py PREFIX [--repeat N] [--copies N] [--cold] [--tf-python /work/tfvenv/bin/python]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np


def drop_page_cache() -> None:
    """Evict every clean page (Linux, root): the next read of the checkpoint hits the disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")


def cpu_steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs so far (Linux ``/proc/stat``), else None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (v[7], sum(v[:8])) if len(v) >= 8 else None


def floor(prefix: str) -> tuple[float, float, int]:
    """(wall, CPU, bytes) of reading every float32 tensor with ``preadv`` + ``isfinite``."""
    from ckptscan.formats import open_checkpoint

    with open_checkpoint(prefix) as ck:
        vs = [v for v in ck.variables if v.is_float and v.dtype == "float32"]
    buf = np.empty(1 << 17, dtype=np.float32)
    fds: dict[str, int] = {}
    t, c = time.perf_counter(), time.process_time()
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
    return time.perf_counter() - t, time.process_time() - c, total


def ckptscan_scan(prefix: str) -> tuple[float, float]:
    from ckptscan import scan

    t, c = time.perf_counter(), time.process_time()
    res = scan(prefix).files[0]
    assert res.status == "scanned", res.reason
    return time.perf_counter() - t, time.process_time() - c


def ckptscan_open(prefix: str) -> tuple[float, float]:
    """Opening alone: index table, entries, object graph, names."""
    from ckptscan.formats import open_checkpoint

    t, c = time.perf_counter(), time.process_time()
    open_checkpoint(prefix).close()
    return time.perf_counter() - t, time.process_time() - c


def crc_only(nbytes: int) -> tuple[float, float]:
    import google_crc32c

    block = bytes(512 << 10)
    t, c = time.perf_counter(), time.process_time()
    v = 0
    for _ in range(nbytes // len(block) + 1):
        v = google_crc32c.extend(v, block)
    return time.perf_counter() - t, time.process_time() - c


_TF_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import tf_keras
t1 = time.perf_counter()
m = tf_keras.applications.ResNet101V2(weights=None)
t2 = time.perf_counter()
prefix = sys.argv[1]
if not os.path.exists(prefix + ".index"):
    m.save_weights(prefix)
loads = []
for _ in range(3):
    if len(sys.argv) > 2 and sys.argv[2] == "cold":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    t, c = time.perf_counter(), time.process_time()
    m.load_weights(prefix)
    loads.append((time.perf_counter() - t, time.process_time() - c))
import numpy as np
import tensorflow as tf
reads = []
for _ in range(3):  # TensorFlow's own reader, no model: every tensor (CRC32C checked) + isfinite
    if len(sys.argv) > 2 and sys.argv[2] == "cold":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    t, c = time.perf_counter(), time.process_time()
    r = tf.train.load_checkpoint(prefix)
    for name, dt in r.get_variable_to_dtype_map().items():
        x = r.get_tensor(name)
        if dt.is_floating:
            np.isfinite(x).all()
    reads.append((time.perf_counter() - t, time.process_time() - c))
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "first_load": loads[0][0], "first_load_cpu": loads[0][1],
                  "load_weights": min(w for w, _ in loads), "load_weights_cpu": min(c for _, c in loads),
                  "first_read": reads[0][0], "read": min(w for w, _ in reads), "read_cpu": min(c for _, c in reads)}))
"""


def tensorflow_load(python: str, prefix: str, cold: bool = False) -> dict:
    out = subprocess.run([python, "-c", _TF_CHILD, prefix, *(["cold"] if cold else [])], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def screening_loop() -> str:
    """Which screening pass the scan uses (``CKPTSCAN_NATIVE=0`` turns the C one off)."""
    from ckptscan.formats.tfbundle.screen import native

    return ("the C loop, started when the index is read (formats/tfbundle/_screen.c)" if native() is not None
            else "Python (the C loop is not built, or CKPTSCAN_NATIVE=0)")


def measure_copies(prefix: str, copies: int, repeat: int) -> None:
    """Per fresh copy of the checkpoint: best floor, scan and opening of ``repeat``
    interleaved runs, and the scan / floor ratio."""
    files = glob.glob(glob.escape(prefix) + ".index") + glob.glob(glob.escape(prefix) + ".data-*")
    print(f"{copies} fresh copies; best of {repeat} per copy, wall s; page cache warm; "
          f"screening pass: {screening_loop()}")
    print("  copy  floor    scan     opening  scan / floor")
    ratios = []
    for i in range(copies):
        with tempfile.TemporaryDirectory(prefix="tf_scan_copy_") as d:
            for f in files:
                shutil.copyfile(f, os.path.join(d, os.path.basename(f)))
            p = os.path.join(d, os.path.basename(prefix))
            floor(p), ckptscan_scan(p)  # warm
            fl, sc, op = [], [], []
            for _ in range(repeat):
                fl.append(floor(p)[0])
                sc.append(ckptscan_scan(p)[0])
                op.append(ckptscan_open(p)[0])
            ratios.append(min(sc) / min(fl))
            print(f"  {i + 1:4d}  {min(fl):.4f}  {min(sc):.4f}  {min(op):.4f}   {ratios[-1]:.2f}x")
    print(f"  scan / floor over the copies: {min(ratios):.2f}x to {max(ratios):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tf-python", help="a Python with tensorflow + tf_keras: measure (and if needed build) with it")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every timed read (root, Linux)")
    ap.add_argument("--copies", type=int, default=0,
                    help="measure N fresh copies of the checkpoint, one after the other (see above)")
    args = ap.parse_args()
    if args.copies:
        measure_copies(args.prefix, args.copies, args.repeat)
        return
    tf = tensorflow_load(args.tf_python, args.prefix, args.cold) if args.tf_python else None
    cold = drop_page_cache if args.cold else (lambda: None)
    floor(args.prefix), ckptscan_scan(args.prefix)  # warm the page cache and imports
    runs: dict[str, list[tuple[float, float]]] = {"floor": [], "scan": [], "open": [], "crc": []}
    steal0 = cpu_steal()
    nbytes = 0
    for _ in range(args.repeat):
        cold()
        w, c, nbytes = floor(args.prefix)
        runs["floor"].append((w, c))
        cold()
        runs["scan"].append(ckptscan_scan(args.prefix))
        cold()
        runs["open"].append(ckptscan_open(args.prefix))
        runs["crc"].append(crc_only(nbytes))
    steal1 = cpu_steal()
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    f, s = best["floor"], best["scan"]
    print(f"load average {os.getloadavg()[0]:.1f}; {nbytes / 1e6:.0f} MB of float32; best of {args.repeat}, "
          f"wall s (CPU s); page cache {'dropped before each read' if args.cold else 'warm'}")
    print(f"screening pass: {screening_loop()}")
    if steal0 and steal1 and steal1[1] > steal0[1]:  # a VM's CPUs taken by its host while we ran
        print(f"steal: {100 * (steal1[0] - steal0[0]) / (steal1[1] - steal0[1]):.0f} % of CPU time during the runs")
    for k, label in (("floor", "floor (preadv + isfinite)"), ("scan", "ckptscan.scan"), ("open", "  of which opening"),
                     ("crc", "CRC32C alone, same bytes")):
        print(f"  {label:28s} {best[k][0]:.4f} ({best[k][1]:.4f})")
    print(f"  scan / floor: {s[0] / f[0]:.2f}x wall, {s[1] / f[1]:.2f}x CPU")
    if tf is not None:
        print(f"  TensorFlow: import tf_keras {tf['import']:.2f} s, build ResNet101V2 {tf['build']:.2f} s, "
              f"first load_weights {tf['first_load']:.3f} s ({tf['first_load_cpu']:.3f}), "
              f"best of 3 {tf['load_weights']:.3f} s ({tf['load_weights_cpu']:.3f})")
        print(f"  TensorFlow / scan: first load {tf['first_load'] / s[0]:.1f}x wall ({tf['first_load_cpu'] / s[1]:.1f}x CPU), "
              f"best load {tf['load_weights'] / s[0]:.1f}x wall ({tf['load_weights_cpu'] / s[1]:.1f}x CPU), "
              f"build + first load {(tf['build'] + tf['first_load']) / s[0]:.0f}x wall")
        print(f"  TensorFlow's CheckpointReader, every tensor + isfinite (no model): first {tf['first_read']:.3f} s, "
              f"best of 3 {tf['read']:.3f} s ({tf['read_cpu']:.3f}): {tf['first_read'] / s[0]:.1f}x / "
              f"{tf['read'] / s[0]:.1f}x the scan")


if __name__ == "__main__":
    main()
