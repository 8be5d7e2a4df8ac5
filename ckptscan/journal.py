"""Never lose data: the exclusive lock, the write-ahead journal and its recovery,
atomic replacement, and the fault-injection hook the crash tests use.

Protocol for an in-place patch of checkpoint ``P`` (a file, a folder or a sharded
index):

1. take ``flock`` on ``.<P>.ckptscan-lock`` (one patcher per checkpoint);
2. recover any journal left by an interrupted run (see below);
3. write ``P.ckptscan-journal`` — every region to be overwritten with its original
   and its new bytes, CRC-32 fields included — to a temporary name, ``fsync``,
   ``rename`` into place, ``fsync`` the folder: the journal exists only when complete;
4. ``pwrite`` the new bytes, ``fsync`` every file written;
5. re-read and verify; on a mismatch roll back from the journal;
6. unlink the journal, ``fsync`` the folder, drop the lock.

Recovery is a write, so only writers run it: ``ckptscan fix`` (before it patches) and
``ckptscan recover P``; readers (``scan``, ``inspect``, ``diff``) never write, and
``scan`` reports a pending journal as finding JRN001. It rolls every journaled region back
to its original bytes, refusing if a byte is neither the original nor the new value
(someone else changed the file), so a crash at any moment leaves ``P`` either exactly
original or — when the crash came after step 6 — exactly fully patched. Full
rewrites (compressed members, chunked datasets, ``--output``) go through a temporary
file and ``os.replace``, which is atomic; stale temporaries of dead processes are
removed during recovery.
"""

from __future__ import annotations

import base64
import errno
import glob
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass

from .errors import MalformedArchiveError, PatchRefusedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: reading works, patching refuses
    fcntl = None

JOURNAL_SUFFIX = ".ckptscan-journal"
JOURNAL_VERSION = 1
#: Seconds to wait for another ckptscan process to release a checkpoint.
LOCK_TIMEOUT = 60.0
#: Environment variable: seconds to pause at each write step (crash tests only).
FAULT_ENV = "CKPTSCAN_FAULT_PAUSE"


def unit_path(path: str | os.PathLike) -> str:
    """Normalised absolute path of a checkpoint (no trailing separator)."""
    return os.path.abspath(os.fspath(path)).rstrip(os.sep) or os.sep


def journal_path(path: str | os.PathLike) -> str:
    """``<checkpoint>.ckptscan-journal``."""
    return unit_path(path) + JOURNAL_SUFFIX


def lock_path(path: str | os.PathLike) -> str:
    """``<folder>/.<name>.ckptscan-lock``."""
    p = unit_path(path)
    return os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.ckptscan-lock")


def temp_path(target: str, unique: bool = False) -> str:
    """A hidden temporary name next to ``target``.

    Fixed (``.<name>.ckptscan.tmp``) for writes made under the checkpoint's lock, so
    recovery finds a dead run's leftovers with a ``stat``; ``unique`` adds the pid
    for files written without the lock (manifests, ``--output`` staging).
    """
    d, b = os.path.split(os.path.abspath(target))
    if unique:
        return os.path.join(d, f".{b}.ckptscan-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    return os.path.join(d, f".{b}.ckptscan.tmp")


def journal_temp(path: str | os.PathLike) -> str:
    """Where the journal is written before it is renamed into place."""
    return temp_path(journal_path(path))


def _fixed_temps(path: str) -> list[str]:
    p = unit_path(path)
    out = [journal_temp(p), temp_path(p), temp_path(p + ".member"), temp_path(p + ".bak")]
    if os.path.isdir(p):
        out.append(temp_path(os.path.join(p, "model.weights.h5")))
    elif p.endswith(".json"):
        out += glob.glob(os.path.join(glob.escape(os.path.dirname(p)), ".*.ckptscan.tmp"))
    return out


# --- fault injection -----------------------------------------------------------------

def fault_point(step: str) -> None:
    """Announce ``step`` on stderr and pause, when ``CKPTSCAN_FAULT_PAUSE`` is set."""
    pause = os.environ.get(FAULT_ENV)
    if not pause:
        return
    sys.stderr.write(f"ckptscan-fault-point: {step}\n")
    sys.stderr.flush()
    time.sleep(float(pause))


def faults_enabled() -> bool:
    """True under the crash tests (writes are split so kills land mid-region)."""
    return bool(os.environ.get(FAULT_ENV))


# --- durable file operations -----------------------------------------------------------

def fsync_dir(path: str) -> None:
    """fsync a folder so a rename/unlink in it is durable."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def copy_durable(src: str, dst: str) -> None:
    """Copy ``src`` to the (new) path ``dst``, contents and mode, and fsync it."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 8 << 20)
        fo.flush()
        os.fsync(fo.fileno())
    shutil.copymode(src, dst)


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file and ``os.replace``."""
    tmp = temp_path(dst)
    try:
        copy_durable(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


# --- lock ------------------------------------------------------------------------------

#: Checkpoints whose lock this process holds (their journal is ours, not a crash's).
_HELD: set[str] = set()


@dataclass
class Lock:
    """An exclusive ``flock`` on a checkpoint's lock file."""

    fd: int
    path: str
    unit: str = ""

    def release(self) -> None:
        """Unlink the lock file, then drop the lock (safe against a waiting process)."""
        if self.fd < 0:
            return
        _HELD.discard(self.unit)
        _unlink_quiet(self.path)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(path: str, timeout: float = LOCK_TIMEOUT) -> Lock:
    """Take the exclusive lock of checkpoint ``path``, waiting up to ``timeout`` seconds."""
    if fcntl is None:  # pragma: no cover
        raise PatchRefusedError(path, "no flock on this platform; ckptscan fix needs POSIX file locks")
    lp = lock_path(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PatchRefusedError(path, f"cannot create lock file {lp} ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PatchRefusedError(path, f"cannot lock {lp} ({exc.strerror or exc})") from exc
            if time.monotonic() >= deadline:
                raise PatchRefusedError(path, "another ckptscan process is patching this checkpoint (lock held)") from exc
            time.sleep(0.05)
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lp))
        except FileNotFoundError:
            same = False
        if same:
            _HELD.add(unit_path(path))
            return Lock(fd, lp, unit_path(path))
        os.close(fd)  # the previous holder unlinked it between our open and flock


def remove_stale_lock(path: str) -> bool:
    """Unlink the lock file of ``path`` if no process holds it (its holder was killed).

    The CLI supervisor calls this after stopping a ``fix`` stuck in the HDF5 library
    while reading (never while writing: ``--timeout`` does not cover writes), so that
    run leaves nothing behind. True when a lock file was removed.
    """
    if fcntl is None:  # pragma: no cover
        return False
    lp = lock_path(path)
    try:
        fd = os.open(lp, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lp)):
            os.unlink(lp)
            return True
    except OSError:  # held by a live process, or already gone
        pass
    finally:
        os.close(fd)
    return False


# --- journal ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """Bytes to overwrite: ``old`` at ``offset`` of ``file`` becomes ``new``."""

    file: str
    offset: int
    old: bytes
    new: bytes


def _regions_doc(regions: list[Region]) -> list[dict]:
    return [{"file": r.file, "offset": r.offset,
             "old": base64.b64encode(r.old).decode("ascii"),
             "new": base64.b64encode(r.new).decode("ascii")} for r in regions]


def write_journal(path: str, regions: list[Region]) -> str:
    """Durably write the journal of ``regions`` for checkpoint ``path``; return its path."""
    jp = journal_path(path)
    import hashlib

    body = _regions_doc(regions)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    doc = {"ckptscan_journal": JOURNAL_VERSION, "checkpoint": unit_path(path), "pid": os.getpid(),
           "created": time.time(), "regions": body, "sha256": digest}
    tmp = journal_temp(path)
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fault_point("journal-written")
    os.rename(tmp, jp)
    fsync_dir(os.path.dirname(jp))
    fault_point("journal-committed")
    return jp


def read_journal(path: str) -> list[Region]:
    """The regions of the journal of checkpoint ``path`` (refusing a damaged journal)."""
    import hashlib

    jp = journal_path(path)
    try:
        with open(jp) as fh:
            doc = json.load(fh)
        body = doc["regions"]
        ok = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() == doc["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MalformedArchiveError(path, f"unreadable ckptscan journal {jp} ({exc}); inspect it by hand") from exc
    if not ok:
        raise MalformedArchiveError(path, f"ckptscan journal {jp} fails its checksum; inspect it by hand")
    return [Region(r["file"], int(r["offset"]), base64.b64decode(r["old"]), base64.b64decode(r["new"]))
            for r in body]


def end_journal(path: str) -> None:
    """Remove the journal (the patch is complete, or rolled back), durably."""
    jp = journal_path(path)
    fault_point("journal-unlink")
    _unlink_quiet(jp)
    fsync_dir(os.path.dirname(jp))


def roll_back(path: str, regions: list[Region]) -> int:
    """Restore the original bytes of every region; return how many were restored."""
    fds: dict[str, int] = {}
    restored = 0
    try:
        for r in regions:
            if r.file not in fds:
                fds[r.file] = os.open(r.file, os.O_RDWR)
            fd = fds[r.file]
            cur = os.pread(fd, len(r.old), r.offset)
            if cur == r.old:
                continue
            if len(cur) != len(r.old) or any(c != o and c != n for c, o, n in zip(cur, r.old, r.new)):
                raise MalformedArchiveError(
                    path, f"{r.file} changed at offset {r.offset} since the interrupted ckptscan fix; not rolled back")
            os.pwrite(fd, r.old, r.offset)
            restored += 1
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    return restored


def recover_locked(path: str) -> str | None:
    """With the lock held: roll back an interrupted fix and clean stale temporaries.

    Returns a note when something was recovered, else None.
    """
    note = None
    removed = _clean_temps(path)
    jp = journal_path(path)
    if os.path.exists(jp):
        regions = read_journal(path)
        n = roll_back(path, regions)
        end_journal(path)
        note = f"recovered an interrupted ckptscan fix: rolled back {n} of {len(regions)} regions"
    elif removed:
        note = f"removed {removed} temporary file(s) of an interrupted ckptscan fix"
    return note


def _clean_temps(path: str) -> int:
    """Remove what a dead run left: fixed-name temporaries, and pid-named ones of dead pids."""
    p = unit_path(path)
    removed = 0
    for tmp in _fixed_temps(p):
        if os.path.lexists(tmp):
            _unlink_quiet(tmp)
            removed += 1
    pats = [os.path.join(os.path.dirname(p), f".{glob.escape(os.path.basename(p))}.ckptscan-*.tmp")]
    if os.path.isdir(p):
        pats.append(os.path.join(glob.escape(p), ".*.ckptscan-*.tmp"))
    for pat in pats:
        for tmp in glob.glob(pat):
            pid = _tmp_pid(tmp)
            if pid is not None and not _pid_alive(pid):
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    _unlink_quiet(tmp)
                removed += 1
    return removed


def _tmp_pid(tmp: str) -> int | None:
    base = os.path.basename(tmp)
    try:
        return int(base.rsplit(".ckptscan-", 1)[1].split("-", 1)[0])
    except (ValueError, IndexError):
        return None


def needs_recovery(path: str | os.PathLike) -> bool:
    """True when an interrupted fix left a journal for checkpoint ``path``.

    False while this process itself holds the checkpoint's lock (a fix in progress).
    """
    if unit_path(path) in _HELD:
        return False
    return os.path.exists(journal_path(path)) or any(os.path.lexists(t) for t in _fixed_temps(path))


def recover(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT) -> str | None:
    """Take the lock and recover checkpoint ``path`` (see :func:`recover_locked`)."""
    with acquire_lock(unit_path(path), timeout) as _:
        return recover_locked(unit_path(path))
