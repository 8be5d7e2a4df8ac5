"""Bulk scans: many files on a process pool or a dask cluster, JSON Lines, content-hash cache.

Behind ``ckptscan scan --jobs N``, ``--executor dask://HOST:PORT``, ``--format jsonl``
and ``--cache DIR``. The per-file work is :func:`ckptscan.scan.scan_file`, run by
:func:`ckptscan.executor.run_many`; the report lists the files in discovery order
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
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

from . import __version__
from .report import FileResult, Report

#: Bumped when the cache key or entry layout changes.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ScanJob:
    """One file to scan (plain data, picklable for worker processes)."""

    path: str
    options: object
    """A :class:`ckptscan.scan.ScanOptions`."""
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
    if path.endswith(".json"):
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read(64 << 20))
            names = []
            for v in (doc.get("weight_map") or {}).values():
                names += [v] if isinstance(v, str) else [n for n in v if isinstance(n, str)] if isinstance(v, list) else []
            base = os.path.dirname(path)
            files += [os.path.join(base, n) for n in dict.fromkeys(names) if os.path.basename(n) == n]
        except (OSError, ValueError, AttributeError, TypeError):
            pass
    return files


def _remote_fingerprint(uri: str) -> str | None:
    try:
        from .remote import filesystem

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
    from .jsonl import file_result_from_dict

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
    from .jsonl import file_result_to_dict

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
def scan_job(job: ScanJob) -> JobResult:
    """Scan one file, through the cache when one is given (runs in worker processes)."""
    from .scan import scan_file

    key = None
    if job.cache_dir:
        key = cache_key(job.path, job.options)
        if key is not None:
            hit = cache_get(job.cache_dir, key, job.path)
            if hit is not None:
                return JobResult(hit, cached=True)
    result = scan_file(job.path, job.options)
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


def run_scan(
    cands: Sequence, options: object, jobs: int = 1, executor: str | None = None, cache_dir: str | None = None,
    on_result: Callable[[FileResult], None] | None = None, progress: Callable[..., None] | None = None,
    stats: BulkStats | None = None,
) -> Report:
    """Scan candidates (from :func:`ckptscan.scan.discover`) with :func:`run_many`.

    ``on_result`` is called with each :class:`FileResult` as soon as it exists
    (skipped candidates first); the returned report is in candidate order.
    """
    from .executor import run_many

    stats = stats if stats is not None else BulkStats()
    slots: list[FileResult | None] = [None] * len(cands)
    todo: list[tuple[int, ScanJob]] = []
    for i, c in enumerate(cands):
        if c.skip_reason is not None:
            slots[i] = FileResult(path=c.path, status="skipped", reason=c.skip_reason)
            if on_result:
                on_result(slots[i])
        else:
            todo.append((i, ScanJob(c.path, options, cache_dir)))
    done = 0
    for out in run_many(scan_job, [j for _, j in todo], jobs=jobs, executor=executor):
        slot, job = todo[out.index]
        if out.ok:
            fr = out.value.result
            stats.cache_hits += int(out.value.cached)
        else:  # a crash in the worker (or a bug): this file's error, the run goes on
            fr = FileResult(path=job.path, status="error", reason=f"internal error: {out.error}")
        slots[slot] = fr
        done += 1
        stats.files += 1
        if progress:
            progress("file", index=done, total=len(todo), path=fr.path)
        if on_result:
            on_result(fr)
    return Report(files=tuple(slots))


def run_cli_scan(cands, options, fmt: str, output: str | None, fail_on: str, jobs: int,
                 executor: str | None, cache_dir: str | None, progress=None) -> int:
    """``ckptscan scan`` for bulk runs: stream JSON Lines or render at the end; returns the exit code."""
    from .errors import CkptscanError
    from .jsonl import render_jsonl

    out = None
    if fmt == "jsonl":
        try:
            out = open(output, "w", encoding="utf-8") if output else sys.stdout
        except OSError as exc:
            sys.stderr.write(f"ckptscan: error: {output}: cannot write report ({exc.strerror or exc})\n")
            return 4

    def emit(fr: FileResult) -> None:
        if fr.status == "error":
            sys.stderr.write(f"ckptscan: error: {fr.path}: {fr.reason}\n")
        if out is not None:
            out.write(render_jsonl(fr))
            out.flush()

    stats = BulkStats()
    try:
        report = run_scan(cands, options, jobs=jobs, executor=executor, cache_dir=cache_dir,
                          on_result=emit, progress=progress, stats=stats)
    except CkptscanError as exc:  # the executor itself is unusable
        sys.stderr.write(f"ckptscan: error: {exc}\n")
        return 4
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    if fmt != "jsonl":
        from .render import OutputFormat

        text = OutputFormat(fmt).renderer()(report, fail_on=fail_on)
        if output:
            try:
                with open(output, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                sys.stderr.write(f"ckptscan: error: {output}: cannot write report ({exc.strerror or exc})\n")
                return 4
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    code = report.exit_code(fail_on)
    verdict = report.verdict()
    if code == 3:
        verdict += " (nothing scannable found)"
    if cache_dir:
        sys.stderr.write(f"ckptscan: cache: {stats.cache_hits} of {stats.files} files unchanged (not read again)\n")
    sys.stderr.write(verdict + "\n")
    return code
