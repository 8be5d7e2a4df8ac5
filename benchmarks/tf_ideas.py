"""Ideas for the TensorFlow-checkpoint scan that were measured and dropped (docs/benchmarks.md).

Each compares the way ``ckptscan`` does it with the idea, over the data shard of a
checkpoint (``PREFIX``, e.g. the ResNet101V2 one ``benchmarks/tf_scan.py`` writes),
interleaved, best of ``--repeat``, wall and CPU time (user + system of the process: all
of its threads, so work moved to a second thread shows as CPU above wall when the
threads did overlap):

* ``crc-thread``: read + ``isfinite`` on the main thread, CRC32C of the same blocks on a
  second thread (the ``crc32c`` package, which releases the GIL while it computes;
  ``google-crc32c`` keeps it for anything but ``bytes`` of 1 MiB and more), handed over
  through a ring of 4 buffers; against one thread doing all three with ``google-crc32c``.
  Skipped when ``crc32c`` is not installed.
* ``overlap``: the data pass (``preadv`` + CRC32C + ``isfinite`` of every float tensor, in
  shard order) on a second thread while the main thread decodes the object graph and
  names the variables; against the two one after the other.
* ``window``: sequential ``preadv`` + ``isfinite`` of the whole shard through buffers of
  128 KiB to 2 MiB (the scan reads 512 KiB blocks).

    python benchmarks/tf_ideas.py PREFIX [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import queue
import threading
import time

import numpy as np


def _best(fns: dict, repeat: int) -> dict[str, tuple[float, float]]:
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            w, cpu = time.perf_counter() - t, time.process_time() - c
            bw, bc = best.get(name, (1e9, 1e9))
            best[name] = (min(bw, w), min(bc, cpu))
    return best


def _float_entries(prefix: str):
    from ckptscan.formats.tfbundle.bundle import Bundle

    b = Bundle(prefix)
    return b, sorted((e for e in b.entries.values() if e.dtype == "float32" and e.size and not e.sliced),
                     key=lambda e: (e.shard, e.offset))


def crc_thread(prefix: str, repeat: int) -> dict | None:
    try:
        import crc32c
    except ImportError:
        return None
    import google_crc32c

    _, entries = _float_entries(prefix)
    fd = os.open(entries[0].shard, os.O_RDONLY)
    block = 512 << 10

    def one_thread():
        buf = np.empty(block, np.uint8)
        for e in entries:
            pos, run = 0, 0
            while pos < e.size:
                k = min(block, e.size - pos)
                os.preadv(fd, [buf[:k]], e.offset + pos)
                run = google_crc32c.extend(run, buf[:k])
                np.isfinite(buf[:k].view(np.float32)).all()
                pos += k

    def two_threads():
        bufs = [np.empty(block, np.uint8) for _ in range(4)]
        free: queue.SimpleQueue = queue.SimpleQueue()
        full: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(len(bufs)):
            free.put(i)

        def crc_worker():
            run = 0
            while (item := full.get()) is not None:
                i, k, first = item
                run = crc32c.crc32c(bufs[i][:k], 0 if first else run, 1)  # 1: always release the GIL
                free.put(i)

        t = threading.Thread(target=crc_worker)
        t.start()
        for e in entries:
            pos = 0
            while pos < e.size:
                k = min(block, e.size - pos)
                i = free.get()
                os.preadv(fd, [bufs[i][:k]], e.offset + pos)
                np.isfinite(bufs[i][:k].view(np.float32)).all()
                full.put((i, k, pos == 0))
                pos += k
        full.put(None)
        t.join()

    try:
        return _best({"one thread (google-crc32c)": one_thread, "CRC on a second thread (crc32c)": two_threads}, repeat)
    finally:
        os.close(fd)


def overlap(prefix: str, repeat: int) -> dict:
    import google_crc32c

    from ckptscan.formats.tfbundle import names, proto

    def data_pass(entries):
        fd = os.open(entries[0].shard, os.O_RDONLY)
        buf = np.empty(512 << 10, np.uint8)
        for e in entries:
            pos, run = 0, 0
            while pos < e.size:
                k = min(len(buf), e.size - pos)
                os.preadv(fd, [buf[:k]], e.offset + pos)
                run = google_crc32c.extend(run, buf[:k])
                np.isfinite(buf[:k].view(np.float32)).all()
                pos += k
        os.close(fd)

    def naming(b):
        raw = b.read_strings(b.entries[names.OBJECT_GRAPH_KEY])[0]
        names.object_names(proto.parse_object_graph(raw), prefix)

    def sequential():
        b, entries = _float_entries(prefix)
        data_pass(entries)
        naming(b)

    def overlapped():
        b, entries = _float_entries(prefix)
        t = threading.Thread(target=data_pass, args=(entries,))
        t.start()
        naming(b)
        t.join()

    return _best({"entries, data pass, then names": sequential, "data pass overlapping the names": overlapped}, repeat)


def window(prefix: str, repeat: int) -> dict:
    _, entries = _float_entries(prefix)
    path = entries[0].shard
    fd = os.open(path, os.O_RDONLY)
    size = os.path.getsize(path)

    def reader(w):
        buf = np.empty(w, np.uint8)

        def run():
            pos = 0
            while pos < size:
                k = min(w, size - pos)
                os.preadv(fd, [buf[:k]], pos)
                np.isfinite(buf[: k - k % 4].view(np.float32)).all()
                pos += k
        return run

    try:
        return _best({f"{w >> 10} KiB": reader(w) for w in (128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20)}, repeat)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    for title, fn in (("crc-thread", crc_thread), ("overlap", overlap), ("window", window)):
        got = fn(args.prefix, args.repeat)
        print(f"{title} (load average {os.getloadavg()[0]:.1f}; best of {args.repeat}, wall ms (CPU ms))")
        if got is None:
            print("  skipped: pip install crc32c")
            continue
        for name, (w, c) in got.items():
            print(f"  {name:36s} {w * 1000:6.1f} ({c * 1000:6.1f})")


if __name__ == "__main__":
    main()
