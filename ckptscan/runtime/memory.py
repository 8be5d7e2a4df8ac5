"""The memory cap: ``--max-memory`` as ``RLIMIT_DATA`` (Linux), and recovery after a file hit it.

What ckptscan cannot size in advance is what libhdf5 allocates while decoding corrupt
metadata (a fuzzed file made it grow without end inside one C call). The CLI therefore
runs under a memory cap (:func:`apply_memory_cap`; ``--max-memory`` /
``CKPTSCAN_MAX_MEMORY``, default :data:`DEFAULT_MAX_MEMORY`): an allocation past it fails,
and the failure (``MemoryError``, or libhdf5's "memory allocation failed") is reported as
:class:`~ckptscan.errors.LimitExceededError` for that file (:func:`memory_reason`); the
run goes on with the next file.
"""

from __future__ import annotations

# --- the memory cap ------------------------------------------------------------------------
#
# Linux: RLIMIT_DATA, which since kernel 4.7 bounds the heap *and* every private writable
# mapping (anonymous mmap, thread stacks): all the memory a process can fill. Not RLIMIT_AS:
# that also counts address space reserved but never usable (glibc reserves 64 MiB per
# thread arena, PROT_NONE): 16 threads add 1.1 GiB of address space but 130 MiB of data
# (measured), so an address-space cap could refuse a healthy run with a thread pool.
# Elsewhere RLIMIT_AS, where the platform enforces it. ckptscan maps no file (tensor values
# are read with preadv into block-sized buffers); Python, numpy and h5py take ~95 MiB of
# data (~150 MiB of address space) before the first file.
#
# The soft limit is the cap; the hard limit is the cap plus MEMORY_RESERVE. When a memory
# failure is seen (memory_exhausted(), called where errors are mapped), the soft limit is
# raised to the hard one: closing the HDF5 file that holds the memory and printing the
# error line must not fail for want of a few pages. When the file is closed (file_timeout)
# or the next one opened (open_checkpoint), memory_recover() releases the memory (gc,
# libhdf5's free lists, malloc_trim) and lowers the soft limit again: to the cap, or, if
# the heap still stays mapped near it, to what is mapped plus MEMORY_HEADROOM (never
# within MEMORY_CLEANUP of the hard limit). The bound on the process is the hard limit.
# Child processes (scan --jobs / fix --jobs workers, fork or spawn) inherit both limits.

#: Default memory cap of the CLI process that reads the files (bytes). Scanning a 2 GB
#: checkpoint runs under a 256 MiB cap (see docs/fuzzing.md).
DEFAULT_MAX_MEMORY = 2 << 30
#: Memory kept above the cap for cleanup after a memory failure.
MEMORY_RESERVE = 256 << 20
#: After a memory failure the heap may stay mapped up to the cap (glibc cannot give back
#: pages below a live allocation) though it is nearly all free: the next files then run
#: with the soft limit at what is mapped plus this much (at most the hard limit less
#: :data:`MEMORY_CLEANUP`). Re-arming at the cap itself left no room for new mappings, and
#: h5py failed in odd ways (a SystemError, a segfault at exit) on the next healthy file.
#: The live allocations were libhdf5's free lists; since they are released
#: (:func:`_release_hdf5_free_lists`) the heap shrinks back and this is a fallback only.
MEMORY_HEADROOM = 128 << 20
#: Always kept between the soft and the hard limit, for closing a file that hit the cap.
MEMORY_CLEANUP = 64 << 20
#: The environment variable of ``--max-memory`` ("2G", "1536M", "0" = no cap).
MEMORY_ENV = "CKPTSCAN_MAX_MEMORY"
#: Smallest cap accepted (Python, numpy and h5py alone take ~95 MiB).
MIN_MAX_MEMORY = 256 << 20

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}


def parse_size(text: str | int) -> int:
    """Bytes from ``"2G"``, ``"1.5GiB"``, ``"512M"``, ``"1073741824"`` (binary units); 0 = off.

    Raises ``ValueError`` for anything else, or a cap below :data:`MIN_MAX_MEMORY`.

    >>> parse_size("2G"), parse_size("512MiB"), parse_size("0")
    (2147483648, 536870912, 0)
    """
    import re

    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"not a size: {text!r} (examples: 2G, 1536M, 0 for no limit)")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n < 0 or 0 < n < MIN_MAX_MEMORY:
        raise ValueError(f"memory limit {text!r} is below the minimum of {format_size(MIN_MAX_MEMORY)} (0: no limit)")
    return n


def format_size(n: int) -> str:
    """``2147483648`` → ``"2.0 GiB"``; ``1610612736`` → ``"1.5 GiB"``; ``805306368`` → ``"768 MiB"``."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


class _Memory:
    cap: int | None = None
    """The cap applied to this process (inherited state after fork), None: none."""
    spent: bool = False
    """The reserve was released after a memory failure (restored by memory_recover())."""


_MEM = _Memory()


def _rlimit() -> int | None:
    """The resource limit used for the cap (see "the memory cap"), None where absent."""
    import sys

    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    if sys.platform.startswith("linux") and hasattr(resource, "RLIMIT_DATA"):
        return resource.RLIMIT_DATA
    return getattr(resource, "RLIMIT_AS", None)


def apply_memory_cap(limit: int | None = None) -> int | None:
    """Cap the memory of this process (and of its future children) at ``limit`` bytes.

    ``None``: ``CKPTSCAN_MAX_MEMORY`` if set, else :data:`DEFAULT_MAX_MEMORY`; ``0``: no
    cap. Sets the limit (``RLIMIT_DATA`` on Linux, else ``RLIMIT_AS``) to soft =
    ``limit``, hard = ``limit`` + :data:`MEMORY_RESERVE` (never above an existing hard
    limit, so ``ulimit -d`` still wins) and exports ``CKPTSCAN_MAX_MEMORY`` (bytes) to
    child processes. Returns the cap applied, or None (no cap, or no such limit on this
    platform). Raises ``ValueError`` for a malformed ``CKPTSCAN_MAX_MEMORY``.
    """
    import os

    if limit is None:
        env = os.environ.get(MEMORY_ENV)
        limit = parse_size(env) if env not in (None, "") else DEFAULT_MAX_MEMORY
    if not limit:
        os.environ[MEMORY_ENV] = "0"
        _MEM.cap = None
        return None
    which = _rlimit()
    if which is None:  # pragma: no cover - Windows
        return None
    import resource

    _, hard = resource.getrlimit(which)
    want_hard = limit + MEMORY_RESERVE
    if hard != resource.RLIM_INFINITY and hard < want_hard:
        want_hard = hard
        limit = min(limit, hard - MEMORY_RESERVE)
        if limit < MIN_MAX_MEMORY:  # an outer `ulimit -v` already bounds us tighter: leave it
            return None
    try:
        resource.setrlimit(which, (limit, want_hard))
    except (ValueError, OSError):  # pragma: no cover - current usage above the limit
        return None
    _MEM.cap, _MEM.spent = limit, False
    os.environ[MEMORY_ENV] = str(limit)
    return limit


def memory_cap() -> int | None:
    """The address-space cap this process runs under (set here or inherited), or None."""
    if _MEM.cap is not None:
        return _MEM.cap
    import os

    env = os.environ.get(MEMORY_ENV, "")
    if env.isdigit() and int(env):  # a spawned child of a capped process: check it holds
        try:
            import resource

            if resource.getrlimit(_rlimit())[0] <= int(env) + MEMORY_RESERVE:
                _MEM.cap = int(env)
        except (ImportError, AttributeError, ValueError, OSError, TypeError):  # pragma: no cover
            return None
    return _MEM.cap


def is_memory_failure(exc: BaseException) -> bool:
    """True for ``MemoryError`` and libhdf5's "memory allocation failed" errors."""
    if isinstance(exc, MemoryError):
        return True
    try:
        return "memory allocation failed" in str(exc)
    except MemoryError:  # pragma: no cover - not even the message fits
        return True


def memory_exhausted() -> None:
    """A memory failure happened: release the reserve (soft limit up to the hard one) so
    the file can be closed and reported. Cheap and safe to call more than once."""
    if memory_cap() is None or _MEM.spent:
        return
    try:
        import resource

        _, hard = resource.getrlimit(_rlimit())
        resource.setrlimit(_rlimit(), (hard, hard))
        _MEM.spent = True
    except (ImportError, ValueError, OSError, TypeError):  # pragma: no cover
        pass


def memory_recover() -> None:
    """After a memory failure, once its file is closed: give the memory back and re-arm
    the cap (no-op otherwise). Called before each file is opened."""
    if not _MEM.spent:
        return
    import gc

    gc.collect()
    _release_hdf5_free_lists()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # glibc: return freed heap pages to the system
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass
    try:
        import resource

        _, hard = resource.getrlimit(_rlimit())
        soft = min(_MEM.cap, hard)
        used = _mapped()
        if used is not None and used + MEMORY_HEADROOM > soft:
            soft = max(soft, min(hard - MEMORY_CLEANUP, used + MEMORY_HEADROOM))
        resource.setrlimit(_rlimit(), (soft, hard))
    except (ImportError, ValueError, OSError, TypeError):  # pragma: no cover
        return
    _MEM.spent = False


def _release_hdf5_free_lists() -> None:
    """Give the blocks on libhdf5's own free lists back to malloc (``H5garbage_collect``).

    libhdf5 keeps blocks it frees on free lists of its own. After a file that hit the
    cap, some of them sit at the top of the heap, above memory that is free but still
    mapped: ``malloc_trim`` cannot shrink the heap below them and the cap counts all of
    it, so each later file got only what was left below the hard limit and a healthy
    file could fail in odd ways. Released, the heap shrinks back (measured in
    docs/benchmarks.md, "memory recovery after a file that hit the cap"). h5py does not
    wrap this call; it runs through ctypes on the libhdf5 this process has loaded, under
    h5py's lock. Best effort.
    """
    lib = _hdf5_library()
    if lib is None:
        return
    try:
        from h5py._objects import phil

        with phil:
            lib.H5garbage_collect()
    except Exception:  # pragma: no cover - an h5py without phil, a library without the call
        pass


_HDF5_LIB: list = []


def _hdf5_library():
    """The libhdf5 that h5py loaded (ctypes handle), None if unknown (found in /proc/self/maps)."""
    if _HDF5_LIB:
        return _HDF5_LIB[0]
    lib = None
    try:
        import ctypes
        import os
        import re

        pattern = re.compile(r"libhdf5(_serial|_openmpi|_mpich)?([-.][^/]*)?\.so[^/]*$")
        with open("/proc/self/maps") as fh:
            paths = {line.split(None, 5)[5].strip() for line in fh if line.count(" ") >= 5 and "libhdf5" in line}
        for path in sorted(paths):
            if pattern.search(os.path.basename(path)) and "_hl" not in os.path.basename(path):
                lib = ctypes.CDLL(path)
                lib.H5garbage_collect.restype = ctypes.c_int
                break
    except (OSError, AttributeError, IndexError, ImportError):
        lib = None
    _HDF5_LIB.append(lib)
    return lib


def _mapped() -> int | None:
    """Bytes this process has mapped that the cap counts (Linux ``VmData``), None if unknown."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_reason(exc: BaseException | None = None) -> str:
    """The reason reported for a file that hit the memory cap (or, uncapped, ran out).

    Under a cap one wording whatever ran into it (libhdf5's "memory allocation failed" or a
    ``MemoryError`` in Python: which one comes first depends on the heap): ``memory limit
    of 2.0 GiB exceeded while reading (--max-memory)``. Without a cap (the Python API),
    ``exc`` from libhdf5 names the HDF5 metadata.
    """
    cap = memory_cap()
    if cap is not None:
        return f"memory limit of {format_size(cap)} exceeded while reading (--max-memory)"
    if exc is not None and not isinstance(exc, MemoryError):
        return "corrupt HDF5 metadata made the HDF5 library run out of memory"
    return "out of memory while reading; refusing this file"
