"""How fast could ``open_checkpoint`` index a file? A measurement, not a reader.

Enumerates every dataset of an HDF5 file (or the stored weights member of a
``.keras``) with h5py's low-level API: one ``H5Lvisit`` (``GroupID.links.visit``) for names and link types
(a soft or external link is where a safe reader stops), then per dataset
``h5d.open``, shape, dtype, layout, file offset, storage size and whether a ``dtype``
attribute exists: what ``formats/v3.py`` needs before naming. Prints CPU times of that,
of h5py's ``visititems``, and of ``ckptscan.open_checkpoint``::

    python benchmarks/index_prototype.py benchmarks/out/inputs/resnet/resnet.weights.h5
"""

from __future__ import annotations

import sys
import time

import h5py

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from floor import _open  # noqa: E402  (same zip-member window as the floor)


def lowlevel(path: str) -> int:
    h5, window = _open(path)
    try:
        fid = h5.id
        datasets: list[bytes] = []
        unsafe: list[bytes] = []

        def visit(name: bytes, info) -> None:
            if info.type != h5py.h5l.TYPE_HARD:
                unsafe.append(name)
            else:
                datasets.append(name)

        fid.links.visit(visit, info=True)
        if unsafe:
            raise SystemExit(f"{path}: links {unsafe[:3]} (a reader refuses the file)")
        n = 0
        for name in datasets:
            oid = h5py.h5o.open(fid, name)
            if h5py.h5i.get_type(oid) != h5py.h5i.DATASET:
                continue
            shape = oid.get_space().shape  # noqa: F841
            dtype = oid.dtype  # noqa: F841
            layout = oid.get_create_plist().get_layout()  # noqa: F841
            offset = oid.get_offset()  # noqa: F841
            stored = oid.get_storage_size()  # noqa: F841
            hint = h5py.h5a.exists(oid, b"dtype")  # noqa: F841
            n += 1
        return n
    finally:
        h5.close()
        if window is not None:
            window.close()


def highlevel(path: str) -> int:
    h5, window = _open(path)
    try:
        found = []
        h5.visititems(lambda _n, o: found.append((o.shape, o.dtype, o.id.get_offset(), "dtype" in o.attrs))
                      if isinstance(o, h5py.Dataset) else None)
        return len(found)
    finally:
        h5.close()
        if window is not None:
            window.close()


def ckptscan_open(path: str) -> int:
    import ckptscan

    with ckptscan.open_checkpoint(path) as ck:
        return len(ck.variables)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in args:
        for label, fn in (("low-level h5l.visit + h5d.open", lowlevel), ("h5py visititems", highlevel),
                          ("ckptscan.open_checkpoint", ckptscan_open)):
            n = fn(path)
            best = min(_cpu(fn, path) for _ in range(5))
            print(f"{path}: {label:32s} {n:5d} datasets/variables  {best * 1000:7.1f} ms CPU")
    return 0


def _cpu(fn, path: str) -> float:
    t = time.process_time()
    fn(path)
    return time.process_time() - t


if __name__ == "__main__":
    sys.exit(main())
