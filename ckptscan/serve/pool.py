"""The server's worker processes: each file is scanned in one of them, never in the server.

Why not :func:`ckptscan.runtime.executor.run_many`'s pool as is: it lives for one run (one CLI
invocation) and, when a worker dies, retries every file that was in flight in a fresh
pool to find the culprit. A server needs workers that stay warm between requests
(a warm request costs what the scan costs) and must know *which* request a dead worker
was serving, so that only that request fails. :class:`WorkerPool` is therefore built
from the same parts (:func:`ckptscan.bulk.scan_job` through
:func:`ckptscan.runtime.executor.call_item`, :func:`ckptscan.bulk.warm_up`, the worker start method
of :func:`ckptscan.runtime.executor.mp_context`, the ``--max-memory`` cap of
:func:`ckptscan.runtime.memory.apply_memory_cap`) with one process per slot, one file at a time:

* each worker applies the memory cap and scans under :func:`ckptscan.runtime.timeout.file_scope`
  (``--timeout``; its watchdog stops a file stuck in C code);
* the parent also watches each file: past ``timeout + hard grace + 5 s`` it kills the
  worker itself; a worker that dies (segfault, OOM kill, SIGKILL) fails the one file it
  held, ``worker process died (crash or out of memory)``, and is replaced;
* files wait in one FIFO queue; :attr:`queued` is its depth (``/metrics``).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from ..bulk import ScanJob, scan_job, warm_up
from ..runtime.executor import call_item, ignore_sigint, mp_context
from ..runtime.watchdog import hard_grace
from ..report import FileResult

#: Reason of a file whose worker died under it.
WORKER_DIED = "worker process died (crash or out of memory)"
#: Reason of a file still queued when the server shuts down.
CANCELLED = "cancelled: the server is shutting down"


def _worker_main(conn, max_memory: int | None) -> None:
    """A worker process: apply the memory cap, warm up, then scan one job per message."""
    import signal

    ignore_sigint()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from ..runtime.memory import apply_memory_cap

    try:  # None: CKPTSCAN_MAX_MEMORY (the CLI exports --max-memory) or the 2 GiB default
        apply_memory_cap(max_memory)
    except ValueError:
        pass
    try:
        warm_up()
    except Exception:  # noqa: BLE001 - a colder worker still scans
        pass
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tid, job = msg
        out = call_item(scan_job, 0, job)
        try:
            conn.send((tid, out))
        except (OSError, ValueError):
            return


@dataclass
class _Task:
    job: ScanJob
    future: Future
    timeout: float | None


class _Worker:
    """One worker process and the parent thread that feeds it."""

    def __init__(self, pool: WorkerPool, slot: int):
        self.pool, self.slot = pool, slot
        self.proc = None
        self.conn = None
        self.busy_since: float | None = None
        self.thread = threading.Thread(target=self._loop, name=f"ckptscan-worker-{slot}", daemon=True)

    def start(self) -> None:
        self._spawn()
        self.thread.start()

    def _spawn(self) -> None:
        ctx = mp_context()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self.pool.max_memory), daemon=True,
                           name=f"ckptscan-scan-{self.slot}")
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def _loop(self) -> None:
        tid = 0
        while True:
            task = self.pool._tasks.get()
            if task is None:
                break
            if not task.future.set_running_or_notify_cancel():
                continue
            tid += 1
            if self.proc is None or not self.proc.is_alive():
                self._kill()
                self._spawn()
            self.busy_since = time.monotonic()
            try:
                task.future.set_result(self._run(tid, task))
            except BaseException as exc:  # noqa: BLE001 - never lose a request's future
                if not task.future.done():
                    task.future.set_exception(exc)
            finally:
                self.busy_since = None
        self._stop()

    def _run(self, tid: int, task: _Task) -> FileResult:
        path = task.job.path
        start = time.monotonic()
        limit = None if not task.timeout else task.timeout + hard_grace() + 5.0
        try:
            self.conn.send((tid, task.job))
        except (OSError, ValueError):
            self._kill()
            self.pool._died += 1
            return FileResult(path=path, status="error", reason=WORKER_DIED, seconds=time.monotonic() - start)
        while True:
            try:
                ready = self.conn.poll(0.2)
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    got_tid, out = self.conn.recv()
                except (EOFError, OSError):
                    self._kill()
                    self.pool._died += 1
                    return FileResult(path=path, status="error", reason=WORKER_DIED, seconds=time.monotonic() - start)
                if got_tid != tid:  # pragma: no cover - one message in flight per worker
                    continue
                if out.ok:
                    return out.value.result
                return FileResult(path=path, status="error", reason=f"internal error: {out.error}",
                                  seconds=time.monotonic() - start)
            if not self.proc.is_alive():
                self._kill()
                self.pool._died += 1
                return FileResult(path=path, status="error", reason=WORKER_DIED, seconds=time.monotonic() - start)
            if limit is not None and time.monotonic() - start > limit:
                self._kill()
                return FileResult(path=path, status="error", seconds=time.monotonic() - start,
                                  reason=f"timed out after {task.timeout:g} s (--timeout); worker stopped")
            if self.pool._closing.is_set() and self.pool._cancel:
                self._kill()
                return FileResult(path=path, status="error", seconds=time.monotonic() - start,
                                  reason=CANCELLED)

    def _stop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        if self.proc is not None:
            self.proc.join(2)
        self._kill()


class WorkerPool:
    """``workers`` long-lived scan processes fed from one FIFO queue of files."""

    def __init__(self, workers: int = 2, max_memory: int | None = None):
        self.size = max(1, workers)
        self.max_memory = max_memory
        self._tasks: queue.Queue[_Task | None] = queue.Queue()
        self._closing = threading.Event()
        self._cancel = False
        self._died = 0
        self._workers = [_Worker(self, i) for i in range(self.size)]
        for w in self._workers:
            w.start()

    @property
    def queued(self) -> int:
        """Files waiting for a worker."""
        return self._tasks.qsize()

    @property
    def busy(self) -> int:
        """Workers scanning a file now."""
        return sum(1 for w in self._workers if w.busy_since is not None)

    @property
    def deaths(self) -> int:
        """Workers that died under a file since start."""
        return self._died

    def ready(self) -> bool:
        """Every worker thread runs and the pool is not closing."""
        return not self._closing.is_set() and all(w.thread.is_alive() for w in self._workers)

    def pids(self) -> list[int]:
        """Process ids of the live workers (benchmarks kill one)."""
        return [p for p in (w.pid() for w in self._workers) if p]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers scanning a file now."""
        return [p for p in (w.pid() for w in self._workers if w.busy_since is not None) if p]

    def submit(self, job: ScanJob, timeout: float | None) -> Future:
        """A future of the :class:`FileResult` of ``job``."""
        if self._closing.is_set():
            raise RuntimeError("the pool is closing")
        fut: Future = Future()
        self._tasks.put(_Task(job, fut, timeout))
        return fut

    def close(self, cancel: bool = False, wait: float = 30.0) -> None:
        """Stop taking files; ``cancel``: stop running scans now, else let them finish (up to ``wait`` s)."""
        self._closing.set()
        self._cancel = cancel
        while True:  # queued files are cancelled: their requests answer 503
            try:
                t = self._tasks.get_nowait()
            except queue.Empty:
                break
            if t is not None and t.future.set_running_or_notify_cancel():
                t.future.set_result(FileResult(path=t.job.path, status="error", reason=CANCELLED))
        for _ in self._workers:
            self._tasks.put(None)
        deadline = time.monotonic() + wait
        for w in self._workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        self._cancel = True
        for w in self._workers:
            w.thread.join(5)
            w._kill()


__all__ = ["CANCELLED", "WORKER_DIED", "WorkerPool"]
