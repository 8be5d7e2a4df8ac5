"""Apply a :class:`PatchPlan`: in place through the journal, or by an atomic rewrite.

* Contiguous datasets (``Variable.offset`` known) are patched by ``pwrite`` of only
  the changed elements — in a plain HDF5 file, a shard, an unzipped folder, or the
  stored ``model.weights.h5`` member of a ``.keras`` zip (offsets are absolute), in
  which case both CRC-32 fields (and a data descriptor's) are updated incrementally.
* Chunked/compact datasets or a compressed member force an atomic rewrite of the one
  physical file concerned (temporary copy → h5py → fsync → ``os.replace``); the
  ``.keras`` zip keeps its member order, names, timestamps and compression.
* ``--output`` copies the checkpoint into a temporary folder next to the output,
  patches the copy, verifies it and moves it into place.

Every path ends with the same verification: the changed tensors hold exactly the new
bits (and are healthy), every other tensor hashes as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zipfile
from dataclasses import dataclass
from typing import Callable

import h5py
import numpy as np

from .. import journal
from ..errors import CkptscanError, PatchRefusedError
from ..formats.base import Checkpoint, Variable
from . import zipcrc
from .model import Change, ChangeRecord, FileFix, PatchPlan, json_number
from .rawio import (
    decode,
    element_hash,
    encode,
    file_sha256,
    patched_hash,
    read_at,
    runs,
    storage_dtype,
)

WEIGHTS_MEMBER = "model.weights.h5"
MULTI_FILE = ("keras3-sharded", "keras-dir")


@dataclass(eq=False)
class Prepared:
    """A change resolved to stored bits, at the elements it writes only.

    Nothing here is the size of the tensor unless the change is (``whole_tensor``): a
    few repaired NaNs in a 1 GiB embedding hold a few elements.
    """

    change: Change
    idx: np.ndarray
    """Ascending flat indices the change writes (every index for a whole-tensor change)."""
    old_raw: np.ndarray
    """Stored bits at :attr:`idx` before the patch."""
    new_raw: np.ndarray
    """Bits to store at :attr:`idx`."""
    changed: np.ndarray
    """Flat indices whose bits differ (a subset of :attr:`idx`)."""


@dataclass(frozen=True)
class Expected:
    """What a patched tensor must hold: ``size`` elements of stored ``dtype`` whose bits
    hash to ``digest`` (:func:`~ckptscan.patch.rawio.element_hash` of the tensor with the
    patch applied, computed by streaming the original)."""

    size: int
    dtype: np.dtype
    digest: str


def prepare(ckpt: Checkpoint, change: Change) -> Prepared:
    """Resolve a change against the stored bits; refuse values the dtype cannot hold."""
    var = change.variable
    enc = encode(change.new_values, var)
    want = np.asarray(change.new_values, dtype=np.float64).reshape(-1)
    got = decode(enc, var).astype(np.float64)
    bad = np.isfinite(want) & ~np.isfinite(got)
    if bad.any():
        x = want[bad][0]
        raise PatchRefusedError(ckpt.path, f"{var.path}: value {x:g} does not fit {var.dtype}")
    if change.indices is None:
        if enc.size != var.size:
            raise PatchRefusedError(ckpt.path, f"{var.path}: {enc.size} values for a tensor of {var.size}")
        idx = np.arange(var.size, dtype=np.int64)
    else:
        idx = np.asarray(change.indices, dtype=np.int64).reshape(-1)
        if idx.size != enc.size:
            raise PatchRefusedError(ckpt.path, f"{var.path}: {enc.size} values for {idx.size} indices")
        if idx.size and (idx.min() < 0 or idx.max() >= var.size):
            raise PatchRefusedError(ckpt.path, f"{var.path}: index out of range for shape {var.shape}")
        if idx.size > 1 and not bool((np.diff(idx) > 0).all()):
            # unsorted or repeated indices: sorted, and the last value given for an index wins
            order = np.argsort(idx, kind="stable")
            idx, enc = idx[order], enc[order]
            last = np.append(idx[1:] != idx[:-1], True)
            idx, enc = idx[last], enc[last]
    old_raw = read_at(ckpt, var, idx)
    new_raw = np.ascontiguousarray(enc, dtype=old_raw.dtype)
    u = f"u{old_raw.itemsize}"
    changed = idx[old_raw.view(u) != new_raw.view(u)]
    return Prepared(change, idx, old_raw, new_raw, changed)


def expected_of(ckpt: Checkpoint, p: Prepared) -> Expected:
    """What the tensor of ``p`` must hold once written (streams the tensor once)."""
    var = p.change.variable
    return Expected(var.size, p.new_raw.dtype, patched_hash(ckpt, var, p.idx, p.new_raw))


def record(p: Prepared, limit: int = 4096) -> ChangeRecord:
    """The manifest record of a prepared change."""
    c = p.change
    var = c.variable
    whole = c.indices is None
    idx = None if whole else tuple(int(i) for i in p.idx)
    old = decode(p.old_raw, var)
    new = decode(p.new_raw, var)
    if whole and var.size > limit:
        old, new = old[:0], new[:0]
    return ChangeRecord(
        layer_path=var.layer_path, variable=var.name, dtype=var.dtype, shape=tuple(var.shape),
        strategy=c.strategy, indices=idx,
        old=tuple(json_number(x) for x in np.asarray(old).reshape(-1)),
        new=tuple(json_number(x) for x in np.asarray(new).reshape(-1)),
        reason=c.reason, note=c.note, file=var.file)


# --- helpers ---------------------------------------------------------------------------

def key(ckpt: Checkpoint, var: Variable) -> tuple[str, str]:
    """Identity of a stored tensor that survives copying the checkpoint elsewhere."""
    if ckpt.format in MULTI_FILE:
        return os.path.basename(var.file), var.h5path
    return "", var.h5path


def check_writable(path: str, files: list[str]) -> None:
    """Refuse read-only files (mode bits checked too: root ignores EACCES)."""
    for f in files:
        try:
            st = os.stat(f)
        except OSError as exc:
            raise PatchRefusedError(path, f"cannot stat {f} ({exc.strerror or exc})") from exc
        if not (st.st_mode & 0o222) or not os.access(f, os.W_OK):
            what = "file" if f == path else f"file {os.path.basename(f)}"
            raise PatchRefusedError(path, f"read-only {what} (mode {st.st_mode & 0o777:04o}); nothing written")
    d = os.path.dirname(os.path.abspath(path))
    if not os.access(d, os.W_OK):
        raise PatchRefusedError(path, f"folder {d} is not writable (journal and lock go there)")


def _member_stored(ckpt: Checkpoint) -> bool:
    return all(v.file == ckpt.path for v in ckpt.variables)


def _is_tf(fmt: str) -> bool:
    return fmt.startswith(("tf-", "tf1-"))


def journal_name(ckpt: Checkpoint) -> str:
    """The name the checkpoint's fix journals under: its path, or a TensorFlow
    checkpoint's ``.index`` (one unit whatever name it was opened by; see
    :func:`ckptscan.formats.journal_unit`)."""
    return ckpt.bundle.index_path if _is_tf(ckpt.format) else ckpt.path


def unit_files(ckpt: Checkpoint) -> list[str]:
    """Every physical file of the checkpoint (archive, index + shards, folder files)."""
    path = ckpt.path
    if _is_tf(ckpt.format):  # a TensorFlow bundle: its .index and every data shard it uses
        return [ckpt.bundle.index_path] + sorted({v.file for v in ckpt.variables})
    if ckpt.format == "keras-zip" or os.path.isfile(path) and ckpt.format != "keras3-sharded":
        return [path]
    files = sorted({v.file for v in ckpt.variables})
    if ckpt.format == "keras3-sharded":
        return [path] + files
    return [os.path.join(path, n) for n in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, n))]


# --- the patch ------------------------------------------------------------------------

def apply_plan(ckpt: Checkpoint, plan: PatchPlan, *, reopen, output: str | None = None,
               backup: str | None = None, verify: str = "full", force_rewrite: bool = False) -> FileFix:
    """Write ``plan`` into ``ckpt`` (which this closes) and verify the result.

    ``reopen(path)`` opens a checkpoint the same way ``ckpt`` was opened (same
    ``--config``). The caller holds the checkpoint's lock. ``force_rewrite`` takes the
    atomic full-rewrite path even where an in-place patch is possible.
    """
    path = ckpt.path
    prepared = [prepare(ckpt, c) for c in plan.changes]
    prepared = [p for p in prepared if p.changed.size]
    records = tuple(record(p) for p in prepared)
    if not prepared:
        ckpt.close()
        return FileFix(path, "unchanged", reason="the planned values are already stored", format=ckpt.format)
    targets = sorted({p.change.variable.file for p in prepared})
    in_place = not force_rewrite and all(p.change.variable.offset is not None for p in prepared) and (
        ckpt.format != "keras-zip" or _member_stored(ckpt))
    if not in_place and len(targets) > 1:
        raise PatchRefusedError(path, "chunked or compressed tensors in several shards cannot be rewritten atomically")
    tf_source = None
    if _is_tf(ckpt.format):
        if not in_place:
            raise PatchRefusedError(path, "TensorFlow checkpoints are patched in place or into a copy (--output), "
                                          "never rewritten whole")
        targets = sorted(set(targets) | {ckpt.bundle.index_path})  # the index holds each tensor's CRC32C
        if output is not None:
            from .tfcopy import source_of

            tf_source = source_of(ckpt)
    jname = journal_name(ckpt)
    if output is None:
        check_writable(jname, [path] if ckpt.format == "keras-zip" else targets)
    files = unit_files(ckpt)
    before = {f: file_sha256(f) for f in files} if verify == "full" else {}
    changed_keys = {key(ckpt, p.change.variable) for p in prepared}
    hashes = {}
    if verify == "full":
        hashes = {key(ckpt, v): element_hash(ckpt, v) for v in ckpt.variables if key(ckpt, v) not in changed_keys}
    expected = {key(ckpt, p.change.variable): expected_of(ckpt, p) for p in prepared}
    physical = None if in_place else (path if ckpt.format == "keras-zip" else targets[0])
    fmt = ckpt.format
    regions = _regions(ckpt, prepared) if in_place else []
    ckpt.close()

    w = _Write(fmt=fmt, prepared=prepared, regions=regions, physical=physical, expected=expected, hashes=hashes,
               verify=verify, reopen=reopen)
    if tf_source is not None:  # a complete copy: index, every shard (a SavedModel: the folder)
        from .tfcopy import write_tf_copy

        def write(remap: dict) -> None:
            _write_regions([journal.Region(remap[os.path.abspath(r.file)], r.offset, r.old, r.new) for r in regions])

        out, out_files = write_tf_copy(tf_source, output, write,
                                       lambda name: _verify(w.reopen(name), w.expected, w.hashes, w.verify))
        after = {f: file_sha256(f) for f in out_files} if verify == "full" else {}
        return FileFix(path, "fixed", format=fmt, mode="copy", output=out, sha256_before=before,
                       sha256_after=after, changes=records, verified=verify)
    if output is not None:
        out = _write_copy(path, files, output, w)
        after = {f: file_sha256(f) for f in unit_files_of(out, fmt, files, path)} if verify == "full" else {}
        return FileFix(path, "fixed", format=fmt, mode="copy", output=out, sha256_before=before,
                       sha256_after=after, changes=records, verified=verify)
    bak = ""
    if backup is not None:
        bak = _backup(path, fmt, targets, backup)
    if in_place:
        journal.write_journal(jname, regions)
        try:
            _write_regions(regions)
            try:
                _verify(reopen(path), expected, hashes, verify)
            except CkptscanError as exc:
                journal.roll_back(jname, regions)
                raise PatchRefusedError(path, f"verification failed, original restored: {exc.reason}") from exc
        except BaseException:
            # a Python-level failure: restore now (a crash is handled by recovery)
            try:
                journal.roll_back(jname, regions)
                journal.end_journal(jname)
            except Exception:  # pragma: no cover - leave the journal for recovery
                pass
            raise
        journal.end_journal(jname)
        mode = "in-place"
    else:
        _rewrite(physical, w)
        mode = "rewrite"
    after = {f: file_sha256(f) for f in files} if verify == "full" else {}
    return FileFix(path, "fixed", format=fmt, mode=mode, output=path, backup=bak, sha256_before=before,
                   sha256_after=after, changes=records, verified=verify)


def unit_files_of(out: str, fmt: str, files: list[str], src: str) -> list[str]:
    """The output's physical files, mirroring ``files`` of the source."""
    if len(files) == 1 and files[0] == src:
        return [out]
    if fmt == "keras3-sharded":
        d = os.path.dirname(out)
        return [out] + [os.path.join(d, os.path.basename(f)) for f in files[1:]]
    return [os.path.join(out, os.path.basename(f)) for f in files]


def _regions(ckpt: Checkpoint, prepared: list[Prepared]) -> list[journal.Region]:
    regions: list[journal.Region] = []
    fds: dict[str, int] = {}
    try:
        for p in prepared:
            var = p.change.variable
            isz = storage_dtype(var).itemsize
            for start, n in runs(p.changed):
                k = int(np.searchsorted(p.idx, start))  # a run's elements are consecutive in idx too
                regions.append(journal.Region(var.file, var.offset + start * isz,
                                             p.old_raw[k:k + n].tobytes(), p.new_raw[k:k + n].tobytes()))
            fds.setdefault(var.file, os.open(var.file, os.O_RDONLY))
        for r in regions:  # the journal holds what is on disk, not what we decoded
            if os.pread(fds[r.file], len(r.old), r.offset) != r.old:
                raise PatchRefusedError(ckpt.path, f"{r.file}: bytes at {r.offset} changed while planning")
    finally:
        for fd in fds.values():
            os.close(fd)
    if ckpt.format == "keras-zip":
        regions += _crc_regions(ckpt.path, regions)
    if _is_tf(ckpt.format):
        regions += _tf_index_regions(ckpt, prepared)
    return regions


def _tf_index_regions(ckpt: Checkpoint, prepared: list[Prepared]) -> list[journal.Region]:
    """The index blocks whose entries get the patched tensors' new CRC32C."""
    from ..formats.tfbundle.rewrite import index_regions, patched_crc

    crcs = {}
    for p in prepared:
        var = p.change.variable
        crcs[var.h5path] = patched_crc(var.file, var.offset, var.nbytes, storage_dtype(var).itemsize, p.idx,
                                       p.new_raw, ckpt.path)
    return [journal.Region(*r) for r in index_regions(ckpt.bundle.index_path, crcs, ckpt.path)]


def _crc_regions(path: str, regions: list[journal.Region]) -> list[journal.Region]:
    loc = zipcrc.locate(path, WEIGHTS_MEMBER)
    delta = 0
    for r in regions:
        rel = r.offset - loc.data_start
        if rel < 0 or rel + len(r.old) > loc.size:
            raise PatchRefusedError(path, f"write at {r.offset} falls outside {WEIGHTS_MEMBER}")
        delta ^= zipcrc.crc_delta(r.old, r.new, rel, loc.size)
    old = struct.pack("<I", loc.crc)
    new = struct.pack("<I", loc.crc ^ delta)
    out = []
    with open(path, "rb") as fh:
        for at in (loc.local_crc_at, loc.central_crc_at, loc.descriptor_crc_at):
            if at is None:
                continue
            fh.seek(at)
            if fh.read(4) != old:
                raise PatchRefusedError(path, f"{WEIGHTS_MEMBER}: CRC field at {at} does not hold the member's CRC")
            out.append(journal.Region(path, at, old, new))
    return out


def _write_regions(regions: list[journal.Region]) -> None:
    fds: dict[str, int] = {}
    split = journal.faults_enabled()
    try:
        for i, r in enumerate(regions):
            if r.file not in fds:
                fds[r.file] = os.open(r.file, os.O_RDWR)
            fd = fds[r.file]
            if split and len(r.new) > 1:  # crash tests: let kills land inside a region
                h = len(r.new) // 2
                os.pwrite(fd, r.new[:h], r.offset)
                journal.fault_point(f"region-{i}-half")
                os.pwrite(fd, r.new[h:], r.offset + h)
            else:
                os.pwrite(fd, r.new, r.offset)
            journal.fault_point(f"region-{i}")
        for fd in fds.values():
            os.fsync(fd)
        journal.fault_point("regions-synced")
    finally:
        for fd in fds.values():
            os.close(fd)


def _verify(ckpt: Checkpoint, expected: dict, hashes: dict, verify: str) -> None:
    """Changed tensors hold exactly the new bits; every other tensor is unchanged."""
    with ckpt:
        seen = set()
        for v in ckpt.variables:
            k = key(ckpt, v)
            if k in expected:
                exp = expected[k]
                if v.size != exp.size or element_hash(ckpt, v) != exp.digest:
                    raise PatchRefusedError(ckpt.path, f"{v.path}: re-read values differ from the patch")
                if _is_tf(ckpt.format):  # and its new CRC32C in the index matches the bytes
                    for _ in ckpt.iter_blocks(v):
                        pass
                    if ckpt.integrity_failures:
                        raise PatchRefusedError(ckpt.path, f"{v.path}: checksum in the index does not match the patch")
                seen.add(k)
            elif verify == "full" and k in hashes:
                if element_hash(ckpt, v) != hashes[k]:
                    raise PatchRefusedError(ckpt.path, f"{v.path}: untouched tensor changed")
                seen.add(k)
        missing = (set(expected) | (set(hashes) if verify == "full" else set())) - seen
        if missing:
            raise PatchRefusedError(ckpt.path, f"{len(missing)} tensor(s) missing after the patch, e.g. {sorted(missing)[0][1]}")
        if verify == "full" and ckpt.format == "keras-zip":
            _check_zip(ckpt.path)


def _check_zip(path: str) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise PatchRefusedError(path, f"zip check failed: {exc}") from exc
    if bad is not None:
        raise PatchRefusedError(path, f"zip member {bad} fails its CRC check")


# --- backup, copy, rewrite ---------------------------------------------------------------

def _backup(path: str, fmt: str, targets: list[str], backup: str) -> str:
    """Copy the original (the archive, or each touched physical file) aside; never
    overwrites: ``.bak``, ``.bak.1`` … (an existing ``--backup-to`` is refused)."""
    from .backup import backup_copy

    if backup == "":
        if len(targets) == 1 and targets[0] == path or fmt == "keras-zip":
            return backup_copy(path)
        return ", ".join(backup_copy(t) for t in targets)
    if fmt in MULTI_FILE and len(targets) > 1:
        raise PatchRefusedError(path, "--backup-to needs one file; this patch touches several shards (use --backup)")
    src = path if fmt == "keras-zip" or targets == [path] else targets[0]
    return backup_copy(src, backup)


@dataclass(frozen=True)
class _Write:
    """What a write puts into a checkpoint and how the result is checked."""

    fmt: str
    prepared: list
    """The :class:`Prepared` changes (bits at indices)."""
    regions: list
    """Byte regions patched in place; empty when :attr:`physical` is rewritten whole."""
    physical: str | None
    """The file rewritten whole (the archive or one HDF5 file), None for in place."""
    expected: dict
    """Changed tensor key -> the digest its written values must give."""
    hashes: dict
    """Untouched tensor key -> its digest before the write (``verify="full"``)."""
    verify: str
    reopen: Callable
    """Opens a checkpoint the way the patched one was opened (same ``--config``)."""


def _write_copy(path: str, files: list[str], output: str, w: _Write) -> str:
    """Write the patched checkpoint to ``output`` (staged, verified, then moved into place)."""
    fmt, regions, physical = w.fmt, w.regions, w.physical
    out = journal.unit_path(output)
    src = journal.unit_path(path)
    if out == src:
        raise PatchRefusedError(path, "--output is the input itself; drop --output to patch in place")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise PatchRefusedError(path, f"output folder {parent} does not exist")
    stage = journal.temp_path(out, unique=True)
    os.mkdir(stage)
    try:
        if fmt == "keras3-sharded":
            names = [os.path.basename(out)] + [os.path.basename(f) for f in files[1:]]
            for f, n in zip(files, names):
                if os.path.dirname(f) == parent and n != os.path.basename(out) and journal.unit_path(f) == os.path.join(parent, n):
                    raise PatchRefusedError(path, f"--output would overwrite shard {n} of the input; choose another folder")
                journal.copy_durable(f, os.path.join(stage, n))
            staged = os.path.join(stage, names[0])
        elif os.path.isdir(src):
            staged = os.path.join(stage, "unit")
            shutil.copytree(src, staged)
        else:
            staged = os.path.join(stage, os.path.basename(out))
            journal.copy_durable(src, staged)
        remap = {f: _mirror(f, src, staged, fmt) for f in {r.file for r in regions} | ({physical} if physical else set())}
        if regions:
            _write_regions([journal.Region(remap[r.file], r.offset, r.old, r.new) for r in regions])
        else:
            _rewrite(remap[physical], w)
        _verify(w.reopen(staged), w.expected, w.hashes, w.verify)
        if fmt == "keras3-sharded":
            for n in os.listdir(stage):
                if n != os.path.basename(out):
                    os.replace(os.path.join(stage, n), os.path.join(parent, n))
            os.replace(staged, out)
        elif os.path.isdir(staged):
            if os.path.exists(out):
                raise PatchRefusedError(path, f"--output {out} exists; refusing to replace a folder")
            os.rename(staged, out)
        else:
            os.replace(staged, out)
        journal.fsync_dir(parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _mirror(f: str, src: str, staged: str, fmt: str) -> str:
    if f == src:
        return staged
    if fmt == "keras3-sharded":
        return os.path.join(os.path.dirname(staged), os.path.basename(f))
    return os.path.join(staged, os.path.relpath(f, src))


def _rewrite(target: str, w: _Write) -> None:
    """Atomically rewrite ``target`` (the archive or one HDF5 file) with the new bits."""
    prepared, expected, hashes, verify = w.prepared, w.expected, w.hashes, w.verify
    if w.fmt == "keras-zip":
        _rewrite_zip(target, prepared, expected, hashes, verify)
        return
    tmp = journal.temp_path(target)
    try:
        journal.copy_durable(target, tmp)
        journal.fault_point("rewrite-copied")
        _h5_write(tmp, prepared)
        journal.fault_point("rewrite-written")
        _verify_part(tmp, target, prepared, expected, hashes, verify)
        os.replace(tmp, target)
    except BaseException:
        journal._unlink_quiet(tmp)
        raise
    journal.fsync_dir(os.path.dirname(os.path.abspath(target)))
    journal.fault_point("rewrite-replaced")


def _stored_bits(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A dataset's values as flat stored bits of ``dtype`` (a copy)."""
    arr = np.ascontiguousarray(arr)
    return (arr.view(dtype) if arr.dtype.kind == "V" else arr.astype(dtype)).reshape(-1).copy()


def _h5_write(h5file: str, prepared: list[Prepared]) -> None:
    """Write the changes through h5py (chunked/compact data: each touched dataset whole)."""
    with h5py.File(h5file, "r+", locking=False) as f:
        for p in prepared:
            ds = f[p.change.variable.h5path]
            bits = _stored_bits(ds[()], p.new_raw.dtype)
            bits[p.idx] = p.new_raw
            if ds.dtype.kind == "V":
                ds[...] = bits.view(ds.dtype).reshape(ds.shape)
            else:
                ds[...] = bits.astype(ds.dtype).reshape(ds.shape)
        f.flush()
    with open(h5file, "rb+") as fh:
        os.fsync(fh.fileno())


def _verify_part(tmp: str, target: str, prepared, expected, hashes, verify) -> None:
    """Verify a rewritten single HDF5 file by dataset path."""
    from ..formats import open_checkpoint

    base = os.path.basename(target)
    mine = {k[1]: v for k, v in expected.items() if k[0] in ("", base)}
    theirs = {k[1]: v for k, v in hashes.items() if k[0] in ("", base)}
    with h5py.File(tmp, "r", locking=False) as f:
        for h5path, exp in mine.items():
            got = _stored_bits(f[h5path][()], exp.dtype)
            if got.size != exp.size or hashlib.sha256(got.tobytes()).hexdigest() != exp.digest:
                raise PatchRefusedError(target, f"{h5path}: re-read values differ from the patch")
    if verify == "full":
        with open_checkpoint(tmp) as c:
            for v in c.variables:
                if v.h5path in theirs and element_hash(c, v) != theirs[v.h5path]:
                    raise PatchRefusedError(target, f"{v.h5path}: untouched tensor changed")


def _rewrite_zip(archive: str, prepared, expected, hashes, verify) -> None:
    tmp_h5 = journal.temp_path(archive + ".member")
    tmp_zip = journal.temp_path(archive)
    try:
        with zipfile.ZipFile(archive) as zin:
            with zin.open(WEIGHTS_MEMBER) as src, open(tmp_h5, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
            journal.fault_point("rewrite-extracted")
            _h5_write(tmp_h5, prepared)
            journal.fault_point("rewrite-written")
            with zipfile.ZipFile(tmp_zip, "w", allowZip64=True) as zout:
                zout.comment = zin.comment
                for info in zin.infolist():
                    zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                    zi.compress_type = info.compress_type
                    zi.external_attr = info.external_attr
                    zi.create_system = info.create_system
                    zi.comment = info.comment
                    if info.filename == WEIGHTS_MEMBER:
                        size = os.path.getsize(tmp_h5)
                        with open(tmp_h5, "rb") as s, zout.open(zi, "w", force_zip64=size > (1 << 31)) as d:
                            shutil.copyfileobj(s, d, 8 << 20)
                    else:
                        with zin.open(info) as s, zout.open(zi, "w", force_zip64=info.file_size > (1 << 31)) as d:
                            shutil.copyfileobj(s, d, 8 << 20)
        with open(tmp_zip, "rb+") as fh:
            os.fsync(fh.fileno())
        shutil.copymode(archive, tmp_zip)
        journal.fault_point("rewrite-zipped")
        _verify_part(tmp_h5, archive, prepared, expected, hashes, verify)
        if verify == "full":
            _check_zip(tmp_zip)
        os.replace(tmp_zip, archive)
    except BaseException:
        journal._unlink_quiet(tmp_zip)
        raise
    finally:
        journal._unlink_quiet(tmp_h5)
    journal.fsync_dir(os.path.dirname(os.path.abspath(archive)))
    journal.fault_point("rewrite-replaced")
