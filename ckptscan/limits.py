"""Per-file resource limits: a wall-clock ``--timeout`` and the memory bounds readers obey.

Time: :func:`file_timeout` arms ``SIGALRM`` (``signal.setitimer``) around the work on one
file and raises :class:`~ckptscan.errors.FileTimeoutError` when it fires, so a bulk run
reports the file and goes on. Python delivers the signal between bytecodes: a single
call into the HDF5 C library finishes before the timeout is raised (no such call in
ckptscan reads more than one bounded block). Outside the main thread, or where
``setitimer`` does not exist (Windows), the context manager does nothing. A call that
never returns to Python (libhdf5 looping on a corrupt B-tree) is stopped from outside by
the process's watcher: the CLI's supervisor process, else one watchdog process per
process (see "the hard stop" below).

Memory: every reader refuses, before allocating, any structure whose declared size
exceeds the constants below, and reads tensor values block by block
(:meth:`ckptscan.formats.base.Checkpoint.iter_blocks`). What ckptscan cannot size in
advance is what libhdf5 allocates while decoding corrupt metadata (a fuzzed file made it
grow without end inside one C call). The CLI therefore runs under a memory cap
(:func:`apply_memory_cap`, ``RLIMIT_DATA`` on Linux; ``--max-memory`` / ``CKPTSCAN_MAX_MEMORY``,
default :data:`DEFAULT_MAX_MEMORY`): an allocation past it fails, and the failure
(``MemoryError``, or libhdf5's "memory allocation failed") is reported as
:class:`~ckptscan.errors.LimitExceededError` for that file (:func:`memory_reason`); the
run goes on with the next file (see "the memory cap" below).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from .errors import FileTimeoutError

#: Default ``--timeout`` (seconds per file) of the read-only commands; 0 disables it.
DEFAULT_TIMEOUT = 300.0

#: Declared-but-unstored dataset bytes refused above this (a "shape bomb": a huge shape
#: over no or tiny storage; Keras always writes every byte of every weight).
MAX_UNBACKED_BYTES = 256 << 20
#: A filtered (compressed) dataset may expand at most this much over its stored bytes
#: once it declares more than :data:`MAX_UNBACKED_BYTES`.
MAX_DATASET_EXPANSION = 1000
#: Largest JSON document read (``config.json``, ``metadata.json``, sharded index).
MAX_JSON_BYTES = 64 << 20
#: Deepest JSON nesting accepted (Python's parser would otherwise hit RecursionError).
MAX_JSON_DEPTH = 200
#: Largest attribute read (elements times item size; vlen strings counted per element).
MAX_ATTR_BYTES = 64 << 20
#: Most elements in one list attribute (``layer_names``, ``weight_names``).
MAX_ATTR_ELEMS = 1 << 20
#: Deepest group nesting walked in an HDF5 file.
MAX_GROUP_DEPTH = 64
#: A compressed zip member may expand at most this much (Keras' own ``_reject_zip_bomb``)
#: once it is larger than :data:`MAX_SMALL_MEMBER`.
MAX_ZIP_EXPANSION = 100
MAX_SMALL_MEMBER = 256 << 20
#: Largest compressed member inflated to a temporary file.
MAX_INFLATED = 64 << 30


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
    cap, some of them sit at the top of the heap, above hundreds of MiB that are free
    but still mapped: ``malloc_trim`` cannot shrink the heap below them and the cap
    counts all of it. Each later file then got only what was left below the hard limit;
    after three such files, about 1 MiB (measured: ``VmData`` 959 MiB under a 960 MiB
    soft limit, the 768 MiB cap), and a healthy file could fail in odd ways. Released,
    the heap shrinks back (768 → 94 MiB). h5py does not wrap this call; it runs through
    ctypes on the libhdf5 this process has loaded, under h5py's lock. Best effort.
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


class _Deadline:
    """The deadline of the innermost :func:`file_timeout` (checked by every HDF5 read)."""

    at: float | None = None
    path: object = None
    seconds: float = 0.0


_DEADLINE = _Deadline()


def check_deadline() -> None:
    """Raise :class:`FileTimeoutError` if the current file's deadline has passed.

    Called from every read the HDF5 library makes through
    :class:`~ckptscan.formats.zipmember.FileWindow`: a corrupt B-tree that sends the C
    library round in circles re-reads the file, and each read then fails, so the
    library gives up even though a Python signal handler cannot interrupt it.
    """
    at = _DEADLINE.at
    if at is not None and time.monotonic() >= at:
        raise FileTimeoutError(_DEADLINE.path, f"timed out after {_DEADLINE.seconds:g} s (--timeout)")


def expired() -> FileTimeoutError | None:
    """The timeout error to report if the current deadline has passed, else None."""
    try:
        check_deadline()
    except FileTimeoutError as exc:
        return exc
    return None


# --- the hard stop -----------------------------------------------------------------------
#
# A corrupt file can send libhdf5 round in circles inside one C call that holds the GIL:
# neither SIGALRM nor check_deadline() runs again. Only another process can stop it. Each
# process has one *watcher*, told over a pipe what it is working on:
#
#   b"A <kill_at> <seconds> <path>\n"   armed: stop me at time.monotonic() == kill_at
#   b"D\n"                              disarmed
#
# (CLOCK_MONOTONIC is system-wide, so the watcher compares it with its own clock.)
#
# * Under the CLI the watcher is the *supervisor* (:func:`supervise`): ``main()`` forks
#   once at start; the parent only waits. When a deadline passes it SIGKILLs the child,
#   prints the one error line and exits 2; otherwise it relays the child's exit status.
# * Elsewhere (the Python API, ``scan --jobs`` pool workers, in-process ``main(argv)``)
#   the first hard :func:`file_timeout` forks one long-lived *watchdog* for the process;
#   every later file only writes to its pipe. The watchdog exits when the pipe closes
#   (the process exited) and is reaped at exit. In a pool worker run under the supervisor
#   it records the stuck file (``CKPTSCAN_STUCK_FILE``) before stopping the worker, so the
#   pool's one-at-a-time retry of that file reports the timeout at once instead of hanging
#   again; the other files' results are kept.

#: Seconds past ``--timeout`` after which the watcher stops a process stuck in C code.
HARD_GRACE = 5.0
#: After Ctrl-C, seconds the supervisor waits for a child stuck in a file before stopping it.
INTERRUPT_GRACE = 2.0
#: The environment variable naming the list of files that hung a pool worker.
STUCK_ENV = "CKPTSCAN_STUCK_FILE"
#: Set to ``0`` to run the CLI without a supervisor process (debugging).
SUPERVISOR_ENV = "CKPTSCAN_SUPERVISOR"


def hard_reason(seconds: float) -> str:
    """The reason reported for a file stopped by the hard limit."""
    return f"timed out after {seconds:g} s (--timeout); stuck in the HDF5 library, stopped"


class _Channel:
    """This process's pipe to its watcher."""

    fd: int | None = None
    """Write end of the pipe (None: no watcher yet)."""
    owner: int | None = None
    """The pid that owns ``fd`` (a forked child must not use its parent's)."""
    watchdog: int | None = None
    """pid of our own watchdog process; None when the supervisor watches us."""
    armed: tuple[float, float, str] | None = None
    """(kill_at, seconds, path) last sent."""


_CH = _Channel()


def _forget_after_fork() -> None:
    """In a forked child: the parent's pipe and watchdog are not ours."""
    import os

    if _CH.fd is not None:
        try:
            os.close(_CH.fd)
        except OSError:  # pragma: no cover
            pass
    _CH.fd = _CH.owner = _CH.watchdog = None
    _CH.armed = None


def _register_fork_hook() -> None:
    import os

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_after_fork)


_register_fork_hook()


def _encode(kill_at: float, seconds: float, path: str) -> bytes:
    name = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    msg = f"A {kill_at!r} {seconds!r} {name}\n".encode("utf-8", "surrogateescape")
    if len(msg) > 4000:  # one atomic pipe write (PIPE_BUF); the name is only for the message
        msg = msg[:3990] + b"...\n"
    return msg


def _decode(line: bytes) -> tuple[float, float, str] | None:
    if not line.startswith(b"A "):
        return None
    _, kill_at, seconds, name = line.split(b" ", 3)
    path = name.decode("utf-8", "surrogateescape").replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
    return float(kill_at), float(seconds), path


def _send(msg: bytes) -> bool:
    import os

    try:
        os.write(_CH.fd, msg)
        return True
    except OSError:  # the watcher is gone: no hard stop from now on, start a new one next time
        _drop_watchdog()
        return False


def _ensure_watcher() -> bool:
    """A watcher for this process: the supervisor's pipe, or our own watchdog (started now)."""
    import os

    if _CH.fd is not None and _CH.owner == os.getpid():
        return True
    _CH.fd = None
    return _start_watchdog()


def _arm(state: tuple[float, float, str] | None) -> None:
    if state is None:
        if _CH.fd is not None and _CH.armed is not None:
            _send(b"D\n")
        _CH.armed = None
        return
    if _ensure_watcher() and _send(_encode(*state)):
        _CH.armed = state


def _start_watchdog() -> bool:
    """Fork this process's watchdog (once); False where ``fork`` does not exist."""
    import os
    import sys

    if not hasattr(os, "fork"):
        return False
    import json  # noqa: F401 - imported before the fork: the watchdog uses it to record a stuck file
    import select  # noqa: F401

    r, w = os.pipe()
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    pid = os.fork()
    if pid == 0:  # the watchdog: no Python cleanup, only wait on the pipe and maybe kill
        try:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # hold none of the parent's files open (pipes it closes, sockets, checkpoints)
            # but the pipe and stderr
            if r > 2:
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.closerange(3, r)
                os.closerange(r + 1, 1 << 16)
            _watchdog_loop(r, parent)
        finally:
            os._exit(0)
    os.close(r)
    _CH.fd, _CH.owner, _CH.watchdog, _CH.armed = w, parent, pid, None
    _at_exit_once()
    return True


def _watchdog_loop(rfd: int, parent: int) -> None:
    """Sleep until the armed deadline; stop ``parent`` if it is still armed then."""
    import os
    import select

    armed = None
    buf = b""
    while True:
        wait = 1.0 if armed is None else max(0.0, min(1.0, armed[0] - time.monotonic()))
        ready, _, _ = select.select([rfd], [], [], wait)
        if ready:
            data = os.read(rfd, 65536)
            if not data:
                return  # the process closed the pipe: it exited
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                armed = _decode(line) if line.startswith(b"A ") else None
        if os.getppid() != parent:
            return
        if armed is not None and time.monotonic() >= armed[0]:
            _, seconds, path = armed
            if not _record_stuck(path, hard_reason(seconds)):
                line = f"ckptscan: error: {path}: {hard_reason(seconds)}\n"
                os.write(2, line.encode("utf-8", "replace"))
            os.kill(parent, signal.SIGKILL)
            return


def _drop_watchdog() -> None:
    """Close our watchdog's pipe (it then exits) and reap it."""
    import os

    fd, pid = _CH.fd, _CH.watchdog
    owner = _CH.owner
    _CH.fd = _CH.owner = _CH.watchdog = None
    _CH.armed = None
    if fd is not None and owner == os.getpid():
        try:
            os.close(fd)
        except OSError:  # pragma: no cover
            pass
    if pid is None or owner != os.getpid():
        return
    end = time.monotonic() + 1.0
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > end:
            break
        time.sleep(0.002)
    if not done:  # pragma: no cover - the watchdog always sees the pipe close
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_AT_EXIT = []


def _at_exit_once() -> None:
    if not _AT_EXIT:
        import atexit

        atexit.register(_drop_watchdog)
        _AT_EXIT.append(True)


# --- files that hung a pool worker --------------------------------------------------------


def _record_stuck(path: str, reason: str) -> bool:
    """Append ``path`` to the supervisor's stuck list; False when there is none."""
    import json
    import os

    target = os.environ.get(STUCK_ENV)
    if not target:
        return False
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return False
    try:
        os.write(fd, (json.dumps([path, reason]) + "\n").encode("utf-8", "surrogateescape"))
    except OSError:  # pragma: no cover
        return False
    finally:
        os.close(fd)
    return True


def stuck_reason(path: object) -> str | None:
    """Why ``path`` was stopped earlier in this CLI run (it hung a worker), else None."""
    import json
    import os

    target = os.environ.get(STUCK_ENV)
    if not target:
        return None
    try:
        if os.path.getsize(target) == 0:
            return None
        with open(target, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    p, reason = json.loads(line)
                except ValueError:
                    continue
                if p == str(path):
                    return reason
    except OSError:
        return None
    return None


# --- the CLI supervisor -------------------------------------------------------------------


def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux: the feature is simply absent
        return False


_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def supervise(command: str | None = None) -> None:
    """Fork the CLI into a supervisor (this call never returns there) and a worker child.

    Returns in the child, whose :func:`file_timeout` then reports to the supervisor. The
    supervisor waits for the child and exits with its status (a child killed by signal N
    is relayed as signal N). If the child stays in one file past ``--timeout`` plus
    :data:`HARD_GRACE` (stuck in C code), the supervisor SIGKILLs it, prints
    ``ckptscan: error: <file>: timed out after N s (--timeout); stuck in the HDF5 library,
    stopped`` and exits 2; for ``scan``, one more line says that no report was written.
    Ctrl-C reaches the child (same process group); a child stuck in a file that does not
    exit within :data:`INTERRUPT_GRACE` is stopped and the exit status is 130. The
    supervisor is also the subreaper of the child's processes (Linux): none outlives it.

    Does nothing without ``fork``, when already supervised, or with ``CKPTSCAN_SUPERVISOR=0``.
    """
    import os
    import sys

    if not hasattr(os, "fork") or os.environ.get(SUPERVISOR_ENV) == "0" or _CH.fd is not None:
        return
    # created by the first pool worker that gets stuck (unguessable name), removed at the end
    stuck = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"ckptscan-{os.getpid()}-{os.urandom(8).hex()}.stuck")
    os.environ[STUCK_ENV] = stuck
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    r, w = os.pipe()
    subreaper = sys.platform.startswith("linux") and _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: run unsupervised (the watchdog then applies)
        os.close(r)
        os.close(w)
        return
    if pid == 0:
        os.close(r)
        _CH.fd, _CH.owner, _CH.watchdog, _CH.armed = w, os.getpid(), None, None
        if sys.platform.startswith("linux"):
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the supervisor died before prctl
                os._exit(1)
        return
    os.close(w)
    code = 1
    try:
        code = _supervise_loop(r, pid, command)
    finally:
        if subreaper:
            _reap_orphans()
        try:
            os.unlink(stuck)
        except OSError:  # nothing got stuck in a pool worker: never created
            pass
        _exit_like(code)


def _supervise_loop(rfd: int, child: int, command: str | None) -> int | tuple[str, int]:
    """Watch ``child``; returns its exit code, or ("signal", N) when a signal killed it."""
    import os
    import select

    interrupted: list[float] = []
    forward = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None),
                           getattr(signal, "SIGQUIT", None)) if s is not None]

    def on_interrupt(signum, frame):
        interrupted.append(time.monotonic())

    def on_forward(signum, frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, on_interrupt)
    for s in forward:
        signal.signal(s, on_forward)
    armed = None
    buf = b""
    eof = False
    while True:
        if not eof:
            wait = 0.5 if armed is None else max(0.0, min(0.5, armed[0] - time.monotonic()))
            try:
                ready, _, _ = select.select([rfd], [], [], wait)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
            if ready:
                data = os.read(rfd, 65536)
                if data:
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        armed = _decode(line) if line.startswith(b"A ") else None
                else:
                    eof = True
        done, status = os.waitpid(child, 0 if eof else os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return ("signal", os.WTERMSIG(status))
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
        now = time.monotonic()
        if armed is not None and now >= armed[0]:
            _kill_and_reap(child)
            _, seconds, path = armed
            if command == "fix":  # stopped while reading (a write is never timed): drop its lock file
                try:
                    from .patch.safety import remove_stale_lock

                    remove_stale_lock(path)
                except Exception:  # pragma: no cover - the error line matters more
                    pass
            lines = f"ckptscan: error: {path}: {hard_reason(seconds)}\n"
            if command == "scan":
                lines += ("ckptscan: scan stopped: no report written; scan with --jobs 2 to report "
                          "this file and the others\n")
            os.write(2, lines.encode("utf-8", "replace"))
            return 2
        if interrupted and armed is not None and now - interrupted[0] >= INTERRUPT_GRACE:
            _kill_and_reap(child)
            os.write(2, b"ckptscan: interrupted\n")
            return 130


def _kill_and_reap(pid: int) -> None:
    import os

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover
        pass


def _children() -> list[int]:
    """pids whose parent is this process (Linux /proc)."""
    import os

    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            out.append(int(name))
    return out


def _reap_orphans(grace: float = 2.0) -> None:
    """As subreaper: wait (up to ``grace`` s) for processes the child left, then kill them."""
    import os

    end = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > end:
            break
        time.sleep(0.01)
    for pid in _children():  # pragma: no cover - orphans exit when their pipes close
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _exit_like(code: int | tuple[str, int]) -> None:
    """Leave the supervisor with ``code``, or die of the same signal as the child."""
    import os

    if isinstance(code, tuple):
        sig = code[1]
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            time.sleep(0.1)
        except (OSError, ValueError):  # pragma: no cover
            pass
        os._exit(128 + sig)
    os._exit(code)

def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def file_timeout(seconds: float | None, path: object, hard: bool = True) -> Iterator[None]:
    """Raise :class:`FileTimeoutError` for ``path`` if the block runs over ``seconds``.

    On the way out (the file closed), memory held by a file that hit ``--max-memory`` is
    given back at once (:func:`memory_recover`) rather than when the next file opens.

    ``None`` or ``<= 0`` disables the limit. Nested use keeps the outer deadline: an
    inner limit never extends it, and the outer timer is re-armed with what is left.

    ``hard``: a corrupt file can send the HDF5 C library into a loop that never returns
    to Python, so no signal handler runs. The process's watcher (see "the hard stop"
    above) then stops it :data:`HARD_GRACE` seconds after the deadline: under the CLI
    the supervisor prints ``ckptscan: error: <file>: timed out after N s (--timeout);
    stuck in the HDF5 library, stopped`` and exits 2; elsewhere the process's watchdog
    prints that line and SIGKILLs the process (``scan --jobs`` workers: the pool reports
    that file with this reason and goes on). Arming costs one pipe write per file.
    A file already stopped this way in the current CLI run (:func:`stuck_reason`) fails
    at once.

    >>> with file_timeout(30, "model.keras"):
    ...     pass
    """
    try:
        with _file_timeout(seconds, path, hard):
            yield
    finally:
        memory_recover()


@contextlib.contextmanager
def _file_timeout(seconds: float | None, path: object, hard: bool) -> Iterator[None]:
    if not seconds or seconds <= 0:
        yield
        return
    stuck = stuck_reason(path)
    if stuck is not None:
        raise FileTimeoutError(path, stuck)
    if not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.getsignal(signal.SIGALRM)
    if outer_handler is None:  # installed from C: cannot be restored, fall back to default
        outer_handler = signal.SIG_DFL
    if outer_left and outer_left < seconds:
        # the outer deadline comes first: let the outer handler fire, as it would have
        yield
        return
    start = time.monotonic()
    fired = []
    saved = (_DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds)

    def _on_alarm(signum, frame):
        if not fired:
            fired.append(True)
            raise FileTimeoutError(path, f"timed out after {seconds:g} s (--timeout)")

    signal.signal(signal.SIGALRM, _on_alarm)
    _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = start + seconds, path, seconds
    hard_saved = _CH.armed
    if hard:
        _arm((start + seconds + HARD_GRACE, float(seconds), str(path)))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if hard:
                _arm(hard_saved)
        finally:
            _DEADLINE.at, _DEADLINE.path, _DEADLINE.seconds = saved
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_left:
                left = outer_left - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
