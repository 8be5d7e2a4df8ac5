"""TensorFlow-format checkpoints: locate them by content, name their variables as
tf-keras does, stream their values with the CRC32C of every tensor verified.

=====================  ==============================================================
format id              what it is
=====================  ==============================================================
``tf-checkpoint``      object-based TF2 checkpoint (``save_weights`` TF format,
                       ``tf.train.Checkpoint``/``CheckpointManager``): ``PREFIX.index``
``tf1-checkpoint``     TF1 ``Saver`` checkpoint (keys are variable names, no object graph)
``tf-savedmodel``      SavedModel folder (``variables/variables.index``, ``keras_metadata.pb``)
=====================  ==============================================================

How a path names a checkpoint (:func:`locate`): a ``PREFIX.index`` file (the table magic
ends it); a prefix ``ckpt`` naming ``ckpt.index``; a folder ``dir/`` holding ``dir/.index``
(empty basename); a folder with a ``checkpoint`` state file (its latest checkpoint; when
the state file's paths are stale or absolute from another machine, the same base name
beside the state file, else the newest index present); a SavedModel folder. Data shards
are read through their index only. Orbax folders are recognised and refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Generator, Iterator

import numpy as np

from ..errors import MalformedArchiveError, NotAnArchiveError, UnsafeArchiveError, UnsupportedFormatError
from .base import DEFAULT_BLOCK_ELEMS, Checkpoint, LayerInfo, Variable, _Decoder, _storage, bf16_to_f32
from .tfbundle import crc, names, proto, slices
from .tfbundle import screen as screen_pass
from .tfbundle.bundle import Bundle
from .tfbundle.table import FOOTER_LEN, MAGIC_BYTES
from .tfstate import present_indexes, read_state
from .tfstate import resolve as resolve_listed
from .tfstate import state_file as _state_file

TF_FORMATS = ("tf-checkpoint", "tf1-checkpoint", "tf-savedmodel")
#: Why ``fix`` leaves a partitioned variable's findings unfixed.
PARTITIONED_REFUSAL = "partitioned variable: fix not supported (repair it with TensorFlow)"
#: A data shard named on its own (read through its index only).
DATA_SHARD = "tf-data-shard"
SHARD_RE = re.compile(r"^(?P<prefix>.*)\.data-(?P<i>\d{5})-of-(?P<n>\d{5})$")
_SHARD_RE = SHARD_RE
#: Largest ``keras_metadata.pb`` read (the state file's bound is :data:`.tfstate.MAX_STATE_BYTES`).
MAX_METADATA_BYTES = 64 << 20
ORBAX_MARKERS = ("orbax.checkpoint", "pytree.orbax-checkpoint", "checkpoint_metadata", "_CHECKPOINT_METADATA")


# --- locating ------------------------------------------------------------------------------


def _has_magic(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < FOOTER_LEN:
                return False
            fh.seek(-8, os.SEEK_END)
            return fh.read(8) == MAGIC_BYTES
    except OSError:
        return False


def is_orbax_dir(p: str) -> bool:
    """A folder Keras/Orbax would call an Orbax checkpoint (``keras/src/saving/orbax_util.py``)."""
    if not os.path.isdir(p):
        return False
    if any(os.path.exists(os.path.join(p, m)) for m in ORBAX_MARKERS):
        return True
    try:
        subs = [d for d in os.listdir(p) if d.isdigit() and os.path.isdir(os.path.join(p, d))]
    except OSError:
        return False
    return any(any(os.path.exists(os.path.join(p, d, m)) for m in ORBAX_MARKERS) for d in subs[:64])


def is_tf_dir(p: str) -> bool:
    """A folder that is one TensorFlow checkpoint (or an Orbax one, refused later)."""
    if not os.path.isdir(p):
        return False
    return (
        os.path.isfile(os.path.join(p, "variables", "variables.index"))
        or os.path.isfile(os.path.join(p, ".index"))
        or _state_file(p) is not None
        or is_orbax_dir(p)
    )


def dir_skip_reason(p: str) -> str | None:
    """Why a folder met in a walk is listed but not scanned (Orbax), else None."""
    return "unsupported: Orbax checkpoint (TensorStore arrays; not read)" if is_orbax_dir(p) else None


def detect_tf(path: str | os.PathLike) -> str | None:
    """The TensorFlow format id of ``path`` (or :data:`DATA_SHARD`), None when it is none."""
    p = str(path)
    if os.path.isdir(p):
        if os.path.isfile(os.path.join(p, "variables", "variables.index")) and not os.path.isfile(os.path.join(p, ".index")):
            return "tf-savedmodel"
        if is_tf_dir(p):
            return "tf-checkpoint"
        return None
    if not os.path.exists(p):
        return "tf-checkpoint" if os.path.isfile(p + ".index") and _has_magic(p + ".index") else None
    if _SHARD_RE.match(os.path.basename(p)) and os.path.isfile(p):
        return DATA_SHARD
    if p.endswith(".index") and (_has_magic(p) or _has_shards(p[: -len(".index")])):
        return "tf-checkpoint"  # a damaged index beside its data shards is still reported as one
    return None


def _has_shards(prefix: str) -> bool:
    d, base = os.path.split(prefix)
    try:
        return any(_SHARD_RE.match(n) and n.startswith(base + ".data-") for n in os.listdir(d or "."))
    except OSError:
        return False


def _latest_from_state(d: str, where: str) -> str:
    """The prefix the ``checkpoint`` state file names, or the best fallback beside it
    (:mod:`.tfstate`: as written, else the same base name beside it, else the newest
    index present)."""
    latest, kept = read_state(d)
    for cand in ([latest] if latest else []) + kept[::-1]:
        prefix = resolve_listed(d, cand)
        if prefix is not None:
            return prefix
    present = present_indexes(d)
    if not present:
        raise NotAnArchiveError(where, "folder with a checkpoint state file but no .index file beside it")
    return present[-1]


def locate(path: str | os.PathLike) -> tuple[str, str | None, str]:
    """(prefix, keras_metadata.pb path or None, format hint) of a TensorFlow checkpoint."""
    p = str(path)
    if os.path.isdir(p):
        if is_orbax_dir(p):
            raise UnsupportedFormatError(p, "unsupported: Orbax checkpoint (TensorStore arrays; not read)")
        sm = os.path.join(p, "variables", "variables")
        if os.path.isfile(sm + ".index"):
            meta = os.path.join(p, "keras_metadata.pb")
            return sm, meta if os.path.isfile(meta) else None, "tf-savedmodel"
        if os.path.isfile(os.path.join(p, ".index")):
            return os.path.join(p, ""), None, "tf-checkpoint"
        if _state_file(p):
            return _latest_from_state(p, p), None, "tf-checkpoint-folder"
        raise NotAnArchiveError(p, "folder that is no TensorFlow checkpoint")
    m = _SHARD_RE.match(p)
    if m and os.path.isfile(p):
        raise NotAnArchiveError(p, f"data shard of a TensorFlow checkpoint: scan its index ({os.path.basename(m.group('prefix'))}.index)")
    if p.endswith(".index") and os.path.isfile(p):
        return p[: -len(".index")], None, "tf-checkpoint"
    if not os.path.exists(p) and os.path.isfile(p + ".index"):
        return p, None, "tf-checkpoint"
    raise NotAnArchiveError(p, "not a TensorFlow checkpoint")


def journal_unit(path: str | os.PathLike) -> str | None:
    """The ``.index`` file a fix of this TensorFlow checkpoint locks and journals under,
    whichever name it was given (index, prefix, folder, SavedModel); None when ``path``
    is no TensorFlow checkpoint (or cannot be located)."""
    if detect_tf(path) in (None, DATA_SHARD):
        return None
    try:
        return locate(path)[0] + ".index"
    except (NotAnArchiveError, UnsupportedFormatError, OSError):
        return None


# --- the checkpoint ------------------------------------------------------------------------


def open_tf(path: str | os.PathLike, config: dict | None = None, screen_ahead: bool = False) -> TFCheckpoint:
    """Open a TensorFlow checkpoint named any way :func:`locate` accepts (``screen_ahead``:
    see :class:`TFCheckpoint`)."""
    where = str(path)
    prefix, meta, fmt = locate(path)
    if fmt != "tf-checkpoint-folder":
        return TFCheckpoint(where, prefix, meta, config, fmt, screen_ahead=screen_ahead)
    ck = TFCheckpoint(where, prefix, meta, config, "tf-checkpoint", screen_ahead=screen_ahead)
    others = sorted(n[: -len(".index")] for n in os.listdir(where) if n.endswith(".index"))
    if len(others) > 1:
        ck.notes.append(f"scanned the latest of {len(others)} checkpoints in this folder ({os.path.basename(prefix)}); "
                        "name another's .index to scan it, or scan --all-checkpoints for every one listed")
    return ck


class TFCheckpoint(Checkpoint):
    """A TensorFlow tensor bundle, named the way tf-keras names its variables.

    ``integrity_failures`` collects ``(variable, reason)`` for every tensor whose stored
    bytes did not match their CRC32C while they were streamed (the scan reports each as
    an INT001 finding instead of stopping).

    ``screen_ahead``: a scan will call :meth:`screen` on every float tensor; where the
    C screening loop is built (:class:`.tfbundle.screen.Ahead`), a worker starts that
    pass as soon as the index is read, beside the decoding and naming that follow.
    """

    def __init__(self, where: str, prefix: str, metadata_path: str | None = None, config: dict | None = None,
                 fmt: str = "tf-checkpoint", bundle: Bundle | None = None, metadata_bytes: bytes | None = None,
                 screen_ahead: bool = False):
        super().__init__(where)
        self.prefix = prefix
        self.bundle = bundle or Bundle(prefix, where)
        self._ahead = self._start_ahead() if screen_ahead and self.direct_io else None
        try:
            self._name(where, metadata_path, config, fmt, metadata_bytes)
        except BaseException:  # nothing is returned to close: stop the worker, close its files
            if self._ahead is not None:
                self._ahead.cancel()
            self._io.close()
            raise

    def _start_ahead(self) -> screen_pass.Ahead | None:
        if screen_pass.native() is None or screen_pass.threads() < 2:
            return None
        try:
            tensors = [(self._io.fd(e.shard), e.offset, e.size, _storage(e.dtype), len(e.shape) == 1)
                       for e in self.bundle.entries.values()
                       if not e.sliced and e.size and e.dtype in ("float16", "float32", "float64")]
        except OSError:  # a shard that cannot be opened: the Python pass meets it and says so
            return None
        if not tensors:
            return None
        ahead = screen_pass.Ahead(tensors)
        ahead.start()
        return ahead

    def close(self) -> None:
        ahead, self._ahead = getattr(self, "_ahead", None), None
        if ahead is not None:
            ahead.cancel()
        super().close()

    def _name(self, where: str, metadata_path: str | None, config: dict | None, fmt: str,
              metadata_bytes: bytes | None) -> None:
        """Decode the object graph (or the TF1 keys) and name every variable."""
        self.integrity_failures: list[tuple[Variable, str]] = []
        self.slots: dict[str, tuple[str, str]] = {}
        """Optimizer slot path → (variable path, slot name)."""
        self.partitioned: dict[str, list[slices.Piece]] = {}
        """Partitioned variable path → its slices (read stitched: :mod:`.tfbundle.slices`)."""
        entries = self.bundle.entries
        metadata = None
        own_config = None
        if metadata_path is not None:
            metadata, own_config = _read_metadata(metadata_path, where)
        elif metadata_bytes is not None:
            metadata, own_config = parse_metadata(metadata_bytes, where)
        self.model_config = own_config or (dict(config) if isinstance(config, dict) else None)
        if self.model_config is not None:
            from .. import naming

            self.model_config = naming.top_config(self.model_config)
        graph = entries.get(names.OBJECT_GRAPH_KEY)
        if graph is not None:
            raw = self.bundle.read_strings(graph)
            if len(raw) != 1:
                raise MalformedArchiveError(where, f"object graph tensor holds {len(raw)} strings (expected 1)")
            nodes = proto.decode(where, "object graph", proto.parse_object_graph, raw[0])
            named = names.object_names(nodes, where, metadata, self.model_config)
            self.format = fmt
        else:
            named = names.tf1_names(sorted(entries))
            self.format = "tf1-checkpoint" if fmt == "tf-checkpoint" else fmt
        if self.model_config is not None:
            self._layers_from_config()
        members: dict[str, str] = {}
        # the object graph's order (the model's), then the keys it does not name, sorted
        for key in [k for k in named if k in entries] + sorted(k for k in entries if k not in named):
            e = entries[key]
            if key == names.OBJECT_GRAPH_KEY:
                continue
            n = named.get(key)
            if n is None:
                if not e.numeric:
                    continue  # object attributes (configs as strings), not variables
                n = _name_from_key(key)
            pieces = None
            if e.sliced:
                if not e.numeric:
                    self.notes.append(f"{n.layer_path}/{n.name}: partitioned {e.dtype} variable; not read")
                    continue
                pieces = slices.resolve(where, key, tuple(e.shape), e.dtype, e.slices, self.bundle.slice_entries.get)
                first = pieces[0].entry if pieces else e
            info = self.layers.get(n.layer_path)
            shard = e.shard if pieces is None else first.shard
            member = members.get(shard)
            if member is None:
                member = members[shard] = os.path.basename(shard)
            var = Variable.make(
                layer_path=n.layer_path, name=n.name, layer_name=n.layer_name or (n.layer_path.split("/")[0] if n.layer_path else ""),
                layer_class=n.layer_class or (info.class_name if info else None), shape=tuple(e.shape), dtype=e.dtype,
                h5path=key, file=shard, member=member,
                offset=e.offset if pieces is None else None,
                nbytes=e.size if pieces is None else sum(p.entry.size for p in pieces),
                naming=n.naming, kind=n.kind,
            )
            self.variables.append(var)
            if pieces is not None:
                self.partitioned[var.path] = pieces
            if n.slot_of is not None:
                self.slots[var.path] = n.slot_of
        self._entries = {v.path: entries[v.h5path] for v in self.variables}
        self._kept: dict[str, np.ndarray] = {}
        """Values held by :meth:`screen` for :meth:`read` (each returned once)."""
        if any(v.naming == "inferred" for v in self.variables):
            self.notes.append("some layer names are inferred (the checkpoint does not name nested models: pass --config)")

    def _layers_from_config(self) -> None:
        from .. import naming

        try:
            tree = naming.layer_tree(self.model_config)
        except Exception:  # a config ckptscan cannot walk names nothing; the bytes still scan
            return
        for p, info in tree.items():
            self.layers.setdefault(p, LayerInfo(p, info.path[-1], info.class_name, info.config))

    # --- values ---------------------------------------------------------------------------

    def screen(self, variables, keep=(), progress=None) -> dict[str, bool]:
        """Finiteness and CRC32C of every contiguous float16/32/64 tensor of ``variables``
        in one pass over the local shards, in shard order (:mod:`.tfbundle.screen`).

        A checksum mismatch is recorded in :attr:`integrity_failures` as the block stream
        records it, except for a tensor found not finite and not kept: the engine streams
        that one again (for its counts and indices), and the stream records it then.
        """
        if not self.direct_io:
            return {}
        keep = set(keep)
        items = []
        fds: dict[str, int] = {}
        for v in variables:
            path = v.path
            e = self._entries.get(path)
            if (e is None or v.offset is None or not v.nbytes or path in self.partitioned
                    or v.dtype not in ("float16", "float32", "float64")):
                continue
            fd = fds.get(v.file)
            if fd is None:
                fd = fds[v.file] = self._io.fd(v.file)
            items.append(screen_pass.Item(path, fd, v.offset, v.nbytes, _storage(v.dtype), e.crc32c, path in keep))
        if not items:
            return {}
        found = None
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # started when the index was read: join it from the front
            limit = sum(it.nbytes for it in items if not it.keep)
            tick = (lambda n: progress(min(n, limit))) if progress is not None else None
            if ahead.finish(tick):
                found = ahead.result(items)
        if found is None:
            found = screen_pass.screen(self.path, items, progress=progress)
        if not all(found.crc_ok.values()):
            by_path = {v.path: v for v in variables}
            for it in items:  # in the order given, as the stream would have recorded them
                if not found.crc_ok[it.path] and (found.finite[it.path] or it.keep):
                    self.integrity_failures.append((by_path[it.path], "stored bytes do not match the checksum in the index"))
        self._kept.update(found.values)
        return {p: f for p, f in found.finite.items() if f is not None}

    def read(self, var: Variable) -> np.ndarray:
        """The whole tensor as a new array, its CRC32C verified (as :meth:`iter_blocks`).

        A tensor of at most one block (BN vectors and biases, which the BN rules read
        whole) is read with one ``preadv`` straight into the array returned, with no
        generator, pooled buffer or block copy; larger ones and bfloat16 go through the
        block stream.
        """
        kept = self._kept.pop(var.path, None)
        if kept is not None:  # read and verified by screen()
            if not kept.dtype.isnative:  # stored little-endian, read on a big-endian machine
                kept = kept.astype(np.dtype(var.dtype))
            return kept.reshape(var.shape)
        entry = self._entries.get(var.path)
        if (entry is None or not entry.numeric or var.dtype == "bfloat16" or var.size == 0
                or var.size > DEFAULT_BLOCK_ELEMS or var.offset is None):
            return super().read(var)
        out = np.empty(var.size, dtype=_storage(var.dtype))
        got = os.preadv(self._io.fd(var.file), [out], var.offset)
        if got != var.nbytes:
            raise MalformedArchiveError(self.path, f"{var.path}: data shard ends early (truncated)")
        if entry.crc32c is not None and crc.mask(crc.crc32c(out, self.path)) != entry.crc32c:
            self.integrity_failures.append((var, "stored bytes do not match the checksum in the index"))
        return out.astype(np.dtype(var.dtype), copy=False).reshape(var.shape)

    def patch_refusal(self, var: Variable) -> str | None:
        """A partitioned variable's values live in several slice entries, each with its own
        checksum; the in-place patch path writes one tensor."""
        if var.path in self.partitioned:
            return PARTITIONED_REFUSAL
        return None

    def iter_blocks(self, var: Variable, block_elems: int = DEFAULT_BLOCK_ELEMS) -> Iterator[np.ndarray]:
        """Stream the tensor's values from its data shard, verifying its CRC32C on the way.

        A mismatch does not raise: it is appended to :attr:`integrity_failures` once the
        last block has been read (the values were yielded, the scan reports both).
        """
        entry = self._entries.get(var.path)
        if entry is None or not entry.numeric:
            raise MalformedArchiveError(self.path, f"{var.path}: {var.dtype} tensor holds no numeric values")
        if var.size == 0:
            return
        if var.path in self.partitioned:
            yield from self._iter_partitioned(var, block_elems)
            return
        running = yield from self._stream(var, max(1, min(block_elems, var.size)))
        if entry.crc32c is not None and crc.mask(running) != entry.crc32c:
            self.integrity_failures.append((var, "stored bytes do not match the checksum in the index"))

    def _stream(self, var: Variable, block_elems: int) -> Generator[np.ndarray, None, int]:
        """Yield a contiguous tensor's values block by block (``preadv`` into a pooled
        buffer); return the CRC32C of its stored bytes. :class:`.tfremote.RemoteTFCheckpoint`
        streams by ranged requests instead."""
        storage = _storage(var.dtype)
        step = storage.itemsize
        total = var.size
        raw = self._io.take(block_elems * step)
        decode = _Decoder(var.dtype, block_elems, self._io)
        running = 0
        try:
            fd = self._io.fd(var.file)
            pos = 0
            while pos < total:
                count = min(block_elems, total - pos)
                chunk = raw[: count * step]
                got = os.preadv(fd, [chunk], var.offset + pos * step)
                if got != count * step:
                    raise MalformedArchiveError(self.path, f"{var.path}: data shard ends early (truncated)")
                running = crc.crc32c(chunk, self.path, running)  # the buffer itself: no copy
                pos += count
                yield decode(raw[: count * step].view(storage))
            return running
        finally:
            decode.release()
            self._io.give(raw)


    def _pread_entry(self, entry, offset: int, nbytes: int) -> bytes:
        """``nbytes`` stored bytes of ``entry`` from ``offset`` (relative to the entry)."""
        return os.pread(self._io.fd(entry.shard), nbytes, entry.offset + offset)

    def _iter_partitioned(self, var: Variable, block_elems: int) -> Iterator[np.ndarray]:
        """A partitioned variable's values in the full tensor's C order, stitched from its
        slices; each slice's CRC32C is checked (a mismatch is an integrity failure)."""
        storage = _storage(var.dtype)
        for block, crcs in slices.stitch(self.path, var.path, var.shape, storage, self.partitioned[var.path],
                                         block_elems, self._pread_entry,
                                         lambda data, running: crc.crc32c(data, self.path, running)):
            for piece, running in crcs:
                if piece.entry.crc32c is not None and crc.mask(running) != piece.entry.crc32c:
                    self.integrity_failures.append(
                        (var, f"stored bytes of slice {slices.box(piece)} do not match the checksum in the index"))
            if block.size:
                yield bf16_to_f32(block) if var.dtype == "bfloat16" else block


def _name_from_key(key: str) -> names.Named:
    parts = key.split("/")
    if ".ATTRIBUTES" in parts:
        parts = parts[: parts.index(".ATTRIBUTES")]
    parts = [names.unescape(p) for p in parts if p]
    return names.Named(key, "/".join(parts[:-1]), parts[-1] if parts else key, "weight", "inferred", parts[0] if parts else "")


def _read_metadata(path: str, where: str):
    size = os.path.getsize(path)
    if size > MAX_METADATA_BYTES:
        raise UnsafeArchiveError(where, f"keras_metadata.pb is {size} bytes (too large)")
    return parse_metadata(Path(path).read_bytes(), where)


def parse_metadata(data: bytes, where: str):
    """(per-layer metadata, model config) of a SavedModel's ``keras_metadata.pb`` bytes."""
    saved = proto.decode(where, "keras_metadata.pb", proto.parse_saved_metadata, data)
    return names.keras_metadata(saved)
