"""Format detection by content and the single entry point :func:`open_checkpoint`.

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
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from ..errors import CkptscanError, MalformedArchiveError, NotAnArchiveError, UnsafeArchiveError, UnsupportedFormatError
from ..limits import MAX_JSON_BYTES
from .base import Checkpoint, LayerInfo, Variable
from .h5util import find_hdf5_superblock, has_attr, open_h5, parse_json, translate_errors
from .zipmember import FileWindow, check_member_names, check_window, data_offset, inflate_to_temp, read_json_member

__all__ = ["Checkpoint", "LayerInfo", "Variable", "detect", "open_checkpoint"]

WEIGHTS_MEMBER = "model.weights.h5"
#: Largest JSON document (sharded index, --config file) read.
MAX_JSON_FILE = MAX_JSON_BYTES


def detect(path: str | os.PathLike) -> str:
    """The format id of ``path``, from its content. Raises a CkptscanError if none."""
    from .tf import detect_tf

    tf_format = detect_tf(path)
    if tf_format is not None:
        return tf_format
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file() and ((p / WEIGHTS_MEMBER).is_file() or (p / "model.weights.json").is_file()):
            return "keras-dir"
        raise NotAnArchiveError(p, "folder without config.json and model.weights.h5")
    head = _head(p)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "keras-zip"
    if find_hdf5_superblock(head) is not None:
        with open_h5(str(p), str(p)) as h5, translate_errors(str(p)):
            return _classify_h5(h5, str(p))
    if head.lstrip()[:1] == b"{":
        doc = _load_json(p)
        if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
            return "keras3-sharded"
        raise NotAnArchiveError(p, "JSON file that is not a sharded Keras weights index (no weight_map)")
    raise NotAnArchiveError(p, "not a Keras weight archive (neither zip, HDF5 nor a sharded index)")


def _head(p: Path) -> bytes:
    try:
        with open(p, "rb") as fh:
            head = fh.read(8192)
    except FileNotFoundError as exc:
        raise NotAnArchiveError(p, "no such file or directory") from exc
    except IsADirectoryError as exc:  # pragma: no cover - handled above
        raise NotAnArchiveError(p, "is a directory") from exc
    except PermissionError as exc:
        raise NotAnArchiveError(p, "permission denied") from exc
    except OSError as exc:
        raise NotAnArchiveError(p, f"cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise NotAnArchiveError(p, "empty file")
    return head


def _classify_h5(h5, where: str) -> str:
    if has_attr(h5, "layer_names"):
        return "legacy-weights"
    link = h5.get("model_weights", getlink=True)
    if link is not None:
        return "legacy-model"
    for key in ("layers", "vars", "optimizer", "_layer_checkpoint_dependencies"):
        if h5.get(key, getlink=True) is not None:
            return "keras3-weights"
    raise NotAnArchiveError(where, "HDF5 file, but not a Keras weight archive (no layer_names, model_weights or vars)")


def _load_json(p: Path, what: str = "JSON") -> object:
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise NotAnArchiveError(p, "no such file or directory") from exc
    if size > MAX_JSON_FILE:
        raise UnsafeArchiveError(p, f"{what} file is {size} bytes (too large)")
    with translate_errors(str(p)):
        return parse_json(p.read_bytes(), what)


def load_config(path: str | os.PathLike) -> dict:
    """Read a model ``config.json`` (for ``--config``)."""
    doc = _load_json(Path(path), "config")
    if not isinstance(doc, dict):
        raise MalformedArchiveError(path, "config file is not a JSON object")
    return doc


def _recover_interrupted_fix(path: str | os.PathLike) -> None:
    """Roll back a ``ckptscan fix`` killed mid-write (its journal sits next to ``path``)."""
    from ..patch.safety import needs_recovery, recover

    if needs_recovery(path):
        recover(path)


def open_checkpoint(path: str | os.PathLike, config: str | os.PathLike | dict | None = None) -> Checkpoint:
    """Open any supported Keras weight archive for reading.

    ``config`` (a ``config.json`` path or dict) names the variables of a bare
    ``.weights.h5`` or sharded set; archives that carry their own config ignore it.
    Raises :class:`~ckptscan.errors.CkptscanError` subclasses for unreadable input.
    """
    from ..limits import memory_recover
    from .legacy import LegacyCheckpoint
    from .v3 import H5Part, V3Checkpoint

    memory_recover()  # the previous file hit --max-memory: re-arm the cap now that it is closed
    if "://" in str(path):  # s3://, http(s)://, file://…: fsspec, optional extra (ckptscan.remote)
        from ..remote import open_any
        return open_any(str(path), config=config)
    _recover_interrupted_fix(path)
    where = str(path)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    fmt = detect(path)
    if fmt.startswith("tf-"):
        from .tf import locate, open_tf

        # a fix journals under the name it was given (the .index, the folder, the
        # SavedModel): whichever name this open uses, roll an interrupted one back first
        prefix = locate(path)[0]
        for unit in {prefix + ".index", os.path.dirname(prefix), os.path.dirname(os.path.dirname(prefix))}:
            if unit and unit != where:
                _recover_interrupted_fix(unit)
        return open_tf(path, cfg)
    if fmt == "keras-zip":
        return _open_zip(where, cfg)
    if fmt == "keras-dir":
        p = Path(path)
        own = load_config(p / "config.json")
        version = _metadata_version((p / "metadata.json").read_bytes()) if (p / "metadata.json").is_file() else None
        if (p / WEIGHTS_MEMBER).is_file():
            h5 = open_h5(str(p / WEIGHTS_MEMBER), where)
            try:
                return V3Checkpoint(where, "keras-dir", [H5Part(str(p / WEIGHTS_MEMBER), WEIGHTS_MEMBER, 0, h5)], own, version)
            except BaseException:
                h5.close()
                raise
        return _open_sharded(p / "model.weights.json", own, where, "keras-dir")
    if fmt == "keras3-sharded":
        return _open_sharded(Path(path), cfg, where, "keras3-sharded")
    h5 = open_h5(where, where)
    try:
        if fmt == "keras3-weights":
            return V3Checkpoint(where, fmt, [H5Part(where, None, 0, h5)], cfg)
        return LegacyCheckpoint(where, h5)
    except BaseException:
        h5.close()
        raise


def _metadata_version(raw: bytes) -> str | None:
    try:
        meta = parse_json(raw, "metadata.json")
    except Exception:  # metadata is informative only: a broken one is ignored
        return None
    return str(meta.get("keras_version")) if isinstance(meta, dict) and meta.get("keras_version") else None


def _open_zip(where: str, override: dict | None) -> Checkpoint:
    """Open a local ``.keras`` zip. On any error nothing stays open and no temp file remains."""
    with translate_errors(where):
        zf = zipfile.ZipFile(where)
    with zf, open(where, "rb") as fp:
        return keras_zip_checkpoint(where, zf, fp, lambda start, size: FileWindow(where, start, size))


def keras_zip_checkpoint(where: str, zf: zipfile.ZipFile, fp, make_window, owner=None) -> Checkpoint:
    """The checkpoint of an open ``.keras`` zip, local or remote.

    ``fp`` is a seekable binary file over the archive (for the member's local header),
    ``make_window(start, size)`` a file object over the stored weights member, and
    ``owner`` an object closed with the checkpoint when the member had to be inflated.
    On any error nothing stays open and no temp file remains.
    """
    from .v3 import H5Part, V3Checkpoint

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
                version = _metadata_version(read_json_member(zf, "metadata.json", where))
            info = zf.getinfo(WEIGHTS_MEMBER)
            if info.flag_bits & 0x1:
                raise UnsupportedFormatError(where, "model.weights.h5 is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                start = data_offset(fp, info, where)
                check_window(fp, info, start, where)
                window = make_window(start, info.file_size)
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


def _open_sharded(index: Path, cfg: dict | None, where: str, fmt: str) -> Checkpoint:
    from .v3 import H5Part, V3Checkpoint

    doc = _load_json(index)
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise MalformedArchiveError(where, "sharded index without a weight_map object")
    shards: list[str] = []
    for value in doc["weight_map"].values():
        for name in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
            if not isinstance(name, str):
                raise MalformedArchiveError(where, "weight_map values must be shard file names")
            if name not in shards:
                shards.append(name)
    if not shards:
        raise MalformedArchiveError(where, "sharded index lists no shard files")
    parts = []
    try:
        for name in shards:
            if os.path.basename(name) != name or name in ("", ".", "..") or "\\" in name or "\x00" in name:
                raise UnsafeArchiveError(where, f"shard name {name!r} points outside the index's folder (path traversal)")
            shard = index.parent / name
            if not shard.is_file():
                raise MalformedArchiveError(where, f"shard {name} is missing")
            try:
                h5 = open_h5(str(shard), str(shard))
            except CkptscanError as exc:  # report against the index the user named
                raise type(exc)(where, f"shard {name}: {exc.reason}") from exc
            parts.append(H5Part(str(shard), name, 0, h5))
        return V3Checkpoint(where, fmt, parts, cfg)
    except BaseException:
        for part in parts:
            part.h5.close()
        raise
