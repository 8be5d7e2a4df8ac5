"""Legacy HDF5 (Keras 1/2, tf.keras, Keras 3 ``legacy_h5_format``): full models with
``model_weights`` and weights-only files with ``layer_names`` at the root.

Names come straight from the ``weight_names`` attributes (formats.md §5): a weight
``resnet101v2/conv5_block3_2_bn/moving_variance:0`` in group ``resnet101v2`` is variable
``moving_variance`` of layer ``resnet101v2/conv5_block3_2_bn``. The order of groups is
taken from ``layer_names`` (chunk-aware), never from iterating the file.
"""

from __future__ import annotations

import json
import re

import h5py

from .. import naming
from ..errors import MalformedArchiveError
from ._errors import translate_errors
from .base import Checkpoint, LayerInfo, Variable
from .h5util import (
    Attrs,
    attr_str,
    check_dataset_id,
    chunked_attr,
    dtype_name,
    encode_name,
    h5name,
    is_dataset,
    is_group,
    only_hard_links,
    open_path,
    safe_child,
    wrap,
)

_SUFFIX = re.compile(r":\d+$")
#: Largest ``model_config`` attribute parsed as JSON.
MAX_CONFIG_CHARS = 64 << 20


class LegacyCheckpoint(Checkpoint):
    """A legacy Keras HDF5 file (full model or weights only).

    ``config`` (a model config, ``config=`` / ``--config``) names the layers of a
    weights-only file, which carries none: without it, a model nested two deep loses the
    middle model's name (tf-keras writes only the outer model's group and the leaf
    layers' scopes). A full-model file uses its own ``model_config`` and ignores it.
    """

    def __init__(self, path: str, h5: h5py.File, owner: object | None = None, config: dict | None = None):
        super().__init__(path)
        self.h5 = h5
        self._owner = owner
        """A file object h5py reads through (a remote reader), closed with the checkpoint."""
        self._given_config = config if isinstance(config, dict) else None
        self._handles: dict[str, h5py.Dataset | None] = {}
        self._filesize = 0
        with translate_errors(path):
            self._index()

    def close(self) -> None:
        try:
            self.h5.close()
        except Exception:  # pragma: no cover
            pass
        if self._owner is not None:
            self._owner.close()

    def _dataset(self, var: Variable) -> h5py.Dataset:
        """The h5py dataset of ``var``, opened on first use (chunked or compact data)."""
        ds = self._handles[var.h5path]
        if ds is None:
            ds = self._handles[var.h5path] = wrap(h5py.h5o.open(self.h5.id, encode_name(var.h5path)))
        return ds

    def _index(self) -> None:
        """Walk ``layer_names`` → ``weight_names`` → datasets on h5py's low-level ids.

        :func:`safe_open` and :func:`check_dataset_id` are :func:`safe_child` and
        ``check_dataset`` without the high-level objects (same checks, same messages);
        no dataset handle stays open after indexing.
        """
        root = self.h5
        self._filesize = root.id.get_filesize()
        if "layer_names" in root.attrs or "layer_names0" in root.attrs:
            group, self.format = root, "legacy-weights"
        else:
            group = safe_child(root, "model_weights", self.path)
            if not isinstance(group, h5py.Group):
                raise MalformedArchiveError(self.path, "legacy HDF5 without a model_weights group")
            self.format = "legacy-model"
        self.keras_version = attr_str(root, "keras_version") or attr_str(group, "keras_version")
        raw = attr_str(root, "model_config")
        if raw is not None:
            if len(raw) > MAX_CONFIG_CHARS:
                raise MalformedArchiveError(self.path, f"model_config attribute is {len(raw)} characters (too large)")
            try:
                self.model_config = naming.top_config(json.loads(raw))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise MalformedArchiveError(self.path, f"model_config is not valid JSON ({exc})") from exc
            if not isinstance(self.model_config, dict):
                raise MalformedArchiveError(self.path, "model_config is not a JSON object")
        elif self._given_config is not None:
            self.model_config = naming.top_config(self._given_config)
        tree = naming.layer_tree(self.model_config) if self.model_config else {}
        # components in the longest layer name (a name may hold "/"): no longer run of scopes
        # is tried against the config (weight names are at most MAX_GROUP_DEPTH deep)
        self._name_parts = max((info.path[-1].count("/") + 1 for info in tree.values()), default=1)
        for p, info in tree.items():
            self.layers.setdefault(p, LayerInfo(p, info.path[-1], info.class_name, info.config))

        layer_names = chunked_attr(group, "layer_names")
        if layer_names is None:
            raise MalformedArchiveError(self.path, "legacy HDF5 without a layer_names attribute")
        names = list(layer_names)
        if "top_level_model_weights" in group and "top_level_model_weights" not in names:
            names.append("top_level_model_weights")
        gid = group.id
        hard = only_hard_links(root.id)
        for lname in names:
            lgid = open_path(gid, lname, self.path, hard)
            if lgid is None:
                raise MalformedArchiveError(self.path, f"layer {lname!r} is listed in layer_names but has no group")
            if not (lgid is gid or is_group(lgid)):
                raise MalformedArchiveError(self.path, f"layer {lname!r} is not a group")
            wnames = chunked_attr(group if lgid is gid else Attrs(lgid), "weight_names") or []
            top = "" if lname == "top_level_model_weights" else lname
            for wn in wnames:
                ds = open_path(lgid, wn, self.path, hard)
                if ds is None or not is_dataset(ds):
                    raise MalformedArchiveError(self.path, f"weight {wn!r} of layer {lname!r} is missing")
                layer_path, var = self._place(top, wn, tree)
                info = tree.get(layer_path)
                if info is not None and info.alias_of is not None:
                    # a shared layer's second copy: Keras names it by its first traversal
                    canon = "/".join(info.alias_of)
                    self.notes.append(f"{canon}/{var}: shared layer stored twice; second copy at {h5name(ds)}")
                    layer_path = canon
                self._add(ds, layer_path, var, top or lname, "weight", tree)
        opt = root.get("optimizer_weights", getlink=True)
        if opt is not None:
            og = safe_child(root, "optimizer_weights", self.path)
            for wn in chunked_attr(og, "weight_names") or []:
                ds = open_path(og.id, wn, self.path, hard)
                if ds is None or not is_dataset(ds):
                    raise MalformedArchiveError(self.path, f"optimizer weight {wn!r} is missing")
                comps = _SUFFIX.sub("", wn).split("/")
                layer_path = "/".join(["optimizer"] + comps[:-1])
                self._add(ds, layer_path, comps[-1], "optimizer", "optimizer", tree)

    def _place(self, group_name: str, weight_name: str, tree: dict) -> tuple[str, str]:
        """(layer path, variable name) of one legacy weight name inside its group.

        The weight name is ``<scopes>/<owner>/<var>`` where the scopes are name scopes
        active when the variable was created (NASNet's ``normal_A_block_0/…``, an outer
        model's name, uniquified ``x_1`` names). The group is the top-level layer; the
        part of the name after the group's own name (or the whole name when it does not
        occur) is resolved against the model config for nested models.
        """
        comps = [c for c in _SUFFIX.sub("", weight_name).split("/") if c]
        var = comps[-1] if comps else weight_name
        owner = comps[:-1]
        if not group_name:
            return "/".join(owner), var
        cut = naming.scope_end(owner, group_name)
        if cut is not None:
            owner = owner[cut + 1 :]
        info = tree.get(group_name)
        if info is None or not naming.is_container_class(info.class_name, info.config):
            # a leaf layer: what follows its name is a sub-layer chain (lstm_cell, query…)
            return "/".join([group_name] + owner), var
        resolved = _resolve_nested(group_name, owner, tree, self._name_parts)
        if resolved is not None:
            return resolved, var
        return "/".join([group_name] + owner), var

    def _add(self, dsid, layer_path: str, var: str, lname: str, kind: str, tree: dict) -> None:
        dt = dsid.dtype
        shape = dsid.shape
        offset, stored = check_dataset_id(dsid, self.path, self._filesize, dt, shape)
        info = tree.get(layer_path)
        cls = info.class_name if info else None
        v = Variable(
            layer_path=layer_path,
            name=var,
            layer_name=lname,
            layer_class=cls,
            shape=tuple(shape),
            dtype=dtype_name(dt, _policy_hint(info)),
            h5path=h5name(dsid),
            file=self.path,
            member=None,
            offset=offset,
            nbytes=stored,
            naming="known",
            kind=kind,
        )
        self._handles[v.h5path] = None  # opened by _dataset if ever read through h5py
        self.variables.append(v)


def _resolve_nested(group: str, owner: list[str], tree: dict, name_parts: int) -> str | None:
    """Place a nested model's weight (``[scopes…, inner_layer, sub…]``) in the config tree
    (``name_parts``: components in the longest layer name of the tree)."""
    cur = group
    i = 0
    while i < len(owner):
        c = owner[i]
        hit = None
        # the longest run of scopes that names a layer of ``cur``: a layer name may hold
        # "/" (``conv1/bn`` beside a layer ``bn``; ``Conv/BatchNorm`` beside ``Conv``); no
        # run longer than the config's longest layer name is tried
        for j in range(min(len(owner), i + name_parts), i, -1):
            if f"{cur}/{'/'.join(owner[i:j])}" in tree:
                hit = f"{cur}/{'/'.join(owner[i:j])}"
                i = j - 1
                break
        else:
            for name in (c, re.sub(r"_\d+$", "", c)):
                hits = [p for p in tree if p.startswith(cur + "/") and p.rsplit("/", 1)[-1] == name]
                if len(hits) > 1:  # a shared layer's later appearances are aliases of the first
                    hits = [p for p in hits if tree[p].alias_of is None] or hits
                if len(hits) == 1:
                    hit = hits[0]
                    break
        i += 1
        if hit is None:
            continue  # a name scope, not a layer
        cur = hit
        info = tree[cur]
        if not naming.is_container_class(info.class_name, info.config):
            return "/".join([cur] + owner[i:])
    return None


def _policy_hint(info) -> str | None:
    if info is None:
        return None
    pol = naming.policy_name(info.config) or ""
    return "bfloat16" if "bfloat16" in pol else None
