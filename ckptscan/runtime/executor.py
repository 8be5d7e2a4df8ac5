"""Run one function over many items: in process, on a local process pool, or on dask.

:func:`run_many` is the per-file work runner behind ``scan --jobs N`` and
``--executor dask://HOST:PORT``. Every item produces exactly one :class:`Outcome`;
an exception raised by the function for one item is that item's outcome (``error``
set), never an exception out of the loop, so a bulk run reports it and goes on.
Results are yielded as they finish (``ordered=False``) or in input order.

Executors (``executor=``):

``None`` / ``"local"``    ``jobs == 1``: in this process; ``jobs > 1``: a process pool
``"dask://HOST:PORT"``    a running ``dask.distributed`` scheduler (``pip install 'ckptscan[dask]'``)
a ``concurrent.futures.Executor`` or ``distributed.Client`` instance: used as is

The function and the items must be picklable for anything but ``jobs == 1``
(module-level functions, plain data).
"""

from __future__ import annotations

import collections
import os
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..errors import CkptscanError

if TYPE_CHECKING:
    from concurrent.futures import Executor

# multiprocessing and concurrent.futures are imported where a pool starts: a
# ``--jobs 1`` run in this process (the common case) does not pay for them.

DASK_HINT = "dask executor needs the optional extra: pip install 'ckptscan[dask]'"


class ExecutorError(CkptscanError):
    """An executor that cannot be used (bad address, missing extra, unreachable scheduler)."""


@dataclass(frozen=True)
class Outcome:
    """The result of one item: ``value`` when it worked, ``error`` when it raised."""

    index: int
    """Position of the item in the input."""
    item: Any
    value: Any = None
    error: str | None = None
    """``ExceptionType: message`` (one line) when the function raised."""
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        """True when the function returned."""
        return self.error is None


def call_item(fn: Callable[[Any], Any], index: int, item: Any) -> Outcome:
    """Run ``fn(item)`` and wrap the result or the exception (module level: picklable).

    Every executor runs items through it; so does the server's own worker pool
    (:mod:`ckptscan.serve.pool`), which is why it is public.
    """
    try:
        return Outcome(index, item, fn(item))
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return Outcome(index, item, None, f"{type(exc).__name__}: {msg}".rstrip(": "),
                       traceback.format_exc(limit=8))


def _call_batch(fn: Callable[[Any], Any], batch: list[tuple[int, Any]]) -> list[Outcome]:
    """:func:`call_item` over a few items in one task (less pickling and IPC per item)."""
    return [call_item(fn, i, item) for i, item in batch]


#: Environment variable that caps the threads of one TensorFlow-shard read
#: (``ckptscan.formats.tfbundle.screen.threads``); pool workers get 1 when the pool
#: alone fills the CPUs, so ``--jobs`` workers do not each start a second thread.
SCREEN_THREADS_ENV = "CKPTSCAN_SCREEN_THREADS"


def cpus() -> int:
    """CPUs this process may run on (its affinity on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _screen_threads(jobs: int) -> str:
    """The user's ``CKPTSCAN_SCREEN_THREADS`` (passed on: a forkserver's workers do not
    see this process's environment as it is now), else 1 when ``jobs`` workers with two
    threads each would outnumber the CPUs."""
    return os.environ.get(SCREEN_THREADS_ENV) or ("1" if 2 * jobs > cpus() else "2")


def _init_worker(warm_up: Callable[[], Any] | None, screen_threads: str | None = None) -> None:
    """Pool-worker initializer: :func:`ignore_sigint`, the screen's thread count, then
    ``warm_up`` (its failure only means a colder worker)."""
    ignore_sigint()
    if screen_threads is not None:
        os.environ[SCREEN_THREADS_ENV] = screen_threads
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - the items still run (and report their own errors)
            pass


def _noop() -> None:
    """Submitted first to start a pool's workers before any item exists."""


#: Items sent to a pool worker per task once a run is long. Small checkpoints take a
#: few milliseconds each, about what one round trip through the pool costs, so after
#: the first ``POOL_RAMP`` single-item tasks (quick first results, even load on short
#: runs) they travel in batches, which shrink again over the last items (the pool
#: reads ``4 * jobs * POOL_BATCH`` items ahead to see the end coming).
POOL_BATCH = 8
POOL_RAMP = 64


def ignore_sigint() -> None:
    """Pool-worker initializer: Ctrl-C is the parent's to handle (no worker tracebacks)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def mp_context():
    """How pool workers start (the multiprocessing context; also used by :mod:`ckptscan.serve.pool`).

    ``fork`` when this process runs a single thread (the CLI): workers then start with
    ckptscan already imported, which matters when each file takes milliseconds.
    ``forkserver`` otherwise, so workers never inherit the threads of a host process
    (jax, dask, a web server). ``CKPTSCAN_MP_START`` overrides.
    """
    import multiprocessing
    import sys
    import threading

    method = os.environ.get("CKPTSCAN_MP_START")
    if method:
        return multiprocessing.get_context(method)
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")  # pragma: no cover - non-POSIX


def run_many(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    jobs: int = 1,
    executor: str | Executor | Any | None = None,
    ordered: bool = False,
    warm_up: Callable[[], Any] | None = None,
) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per item of ``items``, as each finishes.

    ``ordered=True`` yields in input order (holding back results that finish early).
    ``jobs`` is the number of worker processes for the local pool (``0``: one per CPU).
    ``warm_up`` (local pool only; module level, no arguments) runs once per worker as
    soon as the pool starts, before ``items`` is first read: with a lazy ``items`` the
    workers import and prepare while this process still produces the items.
    """
    if jobs < 0:
        raise ValueError("jobs must be >= 0")
    if jobs == 0:
        jobs = os.cpu_count() or 1
    if isinstance(executor, str) and executor.startswith("dask://"):
        yield from _run_dask(fn, items, executor, ordered)
        return
    if isinstance(executor, str) and executor not in ("local", "process", ""):
        raise ExecutorError(str(executor), "unknown executor (use 'local' or dask://HOST:PORT)")
    if executor is not None and not isinstance(executor, str):
        if hasattr(executor, "scheduler_info") and hasattr(executor, "gather"):  # a distributed.Client
            yield from _run_dask_client(fn, items, executor, ordered)
        else:
            yield from _run_futures(fn, items, executor, ordered, window=64)
        return
    if jobs == 1:
        for i, item in enumerate(items):
            yield call_item(fn, i, item)
        return
    yield from _run_pool(fn, items, jobs, ordered, warm_up)


def _reorder(outcomes: Iterator[Outcome], ordered: bool) -> Iterator[Outcome]:
    if not ordered:
        yield from outcomes
        return
    pending: dict[int, Outcome] = {}
    nxt = 0
    for o in outcomes:
        pending[o.index] = o
        while nxt in pending:
            yield pending.pop(nxt)
            nxt += 1
    for k in sorted(pending):  # pragma: no cover - only if indices had gaps
        yield pending.pop(k)


def _run_futures(fn, items, pool: Executor, ordered: bool, window: int) -> Iterator[Outcome]:
    """Bounded submission (``window`` in flight) to any concurrent.futures executor."""
    from concurrent.futures import FIRST_COMPLETED, wait

    def gen() -> Iterator[Outcome]:
        it = enumerate(items)
        inflight: dict = {}
        for i, item in it:
            inflight[pool.submit(call_item, fn, i, item)] = (i, item)
            if len(inflight) >= window:
                break
        while inflight:
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                i, item = inflight.pop(fut)
                yield fut.result()
            for i, item in it:
                inflight[pool.submit(call_item, fn, i, item)] = (i, item)
                if len(inflight) >= window:
                    break

    yield from _reorder(gen(), ordered)


def _run_pool(fn, items, jobs: int, ordered: bool, warm_up: Callable[[], Any] | None = None) -> Iterator[Outcome]:
    """A local process pool; a worker that dies (segfault, OOM kill) fails only its item.

    When the pool breaks every in-flight item fails with it; those items are retried
    one at a time in a fresh pool, so only the one that really kills its worker is
    reported as ``worker process died``.
    """

    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    def gen() -> Iterator[Outcome]:
        window = jobs * 4
        queue = None
        submitted = [0]
        ahead: collections.deque = collections.deque()  # items read but not yet submitted
        ended = [False]

        def take(size: int) -> list[tuple[int, Any]]:
            """The next ``size`` items; smaller batches once the end is in sight (no worker idles long)."""
            while not ended[0] and len(ahead) < window * POOL_BATCH:
                nxt = next(queue, None)
                if nxt is None:
                    ended[0] = True
                else:
                    ahead.append(nxt)
            if ended[0]:
                size = min(size, max(1, -(-len(ahead) // (2 * jobs))))
            return [ahead.popleft() for _ in range(min(size, len(ahead)))]

        while True:
            suspects: list[tuple[int, Any]] = []
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp_context(), initializer=_init_worker,
                                     initargs=(warm_up, _screen_threads(jobs))) as pool:
                inflight: dict = {}
                if queue is None:  # the workers start (and warm up) before the first item is read
                    if warm_up is not None:  # one task per worker: forkserver/spawn pools start
                        for _ in range(jobs):  # workers on demand, fork pools all at once
                            pool.submit(_noop)
                    queue = enumerate(items)

                def fill():
                    while len(inflight) < window:
                        submitted[0] += 1
                        batch = take(1 if submitted[0] <= POOL_RAMP else POOL_BATCH)
                        if not batch:
                            return
                        inflight[pool.submit(_call_batch, fn, batch)] = batch

                fill()
                while inflight:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    broken = False
                    for fut in done:
                        batch = inflight.pop(fut)
                        try:
                            yield from fut.result()
                        except BrokenProcessPool:
                            suspects.extend(batch)
                            broken = True
                    if broken:
                        for batch in inflight.values():
                            suspects.extend(batch)
                        inflight.clear()
                        break
                    fill()
            if not suspects:
                break
            # isolate: each suspect alone in a one-worker pool
            for i, item in sorted(suspects, key=lambda x: x[0]):
                with ProcessPoolExecutor(max_workers=1, mp_context=mp_context(), initializer=ignore_sigint) as solo:
                    try:
                        yield solo.submit(call_item, fn, i, item).result()
                    except BrokenProcessPool:
                        yield Outcome(i, item, None, "WorkerDied: worker process died (crash or out of memory)")

    yield from _reorder(gen(), ordered)


def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError as exc:
        raise ExecutorError(address, DASK_HINT) from exc
    target = "tcp://" + address[len("dask://"):]
    try:
        return Client(target, timeout=os.environ.get("CKPTSCAN_DASK_TIMEOUT", "10s"), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(address, f"cannot reach the dask scheduler ({exc})") from exc


def _run_dask(fn, items, address: str, ordered: bool) -> Iterator[Outcome]:
    client = _dask_client(address)
    try:
        yield from _run_dask_client(fn, items, client, ordered)
    finally:
        client.close()


def _run_dask_client(fn, items, client, ordered: bool, window: int | None = None) -> Iterator[Outcome]:
    """Submit ``call_item`` per item to a dask.distributed client, bounded in flight."""
    from distributed import as_completed

    if window is None:
        try:
            nworkers = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
        except Exception:  # pragma: no cover - defensive
            nworkers = 4
        window = nworkers * 8

    def gen() -> Iterator[Outcome]:
        it = enumerate(items)
        meta: dict = {}
        ac = as_completed(loop=client.loop)
        for i, item in it:
            fut = client.submit(call_item, fn, i, item, pure=False)
            meta[fut.key] = (i, item)
            ac.add(fut)
            if len(meta) >= window:
                break
        for fut in ac:
            i, item = meta.pop(fut.key)
            try:
                yield fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died or the task was lost
                yield Outcome(i, item, None, f"{type(exc).__name__}: {exc}".splitlines()[0])
            finally:
                fut.release()
            nxt = next(it, None)
            if nxt is not None:
                f2 = client.submit(call_item, fn, *nxt, pure=False)
                meta[f2.key] = nxt
                ac.add(f2)

    yield from _reorder(gen(), ordered)
