"""One opener per layout, for local and remote sources alike (:class:`~.source.Source`).

=====================  ==============================================================
format id              what it is (detected from the bytes, never the file name)
=====================  ==============================================================
``keras-zip``          Keras 3 / tf-keras ``.keras`` zip with ``model.weights.h5``
``keras-dir``          unzipped v3 save: folder with ``config.json`` + weights
``keras3-weights``     Keras 3 weights store (``*.weights.h5``)
``keras3-sharded``     sharded weights index (``*.weights.json``) and its shards
``legacy-model``       legacy HDF5 full model (``model_weights``, ``model_config``)
``legacy-weights``     legacy HDF5 weights only (``layer_names`` at the root)
``tf-checkpoint``      TensorFlow checkpoint (``PREFIX.index`` + data shards), see :mod:`.tf`
``tf1-checkpoint``     TF1 ``Saver`` checkpoint (found as ``tf-checkpoint``, named on open)
``tf-savedmodel``      SavedModel folder (``variables/variables.index``)
=====================  ==============================================================

TensorFlow layouts (:func:`tf_layout`, :func:`open_tf_layout`) are read from local
paths (:mod:`.tf`) and from URIs (:mod:`.tfremote`: the index whole, the data shards by
ranged requests).
"""

from __future__ import annotations

import os
import zipfile

from ..errors import (
    CkptscanError,
    MalformedArchiveError,
    NotAnArchiveError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from ._errors import parse_json, translate_errors
from .base import Checkpoint
from .h5util import find_hdf5_superblock, has_attr, open_h5
from .integrity import integrity_problem
from .legacy import LegacyCheckpoint
from .source import LocalSource, Source
from .tf import detect_tf, open_tf
from .v3 import H5Part, V3Checkpoint
from .zipmember import (
    check_member_names,
    check_window,
    data_offset,
    inflate_to_temp,
    read_json_member,
)

WEIGHTS_MEMBER = "model.weights.h5"
SHARD_INDEX_MEMBER = "model.weights.json"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


# --- recognising a layout ----------------------------------------------------------------


def is_keras_dir(src: Source) -> bool:
    """True for an unzipped ``.keras`` folder: ``config.json`` and the weights (one file or an index)."""
    return src.child("config.json").is_file() and (
        src.child(WEIGHTS_MEMBER).is_file() or src.child(SHARD_INDEX_MEMBER).is_file())


def tf_layout(src: Source) -> str | None:
    """The TensorFlow format id of ``src`` (``tf-checkpoint``, ``tf-savedmodel``, or
    :data:`~.tf.DATA_SHARD` for a data shard named alone); None when it is no TensorFlow
    layout. A remote object that is a file costs no request beyond the one already made."""
    if isinstance(src, LocalSource):
        return detect_tf(src.path)
    from .tfremote import remote_layout  # remote sources only: fsspec stays unimported for local paths

    return remote_layout(src)


def sniff(src: Source) -> str:
    """``dir``, ``zip``, ``h5`` or ``json`` from the folder or the first bytes; CkptscanError if none."""
    if src.is_dir():
        if is_keras_dir(src):
            return "dir"
        raise NotAnArchiveError(src.where, "folder without config.json and model.weights.h5")
    head = src.head()
    if head[:4] in ZIP_MAGIC:
        return "zip"
    if find_hdf5_superblock(head) is not None:
        return "h5"
    if head.lstrip()[:1] == b"{":
        return "json"
    raise NotAnArchiveError(src.where, "not a Keras weight archive (neither zip, HDF5 nor a sharded index)")


def classify_h5(h5, where: str) -> str:
    """The format id of an open HDF5 file (``keras3-weights``, ``legacy-model``, ``legacy-weights``)."""
    with translate_errors(where):
        if has_attr(h5, "layer_names"):
            return "legacy-weights"
        if h5.get("model_weights", getlink=True) is not None:
            return "legacy-model"
        for key in ("layers", "vars", "optimizer", "_layer_checkpoint_dependencies"):
            if h5.get(key, getlink=True) is not None:
                return "keras3-weights"
    raise NotAnArchiveError(where, "HDF5 file, but not a Keras weight archive (no layer_names, model_weights or vars)")


def detect(src: Source) -> str:
    """The format id of ``src``, from its content. Raises a CkptscanError if none."""
    tf = tf_layout(src)
    if tf is not None:
        return tf
    kind = sniff(src)
    if kind == "dir":
        return "keras-dir"
    if kind == "zip":
        return "keras-zip"
    if kind == "json":
        shard_names(src, index_doc(src), top=True)
        return "keras3-sharded"
    h5, owner = src.open_h5()
    try:
        return classify_h5(h5, src.where)
    finally:
        h5.close()
        if owner is not None:
            owner.close()


# --- small JSON documents ----------------------------------------------------------------


def load_json(src: Source, what: str = "JSON") -> object:
    """A JSON document of at most :data:`~ckptscan.runtime.bounds.MAX_JSON_BYTES`."""
    raw = src.read_small(what)
    with translate_errors(src.where):
        return parse_json(raw, what)


def load_config(src: Source) -> dict:
    """A model ``config.json`` (for ``--config`` and unzipped folders)."""
    doc = load_json(src, "config")
    if not isinstance(doc, dict):
        raise MalformedArchiveError(src.where, "config file is not a JSON object")
    return doc


def metadata_version(raw: bytes) -> str | None:
    """``keras_version`` of a ``metadata.json``; None when absent or broken (it is informative only)."""
    try:
        meta = parse_json(raw, "metadata.json")
    except Exception:  # metadata is informative only: a broken one is ignored
        return None
    return str(meta.get("keras_version")) if isinstance(meta, dict) and meta.get("keras_version") else None


def index_doc(src: Source) -> object:
    """The parsed sharded index at ``src``."""
    return load_json(src)


def shard_names(src: Source, doc: object, where: str | None = None, top: bool = False) -> list[str]:
    """The shard file names a sharded index lists, in order, once each (the one ``weight_map`` parser).

    ``top``: ``src`` was named as a checkpoint, so a JSON document without a
    ``weight_map`` object is not a Keras index at all (NotAnArchiveError).
    """
    where = where or src.where
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict):
        if top:
            raise NotAnArchiveError(where, "JSON file that is not a sharded Keras weights index (no weight_map)")
        raise MalformedArchiveError(where, "sharded index without a weight_map object")
    names: list[str] = []
    for value in wm.values():
        for name in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if not isinstance(name, str):
                raise MalformedArchiveError(where, "weight_map values must be shard file names")
            if name not in names:
                names.append(name)
    if not names:
        raise MalformedArchiveError(where, "sharded index lists no shard files")
    return names


def safe_shard_name(name: str) -> bool:
    """True for a plain file name in the index's own folder (no traversal, no separator)."""
    return os.path.basename(name) == name and name not in ("", ".", "..") and "\\" not in name and "\x00" not in name


# --- the openers ---------------------------------------------------------------------------


def _check_local(src: Source, where: str, prefix: str = "") -> None:
    """MalformedArchiveError when a local file is cut short (:mod:`.integrity`). Remote
    sources skip this: their size may be unknown, and the reader reports a short object."""
    if isinstance(src, LocalSource):
        problem = integrity_problem(src.path)
        if problem:
            raise MalformedArchiveError(where, prefix + problem)


def open_source(src: Source, cfg: dict | None, screen_ahead: bool = False) -> Checkpoint:
    """Open the checkpoint at ``src`` (any layout). ``cfg`` names the variables of a bare
    weights file or sharded set; archives that carry their own config ignore it.
    ``screen_ahead``: see :class:`~.tf.TFCheckpoint` (the other layouts ignore it)."""
    tf = tf_layout(src)
    if tf is not None:
        return open_tf_layout(src, cfg, screen_ahead)
    _check_local(src, src.where)  # cut short at any byte: say so before HDF5/zip guess why
    kind = sniff(src)
    if kind == "dir":
        return open_dir(src)
    if kind == "zip":
        return open_zip(src)
    if kind == "json":
        return open_sharded(src, cfg, src.where, "keras3-sharded", top=True)
    return open_h5_file(src, cfg)


def open_tf_layout(src: Source, cfg: dict | None, screen_ahead: bool = False) -> Checkpoint:
    """A TensorFlow checkpoint named any way :func:`~.tf.locate` accepts (index,
    prefix, folder with a state file, SavedModel), local or remote. Never recovers a journal: readers
    never write (an interrupted fix is reported by the scan as JRN001)."""
    if isinstance(src, LocalSource):
        return open_tf(src.where, cfg, screen_ahead)
    from .tfremote import open_remote_tf

    return open_remote_tf(src, cfg)


def open_h5_file(src: Source, cfg: dict | None) -> Checkpoint:
    """A ``.weights.h5`` store or a legacy ``.h5``."""
    h5, owner = src.open_h5()
    try:
        fmt = classify_h5(h5, src.where)
        if fmt == "keras3-weights":
            return V3Checkpoint(src.where, fmt, [H5Part(src.where, None, 0, h5, owner)], cfg)
        return LegacyCheckpoint(src.where, h5, owner, cfg)
    except BaseException:
        h5.close()
        if owner is not None:
            owner.close()
        raise


def open_dir(src: Source) -> Checkpoint:
    """An unzipped ``.keras`` folder: ``config.json`` plus ``model.weights.h5`` or a sharded index."""
    where = src.where
    own = load_config(src.child("config.json"))
    version = None
    meta = src.child("metadata.json")
    if meta.is_file():
        try:
            version = metadata_version(meta.read_small("metadata"))
        except CkptscanError:  # informative only
            version = None
    weights = src.child(WEIGHTS_MEMBER)
    if weights.is_file():
        h5, owner = weights.open_h5(where)
        try:
            return V3Checkpoint(where, "keras-dir", [H5Part(weights.where, WEIGHTS_MEMBER, 0, h5, owner)], own, version)
        except BaseException:
            h5.close()
            if owner is not None:
                owner.close()
            raise
    return open_sharded(src.child(SHARD_INDEX_MEMBER), own, where, "keras-dir")


def open_sharded(index: Source, cfg: dict | None, where: str, fmt: str, top: bool = False) -> Checkpoint:
    """A sharded weights index (``*.weights.json``) and the shards next to it."""
    doc = index_doc(index)
    index.release()
    shards = shard_names(index, doc, where, top)
    parts: list[H5Part] = []
    try:
        for name in shards:
            if not safe_shard_name(name):
                raise UnsafeArchiveError(where, f"shard name {name!r} points outside the index's folder (path traversal)")
            shard = index.sibling(name)
            if not shard.is_file():
                raise MalformedArchiveError(where, f"shard {name} is missing")
            _check_local(shard, where, f"shard {name}: ")
            try:
                h5, owner = shard.open_h5()
            except CkptscanError as exc:  # report against the index the user named
                raise type(exc)(where, f"shard {name}: {exc.reason}") from exc
            parts.append(H5Part(shard.where, name, 0, h5, owner))
        return V3Checkpoint(where, fmt, parts, cfg)
    except BaseException:
        for part in parts:
            part.h5.close()
            if part.fileobj is not None:
                part.fileobj.close()
        raise


def open_zip(src: Source) -> Checkpoint:
    """A ``.keras`` zip. On any error nothing stays open and no temp file remains."""
    where = src.where
    fp = src.reader()
    try:
        with translate_errors(where):
            zf = zipfile.ZipFile(fp)  # reads the end record and central directory only
        with zf:  # closing the ZipFile leaves the reader it was given open
            return _zip_checkpoint(src, zf, fp)
    except BaseException:
        fp.close()
        raise
    finally:
        if not src.keeps_reader:
            fp.close()


def _zip_checkpoint(src: Source, zf: zipfile.ZipFile, fp) -> Checkpoint:
    where = src.where
    owner = fp if src.keeps_reader else None
    part = None
    cleanup: list[str] = []
    try:
        with translate_errors(where):
            names = [i.filename for i in zf.infolist()]
            check_member_names(names, where)
            if "config.json" not in names:
                if "model.weights.npz" in names or WEIGHTS_MEMBER in names:
                    raise MalformedArchiveError(where, "zip archive without config.json")
                raise NotAnArchiveError(where, "zip archive that is not a .keras model (no config.json)")
            if WEIGHTS_MEMBER not in names:
                if "model.weights.npz" in names:
                    raise UnsupportedFormatError(where, "weights are pickled model.weights.npz; not analysed (never unpickled)")
                raise MalformedArchiveError(where, "zip archive without model.weights.h5")
            for member in ("config.json", "metadata.json", WEIGHTS_MEMBER):
                if names.count(member) > 1:
                    raise UnsafeArchiveError(where, f"zip archive has {names.count(member)} members named {member} (ambiguous)")
            config = parse_json(read_json_member(zf, "config.json", where), "config.json")
            if not isinstance(config, dict):
                raise MalformedArchiveError(where, "config.json is not a JSON object")
            version = None
            if "metadata.json" in names:
                version = metadata_version(read_json_member(zf, "metadata.json", where))
            info = zf.getinfo(WEIGHTS_MEMBER)
            if info.flag_bits & 0x1:
                raise UnsupportedFormatError(where, "model.weights.h5 is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                start = data_offset(fp, info, where)
                check_window(fp, info, start, where)
                window = src.window(fp, start, info.file_size)
                part = H5Part(where, WEIGHTS_MEMBER, start, None, window)
                part.h5 = open_h5(window, where)
            else:
                cleanup.append(inflate_to_temp(zf, info, where))
                part = H5Part(cleanup[0], WEIGHTS_MEMBER, 0, None, owner)
                part.h5 = open_h5(cleanup[0], where)
        return V3Checkpoint(where, "keras-zip", [part], config, version, cleanup)
    except BaseException:
        if part is not None:
            if part.h5 is not None:
                part.h5.close()
            if part.fileobj is not None and part.fileobj is not owner:
                part.fileobj.close()
        for tmp in cleanup:
            try:
                os.unlink(tmp)
            except OSError:  # pragma: no cover
                pass
        raise
