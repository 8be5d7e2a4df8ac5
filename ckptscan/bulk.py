"""Running a scan over many files: in process, on a process pool or a dask cluster; content-hash cache.

:func:`scan` is the Python API's ``ckptscan.scan``: discover, then scan in order.
:func:`run_scan` is behind every ``ckptscan scan``: ``--jobs 1`` (the default) scans in
this process, ``--jobs N`` / ``--executor dask://HOST:PORT`` run the per-file work
(:func:`ckptscan.engine.scan_file`, through ``--cache DIR`` when given) with
:func:`ckptscan.runtime.executor.run_many`; the report lists the files in discovery order
whatever order they finished in, so ``--jobs 2`` prints what ``--jobs 1`` prints.
With ``--format jsonl`` each file's record is written (and flushed) the moment it is
ready. A dask cluster's workers must see the same paths (a shared filesystem) or be
given URIs (``s3://…``).

Cache (``--cache DIR``): one JSON file per entry, named by the SHA-256 of the file's
bytes (every shard of a sharded set, every file of a ``.keras`` folder; for a remote
URI the backend's ETag / size / modification time), its path, the ckptscan version
and the scan options. A hit returns the stored result without reading the
checkpoint's tensors again; only ``scanned`` results are stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from ._version import __version__
from .report import FileResult, Report

if TYPE_CHECKING:
    from .rules import Thresholds
    from .settings import Settings

#: Bumped when the cache key or entry layout changes.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ScanJob:
    """One file to scan (plain data, picklable for worker processes)."""

    path: str
    options: object
    """A :class:`ckptscan.engine.ScanOptions`."""
    cache_dir: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A :class:`FileResult` and whether it came from the cache."""

    result: FileResult
    cached: bool = False


# --- cache -----------------------------------------------------------------------------------
def _hash_file(h, path: str) -> None:
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)


def _content_files(path: str) -> list[str]:
    """The local files whose bytes make up the checkpoint at ``path``."""
    if os.path.isdir(path):
        return sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
    files = [path]
    if path.endswith(".json"):  # a sharded index: its shards too
        from .discover import shards_of

        files += shards_of(path)
    elif path.endswith(".index"):  # a TensorFlow index: its data shards hold the values
        import glob

        files += sorted(glob.glob(glob.escape(path[: -len(".index")]) + ".data-[0-9]*-of-[0-9]*"))
    return files


def _remote_fingerprint(uri: str) -> str | None:
    try:
        from .formats.remote import filesystem

        fs, path = filesystem(uri)
        info = fs.info(path)
    except Exception:  # noqa: BLE001 - no fingerprint means no caching, never a failure
        return None
    tag = info.get("ETag") or info.get("etag") or info.get("checksum")
    stamp = info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    if tag is None and stamp is None:
        return None
    return json.dumps([str(tag), str(stamp), info.get("size")])


def cache_key(path: str, options: object) -> str | None:
    """The cache key of scanning ``path`` with ``options``; None when it cannot be cached."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"ckptscan {__version__} cache {CACHE_FORMAT}\0{path}\0".encode())
    h.update(repr(_options_fingerprint(options)).encode())
    if "://" in path and not path.startswith("file://"):
        fp = _remote_fingerprint(path)
        if fp is None:
            return None
        h.update(fp.encode())
        return h.hexdigest()
    local = path[len("file://"):] if path.startswith("file://") else path
    try:
        for f in _content_files(local):
            h.update(f"\0{os.path.relpath(f, os.path.dirname(local) or '.')}\0".encode())
            _hash_file(h, f)
    except OSError:
        return None
    cfg = getattr(options, "config", None)
    if cfg:
        try:
            _hash_file(h, cfg)
        except OSError:
            return None
    return h.hexdigest()


def _options_fingerprint(options: object) -> object:
    if dataclasses.is_dataclass(options):
        d = dataclasses.asdict(options)
        d.pop("timeout", None)  # a time limit does not change a completed result
        if isinstance(d.get("settings"), dict):
            d["settings"].pop("source", None)
        return sorted((k, repr(v)) for k, v in d.items())
    return repr(options)


def cache_get(cache_dir: str, key: str, path: str) -> FileResult | None:
    """The cached result for ``key`` (with ``path`` as given now), or None."""
    from .render.jsonl import file_result_from_dict

    entry = os.path.join(cache_dir, key[:2], key + ".json")
    try:
        with open(entry, encoding="utf-8") as fh:
            doc = json.load(fh)
        if doc.get("cache_format") != CACHE_FORMAT or doc.get("version") != __version__:
            return None
        return dataclasses.replace(file_result_from_dict(doc["result"]), path=path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cache_put(cache_dir: str, key: str, result: FileResult) -> None:
    """Store ``result`` under ``key`` atomically (a crash leaves no partial entry)."""
    from .render.jsonl import file_result_to_dict

    folder = os.path.join(cache_dir, key[:2])
    os.makedirs(folder, exist_ok=True)
    doc = {"cache_format": CACHE_FORMAT, "version": __version__, "result": file_result_to_dict(result)}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, default=str)
        os.replace(tmp, os.path.join(folder, key + ".json"))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- the per-file work -----------------------------------------------------------------------
def scan_job(job: ScanJob, progress: Callable[..., None] | None = None) -> JobResult:
    """Scan one file, through the cache when one is given (runs in worker processes).

    ``progress`` receives :func:`ckptscan.engine.scan_file`'s byte events (in process only).
    """
    from .engine import scan_file
    from .errors import CkptscanError
    from .filesettings import options_for

    try:
        options = options_for(job.path, job.options)  # the settings nearest to this file
    except CkptscanError as exc:
        return JobResult(FileResult(path=job.path, status="error", reason=exc.reason))
    key = None
    if job.cache_dir:
        key = cache_key(job.path, options)
        if key is not None:
            hit = cache_get(job.cache_dir, key, job.path)
            if hit is not None:
                return JobResult(hit, cached=True)
    result = scan_file(job.path, options, progress)
    if key is not None and result.status == "scanned":
        try:
            cache_put(job.cache_dir, key, result)
        except OSError:
            pass  # a read-only or full cache never fails the scan
    return JobResult(result)


@dataclass
class BulkStats:
    """What a bulk run did."""

    files: int = 0
    cache_hits: int = 0


def _in_process(jobs: int, executor: object) -> bool:
    return jobs == 1 and executor in (None, "", "local", "process")


def warm_up() -> None:
    """Pool workers: import what scanning the first file imports, while the parent still discovers."""
    from .formats import layouts  # noqa: F401 - imported by open_checkpoint on first use


def run_scan(
    cands: Sequence | Callable[[], Sequence], options: object, jobs: int = 1, executor: str | None = None,
    cache_dir: str | None = None, on_result: Callable[[FileResult], None] | None = None,
    progress: Callable[..., None] | None = None, stats: BulkStats | None = None,
) -> Report:
    """Scan candidates (from :func:`ckptscan.discover.discover`): in this process or with :func:`run_many`.

    ``cands`` may be a function returning them: a local pool's workers then start (and
    warm up) while it runs, e.g. ``lambda: discover(paths)``. ``jobs == 1`` without an
    executor scans in this process, in order, with no pool (``progress`` then gets a
    ``file`` event before each file and its byte events); otherwise ``progress`` gets a
    ``file`` event as each file finishes. ``on_result`` is called with each
    :class:`FileResult` as soon as it exists (skipped candidates first); the returned
    report is in candidate order.
    """
    from .runtime.executor import call_item, run_many

    stats = stats if stats is not None else BulkStats()
    slots: list[FileResult | None] = []
    todo: list[tuple[int, ScanJob]] = []

    def to_scan() -> Iterator[ScanJob]:
        for c in cands() if callable(cands) else cands:
            slots.append(None)
            if c.skip_reason is not None:
                slots[-1] = FileResult(path=c.path, status="skipped", reason=c.skip_reason)
                if on_result:
                    on_result(slots[-1])
            else:
                todo.append((len(slots) - 1, ScanJob(c.path, options, cache_dir)))
        for k, (_, job) in enumerate(todo):
            if progress and serial:
                progress("file", index=k + 1, total=len(todo), path=job.path)
            yield job

    serial = _in_process(jobs, executor)
    if serial:
        outcomes = (call_item(lambda j: scan_job(j, progress), k, job) for k, job in enumerate(to_scan()))
    else:
        outcomes = run_many(scan_job, to_scan(), jobs=jobs, executor=executor, warm_up=warm_up)
    done = 0
    for out in outcomes:
        slot, job = todo[out.index]
        if out.ok:
            fr = out.value.result
            stats.cache_hits += int(out.value.cached)
        else:  # a crash in the worker (or a bug): this file's error, the run goes on
            fr = FileResult(path=job.path, status="error", reason=f"internal error: {out.error}")
        slots[slot] = fr
        done += 1
        stats.files += 1
        if progress and not serial:
            progress("file", index=done, total=len(todo), path=fr.path)
        if on_result:
            on_result(fr)
    return Report(files=tuple(slots))


def scan(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    include_optimizer: bool | None = None,
    config: str | os.PathLike | None = None,
    settings: Settings | None = None,
    thresholds: Thresholds | None = None,
    timeout: float | None = None,
    progress: Callable[..., None] | None = None,
    strict: bool = False,
    all_checkpoints: bool = False,
) -> Report:
    """Scan files, directories and globs; returns a :class:`~ckptscan.report.Report`.

    ``select``/``ignore`` take rule ID prefixes (``BN``, ``BN002``) or names;
    ``include_optimizer`` (default True) also checks optimizer state (rule OPT001);
    ``config`` names the variables of bare ``.weights.h5`` files; ``settings`` (see
    :mod:`ckptscan.settings`) supplies defaults, per-file and per-layer ignores and
    thresholds; ``timeout`` limits the seconds spent per file; ``progress`` is called
    as ``progress("file", index=i, total=n, path=p)`` and ``progress("bytes", done=,
    total=)``. Unreadable files become results with ``status="error"``; ``strict`` makes a
    well-formed non-Keras HDF5/zip found in a folder or a glob one of them
    (:func:`ckptscan.discover.discover`); ``all_checkpoints`` scans every checkpoint a
    TensorFlow ``checkpoint`` state file lists, not only the latest.
    """
    from .discover import discover, mlflow_paths
    from .engine import make_options, scan_candidates
    from .mlflow_store import relabel

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    options = make_options(select=select, ignore=ignore, include_optimizer=include_optimizer, config=config,
                           settings=settings, thresholds=thresholds, timeout=timeout)
    with mlflow_paths(paths) as (paths, labels):  # models:/, runs:/ through MLFLOW_TRACKING_URI
        return relabel(scan_candidates(discover(paths, strict=strict, all_checkpoints=all_checkpoints), options, progress), labels)
