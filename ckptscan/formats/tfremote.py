"""TensorFlow checkpoints behind a URI (``s3://``, ``gs://``, ``http(s)://``…), read by ranges.

The same names as a local path are accepted (:func:`ckptscan.formats.tf.locate`): a
``PREFIX.index`` object, a prefix ``…/ckpt`` naming ``…/ckpt.index``, a folder holding
``.index`` (empty basename), a folder with a ``checkpoint`` state file (its latest
checkpoint; a path in it from another machine is looked up by its base name beside the
state file, else the newest ``.index`` the folder lists), a SavedModel folder
(``variables/variables.index``, ``keras_metadata.pb``). A folder is recognised by probing
those few names, so a server that cannot list (plain HTTP) still serves a SavedModel
or a prefix; only the state-file fallback needs a listing.

The ``.index`` is read whole (at most :data:`~.tfbundle.table.MAX_INDEX_BYTES`), a
``keras_metadata.pb`` whole (at most :data:`~.tf.MAX_METADATA_BYTES`), a ``checkpoint``
state file up to :data:`~.tfstate.MAX_STATE_BYTES`; tensor values are read from the data
shards by ranged requests (:class:`~.remote.RangeReader`: small tensors through its
block cache, large ones one request per block), the CRC32C of every tensor verified
as locally. The result is a :class:`~.tf.TFCheckpoint` with ``direct_io = False``.
A data shard named alone is refused as locally. Orbax folders are not recognised
behind a URI.
"""

from __future__ import annotations

import posixpath
import re
from typing import Generator

import numpy as np

from ..errors import MalformedArchiveError, NotAnArchiveError, UnsafeArchiveError
from .base import Checkpoint, Variable, _storage, bf16_to_f32
from .remote import RangeReader, RemoteSource, backend_call
from .tf import DATA_SHARD, MAX_METADATA_BYTES, SHARD_RE, TFCheckpoint
from .tfstate import MAX_STATE_BYTES, state_candidates
from .tfbundle import crc
from .tfbundle.bundle import Bundle
from .tfbundle.table import MAX_INDEX_BYTES


class RemoteFiles:
    """The ``.index`` and data shards of one remote bundle, each read through one
    :class:`~.remote.RangeReader` (what they fetch is added to the source's stats)."""

    def __init__(self, src: RemoteSource, index_path: str):
        self.src = src
        self.index_path = index_path
        self._readers: dict[str, RangeReader] = {}

    def reader(self, path: str) -> RangeReader:
        """The reader of the object at ``path`` (opened on first use)."""
        r = self._readers.get(path)
        if r is None:
            r = self._readers[path] = RangeReader(self.src.fs, path, self.src.where, block_size=self.src.block_size,
                                                  total=self.src.stats)
        return r

    def index_bytes(self) -> bytes:
        """The whole ``.index`` (refused above :data:`MAX_INDEX_BYTES`)."""
        return _read_whole(self.reader(self.index_path), self.src.where, "index file", MAX_INDEX_BYTES)

    def size(self, path: str) -> int:
        """Size of a data shard (NotAnArchiveError when it is missing)."""
        return self.reader(path).size

    def pread(self, path: str, offset: int, nbytes: int) -> bytes:
        """``nbytes`` bytes of ``path`` at ``offset`` (fewer only at its end)."""
        return self.reader(path).pread(offset, nbytes)

    def close(self) -> None:
        """Close every reader."""
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def _read_whole(reader: RangeReader, where: str, what: str, cap: int) -> bytes:
    if reader.size > cap:
        raise UnsafeArchiveError(where, f"{what} is {reader.size} bytes (more than {cap >> 20} MiB)")
    data = reader.pread(0, reader.size)
    if len(data) != reader.size:
        raise MalformedArchiveError(where, f"{what} changed while being read")
    return data


# --- locating ------------------------------------------------------------------------------


def _isfile(src: RemoteSource, path: str) -> bool:
    try:
        return bool(backend_call(src.where, src.fs.isfile, path))
    except NotAnArchiveError:
        return False


def remote_layout(src: RemoteSource) -> str | None:
    """The TensorFlow format id of a remote ``src`` (:data:`~.tf.DATA_SHARD` for a shard
    named alone), or None when it names no TensorFlow checkpoint."""
    found = _locate(src)
    if found is None:
        return None
    return "tf-checkpoint" if found[2] == "tf-checkpoint-folder" else found[2]


def _locate(src: RemoteSource) -> tuple[str, str | None, str] | None:
    """``(prefix, keras_metadata.pb path or None, format id)`` of the checkpoint ``src``
    names (probed once per source: detecting and opening ask the same question)."""
    found = getattr(src, "_tf_located", False)
    if found is False:
        found = src._tf_located = _probe(src)
    return found


def _probe(src: RemoteSource) -> tuple[str, str | None, str] | None:
    path = src.path.rstrip("/")
    name = posixpath.basename(path)
    kind = src.kind()
    if SHARD_RE.match(name) and kind == "file":
        return path, None, DATA_SHARD
    if kind == "file":
        return (path[: -len(".index")], None, "tf-checkpoint") if name.endswith(".index") else None
    # a folder, or a name that is no object (a prefix, or a folder a server cannot describe)
    if kind == "missing" and _isfile(src, path + ".index"):
        return path, None, "tf-checkpoint"
    sm = posixpath.join(path, "variables", "variables")
    if _isfile(src, sm + ".index"):
        meta = posixpath.join(path, "keras_metadata.pb")
        return sm, (meta if _isfile(src, meta) else None), "tf-savedmodel"
    if _isfile(src, posixpath.join(path, ".index")):
        return path + "/", None, "tf-checkpoint"
    state = posixpath.join(path, "checkpoint")
    if _isfile(src, state):
        return _latest_from_state(src, path, state), None, "tf-checkpoint-folder"
    return None


def _latest_from_state(src: RemoteSource, folder: str, state: str) -> str:
    """The prefix the state file names (by base name), else the newest listed ``.index``."""
    reader = RangeReader(src.fs, state, src.where, block_size=src.block_size, total=src.stats)
    try:
        text = reader.pread(0, min(reader.size, MAX_STATE_BYTES)).decode("utf-8", "replace")
    finally:
        reader.close()
    for cand in state_candidates(text):
        base = re.split(r"[\\/]", cand)[-1]  # a path from another machine: its name beside the state file
        prefix = posixpath.join(folder, base)
        if base and _isfile(src, prefix + ".index"):
            return prefix
    try:
        listed = backend_call(src.where, src.fs.ls, folder, detail=False)
    except Exception:  # noqa: BLE001 - a server that cannot list (plain HTTP): nothing more to try
        listed = []
    present = []
    for p in listed:
        p = str(p).rstrip("/")
        if p.endswith(".index"):
            m = re.search(r"-(\d+)\.index$", p)
            present.append((int(m.group(1)) if m else -1, p[: -len(".index")]))
    if not present:
        raise NotAnArchiveError(src.where, "folder with a checkpoint state file but no .index file found beside it")
    return max(present)[1]


def checkpoint_units(files: list[str], listed: list[str]) -> list[str]:
    """``files`` (paths a remote folder listing kept) with each TensorFlow checkpoint made
    one entry, as a local walk makes it: a SavedModel's ``variables/variables.index`` becomes
    its folder, the ``.index`` files of a folder with a ``checkpoint`` state file become that
    folder (its latest is scanned). ``listed`` is the whole listing."""
    state_dirs = {posixpath.dirname(f) for f in listed if posixpath.basename(f) == "checkpoint"}
    out: list[str] = []
    for f in files:
        unit = f
        if f.endswith("/variables/variables.index"):
            unit = posixpath.dirname(posixpath.dirname(f))
        elif f.endswith(".index") and posixpath.dirname(f) in state_dirs:
            unit = posixpath.dirname(f)
        if unit not in out:
            out.append(unit)
    return out


def names_tf_checkpoint(uri: str, storage_options: dict | None = None) -> bool:
    """True when ``uri`` names a TensorFlow checkpoint (or one of its data shards);
    False for anything else, including a URI that cannot be read."""
    from ..errors import CkptscanError
    from .remote import remote_source

    try:
        return _locate(remote_source(uri, storage_options)) is not None
    except CkptscanError:
        return False


def _kept_in_state(src: RemoteSource, folder: str) -> int:
    """How many checkpoints of ``folder`` are present: its listing's ``.index`` files, or,
    when it cannot be listed, those its state file names that exist."""
    try:
        listed = backend_call(src.where, src.fs.ls, folder, detail=False)
        return sum(1 for p in listed if str(p).endswith(".index"))
    except Exception:  # noqa: BLE001 - no listing (plain HTTP): count through the state file
        pass
    reader = RangeReader(src.fs, posixpath.join(folder, "checkpoint"), src.where, block_size=src.block_size,
                         total=src.stats)
    try:
        text = reader.pread(0, min(reader.size, MAX_STATE_BYTES)).decode("utf-8", "replace")
    finally:
        reader.close()
    bases = {re.split(r"[\\/]", c)[-1] for c in state_candidates(text)}
    return sum(1 for b in bases if b and _isfile(src, posixpath.join(folder, b) + ".index"))


# --- opening -------------------------------------------------------------------------------


def open_remote_tf(src: RemoteSource, config: dict | None) -> TFCheckpoint:
    """Open the TensorFlow checkpoint a remote ``src`` names (see the module doc)."""
    found = _locate(src)
    if found is None:
        raise NotAnArchiveError(src.where, "not a TensorFlow checkpoint")
    prefix, meta_path, fmt = found
    if fmt == DATA_SHARD:
        m = SHARD_RE.match(posixpath.basename(prefix))
        raise NotAnArchiveError(src.where, f"data shard of a TensorFlow checkpoint: scan its index "
                                           f"({m.group('prefix') if m else ''}.index)")
    files = RemoteFiles(src, prefix + ".index")
    try:
        meta = None
        if meta_path is not None:
            meta = _read_whole(files.reader(meta_path), src.where, "keras_metadata.pb", MAX_METADATA_BYTES)
        bundle = Bundle(prefix, src.where, files)
        ck = RemoteTFCheckpoint(src.where, prefix, files, bundle, meta, config,
                                "tf-checkpoint" if fmt == "tf-checkpoint-folder" else fmt)
        if fmt == "tf-checkpoint-folder":
            kept = _kept_in_state(src, posixpath.dirname(prefix))
            if kept > 1:  # the same note as a local folder's (which counts the .index files present)
                ck.notes.append(f"scanned the latest of {kept} checkpoints in this folder ({posixpath.basename(prefix)}); "
                                "name another's .index to scan it")
        return ck
    except BaseException:
        files.close()
        raise


class RemoteTFCheckpoint(TFCheckpoint):
    """A :class:`~.tf.TFCheckpoint` whose shards are read by ranged requests."""

    direct_io = False

    def __init__(self, where: str, prefix: str, files: RemoteFiles, bundle: Bundle, metadata: bytes | None,
                 config: dict | None, fmt: str):
        self._files = files
        super().__init__(where, prefix, None, config, fmt, bundle=bundle, metadata_bytes=metadata)

    def close(self) -> None:
        """Close the shard readers."""
        self._files.close()

    def read(self, var: Variable) -> np.ndarray:
        """The whole tensor through :meth:`iter_blocks` (CRC32C verified)."""
        return Checkpoint.read(self, var)

    def _pread_entry(self, entry, offset: int, nbytes: int) -> bytes:
        return self._files.pread(entry.shard, entry.offset + offset, nbytes)

    def _stream(self, var: Variable, block_elems: int) -> Generator[np.ndarray, None, int]:
        """Yield a contiguous tensor's values by ranged reads; return its stored bytes' CRC32C."""
        storage = _storage(var.dtype)
        step = storage.itemsize
        total = var.size
        running = 0
        pos = 0
        while pos < total:
            count = min(block_elems, total - pos)
            data = self._files.pread(var.file, var.offset + pos * step, count * step)
            if len(data) != count * step:
                raise MalformedArchiveError(self.path, f"{var.path}: data shard ends early (truncated)")
            running = crc.crc32c(data, self.path, running)
            pos += count
            raw = np.frombuffer(data, dtype=storage)
            yield bf16_to_f32(raw) if var.dtype == "bfloat16" else raw
        return running
