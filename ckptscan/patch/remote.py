"""Repairing a checkpoint behind a URI: into a new object or local file, never in place.

The object (and the reference, when it is a URI) is copied to a temporary folder,
:func:`ckptscan.patch.api.fix_file` writes a patched copy there, and only a complete,
verified copy is uploaded to the output (one PUT: object stores never show a partial
object) or moved to a local output. Only single-file checkpoints (``.keras``, ``.h5``); a
TensorFlow checkpoint behind a URI is refused (:data:`TF_REMOTE_REFUSAL`).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
import tempfile

from ..errors import CkptscanError
from ..formats.remote import RemoteError, backend_call, download, filesystem, is_uri
from .api import FixRequest, build_request, fix_file
from .model import FileFix, FixManifest


def fix_remote(uri: str, output: str, ref: str | None = None, storage_options: dict | None = None,
               **options) -> FixManifest:
    """Repair the object at ``uri`` into ``output`` (another URI or a local path); the
    keywords are those of :func:`ckptscan.fix`. Raises :class:`RemoteError` when
    ``output`` is the source itself."""
    req = build_request(output=output, ref=ref, **options)
    if output.rstrip("/") == uri.rstrip("/"):
        raise RemoteError(uri, "refusing to overwrite the source object; give a different --output")
    return FixManifest((_fix_remote(uri, req, storage_options),), dry_run=req.dry_run)


def fix_remote_request(uri: str, req: FixRequest, storage_options: dict | None = None) -> FileFix:
    """:func:`fix_remote` for one path of :func:`ckptscan.patch.run.fix_request`; never raises
    for a problem with the object (see ``status``)."""
    if req.output is None:
        return FileFix(uri, "failed", reason="a remote object is never patched in place: "
                                              "give --output (a local path or another URI)")
    if req.output.rstrip("/") == uri.rstrip("/"):
        return FileFix(uri, "failed", reason="refusing to overwrite the source object; give a different --output")
    try:
        return _fix_remote(uri, req, storage_options)
    except CkptscanError as exc:
        return FileFix(uri, "failed", reason=exc.reason)


#: Why a TensorFlow checkpoint behind a URI is not repaired (an index and its data shards
#: are several objects; a copy of each would have to be patched and uploaded together).
TF_REMOTE_REFUSAL = ("TensorFlow checkpoint behind a URI: fix works on a local copy only "
                     "(download the .index and its data shards, fix them, upload them)")


def _fix_remote(uri: str, req: FixRequest, storage_options: dict | None) -> FileFix:
    from ..formats.tfremote import names_tf_checkpoint

    if names_tf_checkpoint(uri, storage_options):
        return FileFix(uri, "refused", reason=TF_REMOTE_REFUSAL)
    output = req.output
    with tempfile.TemporaryDirectory(prefix="ckptscan-fix-") as tmp:
        name = posixpath.basename(filesystem(uri, storage_options)[1]) or "checkpoint"
        src = download(uri, os.path.join(tmp, name), storage_options)
        ref = req.ref
        if ref is not None and is_uri(ref) and not ref.startswith("file://"):
            ref = download(ref, os.path.join(tmp, "ref-" + posixpath.basename(ref)), storage_options)
        patched = os.path.join(tmp, "patched-" + name)
        ff = fix_file(src, dataclasses.replace(req, output=patched, ref=ref, backup=None))
        if ff.status == "fixed" and os.path.exists(patched):
            if is_uri(output) and not output.startswith("file://"):
                ofs, opath = filesystem(output, storage_options)
                backend_call(output, ofs.put_file, patched, opath)
            else:
                shutil.move(patched, output[len("file://"):] if output.startswith("file://") else output)
        return dataclasses.replace(ff, path=uri, output=output if ff.status == "fixed" else "")
