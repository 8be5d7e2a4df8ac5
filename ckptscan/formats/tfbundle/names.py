"""Checkpoint keys → the layer paths and variable names tf-keras reports.

Object-based checkpoints (TF2: tf-keras ``save_weights`` in TF format,
``tf.train.Checkpoint``, SavedModel ``variables/``) store a ``TrackableObjectGraph``
under ``_CHECKPOINTABLE_OBJECT_GRAPH`` (``core/protobuf/trackable_object_graph.proto``,
``python/checkpoint/``): nodes joined by named edges, variables as nodes with a
``VARIABLE_VALUE`` attribute whose ``full_name`` is the variable's own name
(``bi/forward_lstm/lstm_cell/kernel``) and ``checkpoint_key`` its bundle key, optimizer
slots as ``slot_variables`` of the optimizer node (original variable, slot name, slot
node). tf-keras containers (Functional, Sequential) name their edges ``layer-N`` (the
N-th entry of ``model.layers``) and ``layer_with_weights-N``.

The naming rule is the one ``tests/formats/test_naming_keras.py`` states for Keras: for a
variable owned by a layer L reached through nested containers P (top model excluded),
layer path = P + [L.name] + the components of ``full_name`` after L's name, variable
name = the last component. L's name is the first component of ``full_name`` (tf-keras
creates a layer's variables under its name scope) unless a model description says
otherwise; container names P come from ``keras_metadata.pb`` (SavedModel) or a model
config (``--config``); without either a nested container is named by its edge
(``layer_with_weights-0``) and the variable is marked ``inferred``.

TF1 checkpoints (``tf.compat.v1.train.Saver``) have no object graph: keys are the
variable names (``conv1/batch_normalization/moving_variance``) and optimizer slots sit
beside their variable (``…/kernel/Adam``, ``…/kernel/Adam_1``, ``…/kernel/Momentum``).

Key escaping (``python/trackable/trackable_utils.py``): inside one local name ``/`` is
written ``.S`` and ``.`` is written ``..``; :func:`unescape` reverses it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ... import naming
from ...errors import MalformedArchiveError
from . import proto

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"
_CONTAINER_EDGE = re.compile(r"layer(?:_with_weights)?-(\d+)")
_LAYER_EDGE = re.compile(r"layer-(\d+)")
#: TF1 optimizer slot suffixes (``tf.compat.v1.train`` optimizers) → slot name.
TF1_SLOTS = {
    "Adam": "m", "Adam_1": "v", "Momentum": "momentum", "RMSProp": "rms", "RMSProp_1": "momentum",
    "Adagrad": "accumulator", "Ftrl": "accum", "Ftrl_1": "linear", "Adadelta": "accum", "Adadelta_1": "accum_update",
    "AdagradDA": "gradient_accumulator", "AdagradDA_1": "gradient_squared_accumulator", "Nadam": "m", "Nadam_1": "v",
}
#: TF1 non-slot training state (never model weights).
TF1_STATE = re.compile(r"(?:^|/)(?:global_step|beta1_power|beta2_power|[A-Za-z]+_power(?:_\d+)?)$")


def unescape(local_name: str) -> str:
    """Undo ``trackable_utils.escape_local_name`` (``.S`` → ``/``, ``..`` → ``.``)."""
    if "." not in local_name:
        return local_name
    out = []
    i = 0
    while i < len(local_name):
        ch = local_name[i]
        if ch == "." and i + 1 < len(local_name) and local_name[i + 1] in ".S":
            out.append("." if local_name[i + 1] == "." else "/")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class Named:
    """The name of one bundle key."""

    key: str
    layer_path: str
    name: str
    kind: str = "weight"
    naming: str = "known"
    layer_name: str = ""
    layer_class: str | None = None
    slot_of: tuple[str, str] | None = None
    """For an optimizer slot: (the variable's ``layer_path/name``, slot name)."""
    full_name: str = ""
    """The variable's own name from the object graph (``bn_b/moving_variance``)."""


@dataclass
class LayerMeta:
    """What a model description says about one object-graph node (a layer)."""

    name: str
    class_name: str | None = None
    config: dict | None = None


# --- object graph ----------------------------------------------------------------------


def check_graph(nodes: list[proto.Node], where: str) -> None:
    """Every reference names an existing node; no slot variable is its own variable."""
    n = len(nodes)
    if n == 0:
        raise MalformedArchiveError(where, "object graph has no nodes")
    for i, node in enumerate(nodes):
        for cid, _name in node.children:
            if not 0 <= cid < n:
                raise MalformedArchiveError(where, f"object graph: node {i} refers to missing node {cid}")
        for s in node.slots:
            for ref in (s.original, s.slot):
                if not 0 <= ref < n:
                    raise MalformedArchiveError(where, f"object graph: node {i} refers to missing node {ref}")
    for node in nodes:
        for ref in node.slots:
            if ref.slot == ref.original:
                raise MalformedArchiveError(where, f"object graph: node {ref.slot} is a slot of itself (cycle)")
    # A graph may hold cycles (tf-keras models list themselves as their own child
    # "root"): the depth-first walk (_Paths) enters each node once, so none can loop.


#: Deepest object path followed (tf-keras models nest a few levels; a hostile chain
#: of a million nodes must not cost a million-long path per variable).
MAX_DEPTH = 512


class _Paths:
    """First path of every node from the root in depth-first pre-order (children in their
    stored order: the model's own order of layers and variables).

    Each node is entered once (cycles cannot loop) and only down to :data:`MAX_DEPTH`;
    a node keeps a pointer to its parent, so memory is linear in the nodes and a path
    is rebuilt in at most ``MAX_DEPTH`` steps. :attr:`edges` holds every edge name from
    each parent to each child (made when first asked for: only a config is matched
    against it).
    """

    def __init__(self, nodes: list[proto.Node]):
        self.parent: dict[int, tuple[int, str]] = {}
        self.order: list[int] = [0]
        self.truncated = False
        self.nodes = nodes
        seen = {0}
        stack = [(0, 0, 0)]
        while stack:
            cur, i, depth = stack.pop()
            kids = nodes[cur].children
            if i >= len(kids):
                continue
            stack.append((cur, i + 1, depth))
            cid, name = kids[i]
            if cid in seen:
                continue
            if depth + 1 > MAX_DEPTH:
                self.truncated = True
                continue
            seen.add(cid)
            self.parent[cid] = (cur, name)
            self.order.append(cid)
            stack.append((cid, 0, depth + 1))

    @functools.cached_property
    def edges(self) -> dict[int, dict[int, list[str]]]:
        """child id → parent id → the names of the edges between them."""
        edges: dict[int, dict[int, list[str]]] = {}
        for cur, node in enumerate(self.nodes):
            for cid, name in node.children:
                edges.setdefault(cid, {}).setdefault(cur, []).append(name)
        return edges

    def __contains__(self, nid: int) -> bool:
        return nid == 0 or nid in self.parent

    def steps(self, nid: int) -> list[tuple[int, str]]:
        out = []
        while nid in self.parent:
            cur, name = self.parent[nid]
            out.append((nid, name))
            nid = cur
        return out[::-1]


def _is_container(node: proto.Node) -> bool:
    return any(_CONTAINER_EDGE.fullmatch(name) for _cid, name in node.children)


class _Containers(dict):
    """node id → :func:`_is_container`, each node's edges matched once per graph (the
    walk of every variable asks again about the model and the layers above it)."""

    def __init__(self, nodes: list[proto.Node]):
        super().__init__()
        self.nodes = nodes

    def __missing__(self, nid: int) -> bool:
        value = self[nid] = _is_container(self.nodes[nid])
        return value


_DEVICE_SUFFIX = re.compile(r":\d+$")


def _variable_attr(node: proto.Node) -> proto.Attribute | None:
    for a in node.attributes:
        if a.name == VARIABLE_VALUE:
            return a
    return None


def _config_layers(cfg: dict | None) -> list[dict] | None:
    """``layers`` of a container config as ``model.layers`` orders them (Sequential's
    ``model.layers`` leaves out the InputLayer its config lists)."""
    if not isinstance(cfg, dict):
        return None
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else None
    layers = inner.get("layers") if inner is not None else None
    if not isinstance(layers, list):
        return None
    if cfg.get("class_name") == "Sequential":
        layers = [entry for entry in layers if not (isinstance(entry, dict) and entry.get("class_name") == "InputLayer")]
    return [entry if isinstance(entry, dict) else {} for entry in layers]


def object_names(
    nodes: list[proto.Node],
    where: str,
    metadata: dict[str, LayerMeta] | None = None,
    model_config: dict | None = None,
) -> dict[str, Named]:
    """Bundle key → :class:`Named` for every variable of an object graph.

    ``metadata`` maps SavedModel node paths (``root.layer_with_weights-0``) to layer
    descriptions (from ``keras_metadata.pb``); ``model_config`` (a tf-keras model
    config, ``{class_name, config}``) names the containers of a checkpoint without one.
    """
    check_graph(nodes, where)
    paths = _Paths(nodes)
    out: dict[str, Named] = {}
    slot_parent: dict[int, tuple[int, str]] = {}
    for node in nodes:
        for s in node.slots:
            slot_parent.setdefault(s.slot, (s.original, s.slot_name))
    containers = _Containers(nodes)
    named_by_node: dict[int, Named] = {}
    for nid in paths.order:  # depth-first pre-order: the model's own order of layers and variables
        attr = _variable_attr(nodes[nid])
        if attr is None or not attr.checkpoint_key:
            continue
        if nid in slot_parent:
            continue  # named below, once the original variable is
        full = attr.full_name
        if ":" in full:  # a device suffix (``kernel:0``), dropped
            full = _DEVICE_SUFFIX.sub("", full)
        named = _name_variable(nid, attr, full, paths.steps(nid), paths, metadata, model_config, containers)
        named.full_name = full
        if named.key in out:
            raise MalformedArchiveError(where, f"object graph names checkpoint key {named.key!r} twice")
        out[named.key] = named
        named_by_node[nid] = named
    for nid, node in enumerate(nodes):
        attr = _variable_attr(node)
        if attr is not None and attr.checkpoint_key and nid not in paths and nid not in slot_parent:
            if paths.truncated:
                raise MalformedArchiveError(where, f"object graph nests deeper than {MAX_DEPTH} levels")
            raise MalformedArchiveError(where, f"object graph: variable node {nid} is not reachable from the root")
    _attribute_slots(out)
    for nid, (orig, slot_name) in slot_parent.items():
        attr = _variable_attr(nodes[nid])
        if attr is None or not attr.checkpoint_key:
            continue
        base = named_by_node.get(orig)
        if base is None:
            raise MalformedArchiveError(where, f"object graph: slot variable {nid} belongs to node {orig}, which is no variable")
        target = f"{base.layer_path}/{base.name}" if base.layer_path else base.name
        lp = f"optimizer/{slot_name}/{base.layer_path}" if base.layer_path else f"optimizer/{slot_name}"
        named = Named(attr.checkpoint_key, lp, base.name, "optimizer", base.naming, "optimizer", None, (target, slot_name))
        out[named.key] = named
    return out


def _name_variable(nid, attr, full: str, steps, paths: _Paths, metadata, model_config, containers: _Containers) -> Named:
    """``full``: the variable's full name without its device suffix."""
    comps = [c for c in full.split("/") if c]
    edges_names = [name for _n, name in steps]
    if "keras_api" in edges_names:  # SavedModel: compiled metrics' state, named by its key
        parts = attr.checkpoint_key.split("/")
        parts = parts[: parts.index(".ATTRIBUTES")] if ".ATTRIBUTES" in parts else parts
        rest = [unescape(e) for e in (parts[1:] if parts[:1] == ["keras_api"] else parts)]
        return Named(attr.checkpoint_key, "/".join(rest[:-1]), rest[-1] if rest else "variable", "metric", "known", "metrics")
    if "optimizer" in edges_names or edges_names and edges_names[0].startswith("optimizer"):
        # optimizer's own state (iterations, learning_rate…) or new-style optimizer slots
        opt = edges_names.index("optimizer") if "optimizer" in edges_names else 0
        rest = comps or [unescape(e) for e in edges_names[opt + 1 :]]
        lp = "/".join(["optimizer"] + rest[:-1])
        return Named(attr.checkpoint_key, lp, rest[-1] if rest else "variable", "optimizer", "known", "optimizer")
    # walk: root, containers…, the owning top layer, its sub-objects…, the variable
    prefix: list[str] = []
    inferred = False
    top_seen = False
    layer_meta: LayerMeta | None = None
    container_depth = 0
    cur_cfg = model_config if containers[0] else None
    owner_step = None
    for depth, (node_id, edge) in enumerate(steps[:-1]):  # up to the owning top layer
        parent = steps[depth - 1][0] if depth else 0
        if containers[node_id]:
            if container_depth == 0 and not containers[parent]:
                # the top model (under a tf.train.Checkpoint root): excluded from paths
                cur_cfg = model_config
                container_depth += 1
                continue
            meta = _meta_for(metadata, steps[: depth + 1]) if metadata else None
            entry = _child_config(cur_cfg, node_id, parent, paths) if cur_cfg is not None else None
            name = meta.name if meta else (_entry_name(entry) if entry else None)
            if name is None:
                name, inferred = unescape(edge), True
            prefix.append(name)
            cur_cfg = entry
            container_depth += 1
            continue
        top_seen = True
        owner_step = depth
        layer_meta = _meta_for(metadata, steps[: depth + 1]) if metadata else None
        entry = _child_config(cur_cfg, node_id, parent, paths) if cur_cfg is not None else None
        if layer_meta is None and entry is not None:
            layer_meta = LayerMeta(_entry_name(entry) or "", entry.get("class_name"), entry.get("config"))
        break  # the steps below the top layer are its sub-objects: named from full_name or the edges
    if not top_seen:
        # a variable held directly by the root or a container (not inside a layer)
        base = [c for c in comps[:-1]] if comps else []
        lp = "/".join(prefix + base)
        name = comps[-1] if comps else unescape(edges_names[-1]) if edges_names else "variable"
        kind = "optimizer" if name in ("save_counter",) and not prefix else "weight"
        return Named(attr.checkpoint_key, lp, name, kind, "inferred" if inferred else "known", lp.split("/")[0] if lp else "")
    top_name = layer_meta.name if layer_meta and layer_meta.name else None
    if comps:
        idx = _scope_index(comps, top_name)
        if idx is None:
            # full_name does not mention the layer: keep the layer, then the sub-objects
            inner = comps[:-1]
            lname = top_name or (comps[0] if len(comps) > 1 else unescape(steps[owner_step][1]))
            if top_name is None:
                inferred = True
            lp = prefix + [lname] + (inner[1:] if top_name is None and len(comps) > 1 else inner)
        else:
            lname = top_name or comps[idx]
            lp = prefix + [lname] + comps[idx + 1 : -1]
        vname = comps[-1]
    else:
        lname = top_name or unescape(steps[owner_step][1])
        inferred = inferred or top_name is None
        lp = prefix + [lname] + [unescape(e) for _n, e in steps[owner_step + 1 : -1]]
        vname = unescape(steps[-1][1])
    cls = None
    if layer_meta is not None and len(lp) == len(prefix) + 1:
        cls = layer_meta.class_name
    return Named(attr.checkpoint_key, "/".join(lp), vname, "weight", "inferred" if inferred else "known", lname, cls)


def _attribute_slots(out: dict[str, Named]) -> None:
    """New-style tf-keras optimizers (2.11+) keep no ``slot_variables``: their slots are
    named ``<optimizer>/<slot>/<variable full name>`` (``Adam/m/conv1/kernel``); attribute
    each to the model variable of that full name, when exactly one has it."""
    by_full: dict[str, list[Named]] = {}
    for n in out.values():
        if n.kind == "weight" and n.full_name:
            by_full.setdefault(n.full_name, []).append(n)
    for n in out.values():
        if n.kind != "optimizer" or not n.full_name:
            continue
        comps = n.full_name.split("/")
        # ``Adam/m/dense/kernel``; ``m/dense/kernel`` inside a LossScaleOptimizer
        for k in (2, 1):
            target = by_full.get("/".join(comps[k:])) if len(comps) > k else None
            if target and len(target) == 1:
                t = target[0]
                n.slot_of = (f"{t.layer_path}/{t.name}" if t.layer_path else t.name, comps[k - 1])
                break


def _scope_index(comps: list[str], top_name: str | None) -> int | None:
    """The index in ``comps`` (a variable's full name split at ``/``, its own name last) of
    the last component of its layer's name scope (:func:`ckptscan.naming.scope_end`)."""
    if top_name is None:
        return 0 if len(comps) > 1 else None
    return naming.scope_end(comps[:-1], top_name)


def _meta_for(metadata: dict[str, LayerMeta] | None, steps) -> LayerMeta | None:
    if not metadata:
        return None
    path = "root." + ".".join(e for _n, e in steps)
    return metadata.get(path)


def _child_config(cfg: dict | None, node_id: int, parent: int, paths: _Paths) -> dict | None:
    layers = _config_layers(cfg)
    if layers is None:
        return None
    for name in paths.edges.get(node_id, {}).get(parent, []):
        m = _LAYER_EDGE.fullmatch(name)
        if m and int(m.group(1)) < len(layers):
            return layers[int(m.group(1))]
    return None


def _entry_name(entry: dict) -> str | None:
    cfg = entry.get("config")
    name = cfg.get("name") if isinstance(cfg, dict) else None
    return name if isinstance(name, str) and name else entry.get("name") if isinstance(entry.get("name"), str) else None


# --- keras_metadata.pb -------------------------------------------------------------------


def keras_metadata(saved: list[proto.SavedMeta]) -> tuple[dict[str, LayerMeta], dict | None]:
    """node path → layer description, and the root model's config, from ``keras_metadata.pb``."""
    import json

    out: dict[str, LayerMeta] = {}
    root_config = None
    for m in saved:
        try:
            doc = json.loads(m.metadata) if m.metadata else {}
        except (ValueError, RecursionError):
            continue
        if not isinstance(doc, dict):
            continue
        name = doc.get("name") if isinstance(doc.get("name"), str) else ""
        cls = doc.get("class_name") if isinstance(doc.get("class_name"), str) else None
        cfg = doc.get("config") if isinstance(doc.get("config"), dict) else None
        out[m.node_path] = LayerMeta(name, cls, cfg)
        if m.node_path == "root" and cfg is not None and cls:
            root_config = {"class_name": cls, "config": cfg}
    return out, root_config


# --- TF1 -----------------------------------------------------------------------------------


def tf1_names(keys: list[str]) -> dict[str, Named]:
    """Names of a checkpoint without an object graph (keys are variable names)."""
    keyset = set(keys)
    out: dict[str, Named] = {}
    for key in keys:
        comps = key.split("/")
        base, _, suffix = key.rpartition("/")
        if base and base in keyset and suffix in TF1_SLOTS:
            bcomps = base.split("/")
            lp = "/".join(["optimizer", suffix] + bcomps[:-1])
            out[key] = Named(key, lp, bcomps[-1], "optimizer", "known", "optimizer", None, (base, suffix))
            continue
        if TF1_STATE.search(key):
            out[key] = Named(key, "/".join(comps[:-1]), comps[-1], "optimizer", "known", comps[0] if len(comps) > 1 else "")
            continue
        out[key] = Named(key, "/".join(comps[:-1]), comps[-1], "weight", "known", comps[0] if len(comps) > 1 else "")
    return out
