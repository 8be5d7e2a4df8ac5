"""Keras 3 weight stores: ``*.weights.h5``, the ``model.weights.h5`` inside a ``.keras``
zip or an unzipped folder, and sharded ``*.weights.json`` sets.

The HDF5 tree holds ``<object path>/vars/<i>`` datasets (formats.md §3). Object paths
come from class names and attribute names, not layer names; :mod:`ckptscan.naming`
maps them back with ``config.json`` when one is available, else with the ``name``
attributes Keras ≥ 3.6 writes, else by heuristics (marked ``inferred``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import NamedTuple

import h5py

from .. import naming
from ..errors import FileTimeoutError, MalformedArchiveError
from ..runtime.memory import is_memory_failure
from ..runtime.timeout import expired
from ._errors import translate_errors
from .base import Checkpoint, LayerInfo, Variable, itemsize
from .h5util import (
    Attrs,
    Declined,
    attr_str,
    check_dataset,
    check_dataset_id,
    dataset_dtype,
    dtype_name,
    hard_link_tree,
    is_dataset,
    is_group,
    needs_hint,
    safe_child,
    walk,
    wrap,
)


@dataclass
class H5Part:
    """One HDF5 file of a store: where its bytes are and its open handle."""

    file: str
    """Physical file holding the bytes."""
    member: str | None
    """Zip member name or shard file name."""
    base: int
    """Offset of the HDF5 bytes within :attr:`file`."""
    h5: h5py.File
    fileobj: object | None = None
    """A file object h5py reads through (zip window), closed with the part."""


_INT = re.compile(r"^\d+$")


class _Meta(NamedTuple):
    """What indexing keeps of one dataset (no handle: it is reopened only if read through h5py)."""

    h5path: str
    shape: tuple
    dtype: str
    offset: int | None
    """Offset within the part's HDF5 bytes (contiguous little-endian data), else None."""
    stored: int


class V3Checkpoint(Checkpoint):
    """A Keras 3 weights store spread over one or more HDF5 parts."""

    def __init__(self, path: str, fmt: str, parts: list[H5Part], config: dict | None,
                 keras_version: str | None = None, cleanup: list[str] | None = None):
        super().__init__(path)
        self.format = fmt
        self.parts = parts
        self.model_config = config
        self.keras_version = keras_version
        self._cleanup = cleanup or []
        self._handles: dict[tuple, h5py.Dataset] = {}
        with translate_errors(path):
            self._index()

    def close(self) -> None:
        for part in self.parts:
            try:
                part.h5.close()
            except Exception:  # pragma: no cover - closing a broken handle
                pass
            if part.fileobj is not None:
                part.fileobj.close()
        for tmp in self._cleanup:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._cleanup = []

    def _dataset(self, var: Variable) -> h5py.Dataset:
        """The h5py dataset of ``var``, opened on first use (chunked or compact data)."""
        key = (var.file, var.member, var.h5path)
        ds = self._handles[key]
        if not isinstance(ds, h5py.Dataset):
            h5, h5path = ds
            ds = self._handles[key] = wrap(h5py.h5o.open(h5.id, h5path.encode("utf8")))
        return ds

    # --- indexing ------------------------------------------------------------
    def _index(self) -> None:
        try:
            objects, names = self._collect_fast()
        except Exception as exc:  # anything unusual: the exact walk decides (and words the refusal)
            if isinstance(exc, FileTimeoutError) or is_memory_failure(exc):
                raise  # out of memory: no second walk of the same file (translate_errors reports it)
            late = expired()
            if late is not None:
                raise late from exc
            objects, names = self._collect_exact()
        self._name(objects, names)
        from .optnames import name_optimizer_variables  # Keras 3 optimizer/vars/N → adam/bn_b_gamma_momentum

        self.variables = name_optimizer_variables(self.variables, self.model_config, self.layers)

    def _collect_fast(self) -> tuple[dict, dict]:
        """``vars`` groups and their datasets through h5py's low-level API.

        One ``H5Lvisit`` per part lists the tree (:func:`hard_link_tree`, which declines
        anything :func:`walk` would refuse or that is not a plain tree); then only the
        ``vars`` groups and their numbered datasets are opened, each once, and checked
        (:func:`check_dataset_id`). Any refusal or error raises, and :meth:`_index`
        falls back to :meth:`_collect_exact`, which reports it in the exact words and
        order of the full walk. No high-level h5py object is built; no dataset handle
        stays open.
        """
        objects: dict[str, dict[int, tuple[H5Part, _Meta]]] = {}
        names: dict[str, str] = {}
        h5o_open = h5py.h5o.open
        for part in self.parts:
            fid = part.h5.id
            filesize = fid.get_filesize()
            tree = hard_link_tree(fid)
            children: dict[tuple, list[str]] = {}
            for parts in tree:
                children.setdefault(parts[:-1], []).append(parts[-1])
            for parts in tree:
                if parts[-1] != "vars":
                    continue
                rel = "/".join(parts)
                gid = h5o_open(fid, rel.encode("utf8"))
                if not is_group(gid):
                    continue
                owner = rel[: -len("vars")].rstrip("/")
                owner = owner.replace("_layer_checkpoint_dependencies", "layers")
                slot = objects.setdefault(owner, {})
                nm = attr_str(Attrs(gid), "name")
                if nm is not None:
                    names.setdefault(owner, nm)
                for key in children.get(parts, ()):
                    if not _INT.match(key):
                        continue
                    i = int(key)
                    if i in slot and slot[i][0] is part:
                        raise Declined("two datasets with the same index")
                    dsid = h5o_open(gid, key.encode("utf8"))  # one link lookup, not a path from the root
                    if not is_dataset(dsid):
                        continue
                    dt = dsid.dtype
                    shape = dsid.shape
                    offset, stored = check_dataset_id(dsid, self.path, filesize, dt, shape)
                    hint = attr_str(Attrs(dsid), "dtype") if needs_hint(dt) else None
                    slot[i] = (part, _Meta(f"/{rel}/{key}", tuple(shape), dtype_name(dt, hint), offset, stored))
        return objects, names

    def _collect_exact(self) -> tuple[dict, dict]:
        """The full walk with high-level h5py objects: every refusal in its exact words."""
        objects: dict[str, dict[int, tuple[H5Part, h5py.Dataset]]] = {}
        names: dict[str, str] = {}
        for part in self.parts:
            for rel, obj in walk(part.h5, self.path):
                if not isinstance(obj, h5py.Group):
                    continue
                if rel == "vars" or rel.endswith("/vars"):
                    owner = rel[: -len("vars")].rstrip("/")
                    owner = owner.replace("_layer_checkpoint_dependencies", "layers")
                    slot = objects.setdefault(owner, {})
                    nm = attr_str(obj, "name")
                    if nm is not None:
                        names.setdefault(owner, nm)
                    for key in obj.keys():
                        child = safe_child(obj, key, self.path)
                        if not isinstance(child, h5py.Dataset) or not _INT.match(key):
                            continue
                        slot[int(key)] = (part, child)
        return objects, names

    def _resolve(self, part: H5Part, entry) -> _Meta:
        """A dataset's record: from the fast index as is, or checked now (exact path)."""
        if isinstance(entry, _Meta):
            return entry
        ds = entry
        hint = attr_str(ds, "dtype") if needs_hint(ds.dtype) else None
        offset, stored = check_dataset(ds, self.path)
        return _Meta(ds.name, tuple(ds.shape), dataset_dtype(ds, hint), offset, stored)

    def _name(self, objects: dict, names: dict) -> None:
        if not objects:
            raise MalformedArchiveError(self.path, "HDF5 file holds no Keras variables (no 'vars' groups)")
        tf_keras = naming.written_by_tf_keras(self.model_config, self.keras_version)
        cfg_map = naming.v3_object_map(self.model_config, tf_keras) if self.model_config else {}
        for info in cfg_map.values():
            p = "/".join(info.path)
            self.layers.setdefault(p, LayerInfo(p, info.path[-1], info.class_name, info.config))

        rank = {obj: i for i, obj in enumerate(cfg_map)}
        auto = 0  # unnamed variables seen so far (Keras numbers them per process)
        for owner in sorted(objects, key=lambda o: (rank.get(o, len(rank)), _natural(o))):
            slots = objects[owner]
            if not slots:
                continue
            is_opt = owner == "optimizer" or owner.startswith("optimizer/")
            is_metric = owner.startswith("metrics/")  # tf-keras .keras: compiled metric state
            info = cfg_map.get(owner)
            if is_metric:
                struct = owner
                cls, cfg, known_layer = "Metric", {}, True
                lname = owner.split("/")[1]
            elif is_opt:
                struct = owner
                cls, cfg, known_layer = "Optimizer", {}, True
                lname = names.get(owner, "optimizer")
            elif info is not None:
                struct = "/".join(info.alias_of or info.path)
                cls, cfg, known_layer = info.class_name, info.config, True
                lname = info.path[0]
                if names.get(owner) and names[owner] != info.path[-1]:
                    self.notes.append(f"{owner}: config says {info.path[-1]!r}, file says {names[owner]!r}")
            else:
                struct, known_layer = self._path_from_attrs(owner, names)
                cls = naming.class_from_path(owner)
                cfg = {}
                lname = struct.split("/", 1)[0]
            indices = sorted(slots)
            shapes = [tuple(slots[i][1].shape or ()) for i in indices]
            vnames, var_known = self._var_names(cls, cfg, shapes, is_opt, from_config=info is not None, tf_keras=tf_keras)
            if is_metric:
                # Mean/Sum-style metrics (the loss trackers) hold (total, count)
                base = re.sub(r"_\d+$", "", owner.rsplit("/", 1)[-1])
                vnames = ["total", "count"] if base in ("mean", "sum") and len(shapes) == 2 else None
                var_known = vnames is not None
            for pos, i in enumerate(indices):
                part, entry = slots[i]
                meta = self._resolve(part, entry)
                offset, stored, dtype, shape = meta.offset, meta.stored, meta.dtype, meta.shape
                name = vnames[pos] if vnames and pos < len(vnames) else f"vars/{i}"
                if name == naming.AUTO_NAME:
                    name = naming.auto_names(1, auto)[0]
                    auto += 1
                var = Variable(
                    layer_path=struct,
                    name=name,
                    layer_name=lname,
                    layer_class=cls,
                    shape=shape,
                    dtype=dtype,
                    h5path=meta.h5path,
                    file=part.file,
                    member=part.member,
                    offset=None if offset is None else part.base + offset,
                    nbytes=stored if stored else _nbytes(shape, dtype),
                    naming="known" if (known_layer and var_known and not is_opt) else "inferred",
                    kind="optimizer" if is_opt else "metric" if is_metric else "weight",
                )
                self._handles[(var.file, var.member, var.h5path)] = entry if isinstance(entry, h5py.Dataset) \
                    else (part.h5, meta.h5path)
                self.variables.append(var)

    def _path_from_attrs(self, owner: str, names: dict[str, str]) -> tuple[str, bool]:
        """Structural path from the ``name`` attributes of the owner and its ancestors."""
        elems = owner.split("/")
        out: list[str] = []
        all_named = True
        for k in range(1, len(elems) + 1):
            prefix = "/".join(elems[:k])
            if prefix in names:
                out.append(names[prefix])
            elif elems[k - 1] != "layers" and k == len(elems):
                out.append(elems[k - 1])
                all_named = False
        return "/".join(out) if out else owner, all_named and bool(out)

    @staticmethod
    def _var_names(cls, cfg, shapes, is_opt, from_config, tf_keras=False) -> tuple[list[str] | None, bool]:
        if is_opt:
            return None, False
        expected = naming.var_names(cls, cfg, tf_keras)
        if expected is not None and len(expected) == len(shapes):
            return expected, from_config
        if not from_config:
            for option in naming.var_name_options(cls, tf_keras):
                if len(option) == len(shapes):
                    return option, False
        guess = naming.guess_var_names(shapes)
        return guess, False


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    n = 1
    for d in shape:
        n *= d
    try:
        return n * itemsize(dtype)
    except TypeError:
        return 0


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
