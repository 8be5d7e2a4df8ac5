"""From allowed URIs to file results: expand (folders, globs, MLflow URIs), then scan in the pool.

Every path that expansion produces is checked again: a remote listing must stay under
an ``--allow`` prefix, and a local file must not resolve (symbolic links) outside every
allowed folder (:meth:`ckptscan.serve.allow.AllowList.local_escape`). A path that fails
is an ``error`` result for that file, never read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass

from ..bulk import ScanJob
from ..report import FileResult, Report
from .allow import NotAllowed


@dataclass(frozen=True)
class Target:
    """One file to scan (``path``), reported as ``label``; or a ready result (``result``)."""

    label: str
    path: str = ""
    result: FileResult | None = None
    key: str | None = None
    """Checksum for the verdict cache (hooks), or None."""


def expand_targets(server, uris: list[str]) -> tuple[list[Target], list[str]]:
    """The targets behind already-allowed URIs, and MLflow download folders to remove after."""
    from ..mlflow_store import is_mlflow_uri

    targets: list[Target] = []
    folders: list[str] = []
    for uri in uris:
        if is_mlflow_uri(uri):
            from ..discover import resolve_mlflow
            from ..errors import CkptscanError

            try:
                res, tmp = resolve_mlflow(uri)
            except CkptscanError as exc:
                targets.append(Target(uri, result=FileResult(path=uri, status="error", reason=exc.reason)))
                continue
            if tmp:
                folders.append(tmp)
            targets += [Target(r.label, r.path) for r in res]
        elif "://" not in uri:  # a local path (file:// made canonical)
            why = server.allow.local_escape(uri)
            if why is not None:
                targets.append(Target(uri, result=FileResult(path=uri, status="error", reason=why)))
                continue
            if os.path.isdir(uri):
                from ..discover import discover

                for c in discover([uri]):
                    if c.skip_reason is not None:
                        targets.append(Target(c.path, result=FileResult(path=c.path, status="skipped", reason=c.skip_reason)))
                        continue
                    why = server.allow.local_escape(c.path)
                    if why is not None:
                        targets.append(Target(c.path, result=FileResult(path=c.path, status="error", reason=why)))
                    else:
                        targets.append(Target(c.path, c.path))
            else:
                targets.append(Target(uri, uri))
        else:
            from ..discover import expand_uris

            for u in expand_uris([uri]):
                try:
                    server.allow.check(u)
                except NotAllowed as exc:
                    targets.append(Target(u, result=FileResult(path=u, status="error", reason=str(exc))))
                    continue
                targets.append(Target(u, u))
    return targets, folders


async def run_targets(server, targets: list[Target], options, fail_on: str = "error", cache: bool = False) -> Report:
    """Scan the targets in the worker pool; the report in target order, labels as paths."""
    from .http import HttpError

    pool = server.pool
    futs: list = []
    for t in targets:
        if t.result is not None:
            futs.append(None)
            continue
        if cache and t.key and t.key in server.verdicts:
            futs.append(dataclasses.replace(server.verdicts[t.key], path=t.path))
            continue
        try:
            futs.append(asyncio.wrap_future(pool.submit(ScanJob(t.path, options), options.timeout)))
        except RuntimeError:
            for f in futs:
                if isinstance(f, asyncio.Future):
                    f.cancel()
            raise HttpError(503, "the server is shutting down") from None
    from .http import verdict_of

    files = []
    for t, f in zip(targets, futs):
        if t.result is not None:
            fr = t.result
            server.metrics.scan(verdict_of(fr, fail_on), 0.0, 0)
        elif isinstance(f, FileResult):  # from the verdict cache: nothing read
            fr = f
            server.metrics.scan(verdict_of(fr, fail_on), 0.0, 0, cached=True)
        else:
            fr = await f
            server.metrics.scan(verdict_of(fr, fail_on), fr.seconds, fr.bytes_scanned)
            if cache and t.key and fr.status == "scanned":
                server.verdicts[t.key] = fr
                while len(server.verdicts) > 10_000:
                    server.verdicts.popitem(last=False)
        if fr.path != t.label:
            fr = dataclasses.replace(fr, path=t.label, findings=tuple(dataclasses.replace(x, file=t.label) for x in fr.findings))
        files.append(fr)
    return Report(files=tuple(files))
