"""``fix --output`` for TensorFlow checkpoints: a complete, patched, verified copy.

The source is only read. What is written at the output, by how the source was named:

=======================  ======================================================================
source                   output
=======================  ======================================================================
``ckpt.index``/``ckpt``  a prefix: ``OUT.index`` and every ``OUT.data-NNNNN-of-MMMMM`` (``-o
                         OUT.index`` names the same prefix; an existing folder gets the
                         source's base name inside it)
SavedModel folder        the whole folder (``saved_model.pb``, ``keras_metadata.pb``,
                         ``assets/`` …) with ``variables/`` patched
checkpoint folder        a folder holding the patched checkpoint (index and shards, same base
                         name) and, when the source had a ``checkpoint`` state file, a new one
                         naming it (the other checkpoints of the source folder are not copied)
=======================  ======================================================================

Everything is staged in a hidden folder next to the output, patched there (shard bytes
and the index's CRC32C, the same regions an in-place fix writes), verified by re-reading
the staged copy, then moved into place: a folder with one rename, a prefix shards first
and its ``.index`` last (a reader never sees an index without its shards). An existing
output is never replaced: several files cannot be swapped at once, and a folder is not
replaced by the HDF5 path either.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .. import journal
from ..errors import PatchRefusedError
from ..formats.tfbundle.bundle import shard_name

_OWN_FILES = shutil.ignore_patterns("*" + journal.JOURNAL_SUFFIX, ".*.ckptscan-lock", ".*.ckptscan.tmp", ".*.ckptscan-*.tmp")
#: The state file written into a copied checkpoint folder.
STATE_FILE = "checkpoint"


@dataclass(frozen=True)
class TFSource:
    """Where a TensorFlow checkpoint's files are, taken while it is open."""

    named: str
    """The path it was named by (``Checkpoint.path``)."""
    kind: str
    """``prefix``, ``folder`` (``dir/.index`` or a state-file folder) or ``savedmodel``."""
    prefix: str
    """Its bundle prefix (absolute)."""
    files: tuple[str, ...]
    """Its ``.index`` and every data shard present (absolute)."""
    state: bool = False
    """The folder has a ``checkpoint`` state file."""


def source_of(ckpt) -> TFSource:
    """The :class:`TFSource` of an open TensorFlow checkpoint."""
    from ..formats.tfstate import state_file

    named = os.path.abspath(ckpt.path)
    bp = ckpt.bundle.prefix  # may end in a separator: the empty basename of dir/.index
    prefix = os.path.join(os.path.abspath(os.path.dirname(bp) or "."), os.path.basename(bp))
    n = ckpt.bundle.header.num_shards
    shards = [shard_name(prefix, i, n) for i in range(n)]
    files = (prefix + ".index",) + tuple(s for s in shards if os.path.isfile(s))
    if os.path.isdir(named):
        kind = "savedmodel" if ckpt.format == "tf-savedmodel" else "folder"
        return TFSource(named, kind, prefix, files, state_file(named) is not None)
    return TFSource(named, "prefix", prefix, files)


def _base(prefix: str) -> str:
    return os.path.basename(prefix)  # "" for the empty basename (dir/.index)


def _exists(prefix: str) -> list[str]:
    d, b = os.path.split(prefix)
    try:
        names = os.listdir(d or ".")
    except OSError:
        return []
    return sorted(n for n in names if n == b + ".index" or n.startswith(b + ".data-"))


def write_tf_copy(src: TFSource, output: str, write, verify) -> tuple[str, list[str]]:
    """Write the patched copy of ``src`` at ``output``; returns (the name to reopen it by,
    its files). ``write(remap)`` patches the staged files (``remap``: source file → staged
    file); ``verify(name)`` re-reads the staged copy and raises if it is not the patch."""
    path = src.named
    out = journal.unit_path(output)
    if src.kind == "prefix":
        if os.path.isdir(out):  # -o some/folder: the source's name inside it
            out = os.path.join(out, _base(src.prefix))
        out_prefix = out[: -len(".index")] if out.endswith(".index") else out
        if os.path.abspath(out_prefix) == src.prefix:
            raise PatchRefusedError(path, "--output is the input itself; drop --output to patch in place")
        if not _base(out_prefix):
            raise PatchRefusedError(path, f"--output {output} names no checkpoint prefix")
        taken = _exists(out_prefix)
        if taken:
            raise PatchRefusedError(path, f"--output {out_prefix} exists ({', '.join(taken[:3])}); refusing to replace "
                                          "a TensorFlow checkpoint (its files cannot be replaced at once)")
        anchor = out_prefix
    else:
        if out == path or os.path.commonpath([out, path]) == path:
            raise PatchRefusedError(path, "--output is the input itself or inside it; choose another folder")
        if os.path.exists(out):
            raise PatchRefusedError(path, f"--output {out} exists; refusing to replace a folder")
        anchor = out
    parent = os.path.dirname(anchor)
    if not os.path.isdir(parent):
        raise PatchRefusedError(path, f"output folder {parent} does not exist")
    stage = journal.temp_path(anchor, unique=True)
    os.mkdir(stage)
    try:
        if src.kind == "savedmodel":
            unit = os.path.join(stage, "unit")
            shutil.copytree(path, unit, symlinks=True, ignore=_OWN_FILES)  # not our lock, journal or temp files
            remap = {f: os.path.join(unit, os.path.relpath(f, path)) for f in src.files}
            staged_name = unit
        else:
            d = os.path.join(stage, "unit") if src.kind == "folder" else stage
            os.makedirs(d, exist_ok=True)
            base = _base(src.prefix) if src.kind == "folder" else _base(out_prefix)
            remap = {f: os.path.join(d, base + f[len(src.prefix):]) for f in src.files}
            staged_name = d if src.kind == "folder" else os.path.join(d, base)
            if src.kind == "folder" and src.state and base:
                with open(os.path.join(d, STATE_FILE), "w", encoding="utf-8") as fh:
                    fh.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
        for f, to in remap.items():
            journal.copy_durable(f, to)
        write(remap)
        verify(staged_name)
        if src.kind == "prefix":
            staged = sorted(remap.values(), key=lambda f: f.endswith(".index"))  # the index last
            final = [out_prefix + f[len(os.path.join(stage, _base(out_prefix))):] for f in staged]
            taken = _exists(out_prefix)
            if taken:  # appeared while we worked
                raise PatchRefusedError(path, f"--output {out_prefix} appeared while writing ({taken[0]}); nothing replaced")
            for f, to in zip(staged, final):
                os.rename(f, to)
            files, name = final[::-1], (out_prefix + ".index" if out.endswith(".index") else out_prefix)
        else:
            if os.path.exists(out):
                raise PatchRefusedError(path, f"--output {out} exists; refusing to replace a folder")
            os.rename(staged_name, out)
            files = sorted(os.path.join(dp, n) for dp, _, ns in os.walk(out) for n in ns)
            name = out
        journal.fsync_dir(parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return name, files
