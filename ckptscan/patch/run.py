"""``ckptscan.fix`` over many paths: one :class:`~.api.FixRequest` for every path.

Local checkpoints (``file://`` URIs included) are fixed by :func:`~.api.fix_file`, on
``jobs`` processes when there are several; a remote object only into the request's
output (:mod:`.remote`), never in place; the manifest lists them in the order given.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from .. import journal
from .api import FixRequest, build_request, fix_file
from .model import FileFix, FixManifest
from .remote import fix_remote_request


def fix(paths, *, jobs: int = 1, manifest: str | None = None, **options) -> FixManifest:
    """Repair checkpoints; returns the :class:`FixManifest` (one :class:`FileFix` per file).

    ``paths``: a path, a URI or a list of files/folders/URIs. ``strategy``: ``auto``,
    ``reset``, ``median``, ``clamp``, ``from`` (needs ``ref``) or ``value`` (needs
    ``value``); ``rule_strategies`` maps rule IDs to strategies. Only bad elements change
    unless ``whole_tensor``. ``output`` writes a patched copy (one input only; the only
    way to repair a remote object). ``backup``: True for ``<file>.bak`` or a path.
    ``verify``: ``full`` (every tensor re-hashed, zip CRCs checked) or ``targets`` (only
    the changed tensors re-read). ``timeout``: seconds allowed for reading and planning
    each file (never applied to a write). ``jobs``: files patched in parallel.
    ``manifest``: write the JSON manifest there. The other keywords are those of
    :func:`build_request`.
    """
    return fix_request(paths, build_request(**options), jobs=jobs, manifest=manifest)


def fix_request(paths, req: FixRequest, *, jobs: int = 1, manifest: str | None = None) -> FixManifest:
    """Repair ``paths`` (files, folders, ``file://`` and remote URIs) as ``req`` says.

    Local checkpoints (``file://`` URIs included) are fixed by :func:`fix_file`, on
    ``jobs`` processes (``0``: one per CPU, as for scan) when there are several; a remote object only into ``req.output``
    (:func:`ckptscan.patch.remote.fix_remote`), never in place.
    """
    from ..discover import expand
    from ..formats.remote import is_uri

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [_local(p) if is_uri(p) and str(p).startswith("file://") else p for p in expand(paths)]
    if req.output is not None and len(files) != 1:
        raise ValueError("output needs exactly one input checkpoint")
    if req.ref is not None:
        req = replace(req, ref=_local(req.ref))
    remote = {i for i, f in enumerate(files) if is_uri(f)}
    local = [(i, f) for i, f in enumerate(files) if i not in remote]
    results: list[FileFix | None] = [None] * len(files)
    if jobs == 0:  # as for scan: one per CPU
        jobs = os.cpu_count() or 1
    if jobs > 1 and len(local) > 1:
        # the scan's pool: a worker that dies (a file stuck in libhdf5 past --timeout, a
        # crash) fails only its own file, and the others are still patched
        from ..runtime.executor import run_many

        outcomes = run_many(_fix_item, [(f, req) for _, f in local], jobs=jobs, ordered=True)
        for (i, _), o in zip(local, outcomes):
            results[i] = o.value if o.ok else FileFix(o.item[0], "failed", reason=_died(o.error))
    else:
        for i, f in local:
            results[i] = fix_file(f, req)
    if remote:
        for i in sorted(remote):
            results[i] = fix_remote_request(files[i], req)
    doc = FixManifest(tuple(results), dry_run=req.dry_run)
    if manifest is not None:
        write_manifest(doc, manifest)
    return doc


def _local(p) -> str:
    """A ``file://`` URI's path (other paths unchanged)."""
    s = os.fspath(p)
    return s[len("file://"):] if s.startswith("file://") else s


def _fix_item(item: tuple[str, FixRequest]) -> FileFix:
    """:func:`fix_file` on one ``(path, request)`` pair (module level: picklable)."""
    return fix_file(*item)


def _died(error: str | None) -> str:
    """The reason of a file whose worker never returned (``WorkerDied: …`` → ``…``)."""
    return (error or "worker process died").split(": ", 1)[-1]


def write_manifest(doc: FixManifest, path: str) -> None:
    """Write the manifest JSON atomically."""
    tmp = journal.temp_path(path, unique=True)
    with open(tmp, "w") as fh:
        json.dump(doc.to_dict(), fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
