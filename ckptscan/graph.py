"""The model's layer graph, from the JSON config alone (never evaluated).

:func:`build_graph` turns a Keras 3 ``config.json`` or a legacy ``model_config`` into a
:class:`ModelGraph` over structural layer paths (``backbone/conv5_block3_2_bn``): a
Sequential is a chain, a Functional follows its ``inbound_nodes`` (Keras 3
``{"args", "kwargs"}`` nodes with ``keras_history``, and the tf-keras
``[[name, node, tensor, kwargs], …]`` lists), and a nested model is expanded in place:
the layers feeding it feed its input layers, and its output layers feed its consumers.

The impact analysis needs three questions answered: the topological position of a
layer (to find the earliest broken one, the NaN origin), which model outputs a layer
reaches, and the names of those outputs (the heads).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .naming import CONTAINER_CLASSES, layer_name, top_config

#: Deepest nesting of models expanded (hostile configs).
MAX_DEPTH = 50


@dataclass(frozen=True)
class ModelGraph:
    """Layers (structural paths) in topological order, their edges and the outputs."""

    order: tuple[str, ...]
    """Every layer path, sources first (declaration order breaks ties)."""
    edges: dict[str, tuple[str, ...]] = field(hash=False, compare=False)
    """Layer path → the layer paths that consume its output."""
    heads: dict[str, tuple[str, ...]] = field(hash=False, compare=False)
    """Output (head) name → the layer paths that produce it."""
    classes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Layer path → class name."""

    def node_for(self, layer_path: str) -> str | None:
        """The graph node owning ``layer_path`` (itself, or its longest enclosing prefix)."""
        p = layer_path
        while p:
            if p in self._pos:
                return p
            p = p.rpartition("/")[0]
        return None

    def position(self, layer_path: str) -> int | None:
        """Topological index of the node owning ``layer_path``, or None if unknown."""
        node = self.node_for(layer_path)
        return None if node is None else self._pos[node]

    def descendants(self, layer_path: str) -> set[str]:
        """Every layer reached from ``layer_path`` (itself included)."""
        start = self.node_for(layer_path)
        if start is None:
            return set()
        seen = {start}
        todo = deque([start])
        while todo:
            for nxt in self.edges.get(todo.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def reached_heads(self, layer_path: str) -> list[str]:
        """Names of the model outputs that ``layer_path`` feeds (in output order)."""
        down = self.descendants(layer_path)
        return [name for name, nodes in self.heads.items() if any(n in down for n in nodes)]

    @property
    def _pos(self) -> dict[str, int]:
        cached = self.__dict__.get("_pos_cache")
        if cached is None:
            cached = {p: i for i, p in enumerate(self.order)}
            object.__setattr__(self, "_pos_cache", cached)
        return cached


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.classes: dict[str, str] = {}
        self.edges: dict[str, list[str]] = {}

    def node(self, path: str, cls: str) -> str:
        if path not in self.classes:
            self.nodes.append(path)
            self.classes[path] = cls
            self.edges[path] = []
        return path

    def link(self, srcs: list[str], dsts: list[str]) -> None:
        for s in srcs:
            for d in dsts:
                if s != d and d not in self.edges[s]:
                    self.edges[s].append(d)

    def expand(self, entry: dict, path: str, depth: int) -> tuple[list[str], list[str]]:
        """Add ``entry`` at ``path``; return (its entry nodes, its exit nodes)."""
        cls = str(entry.get("class_name", ""))
        cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        layers = cfg.get("layers")
        if depth < MAX_DEPTH and isinstance(layers, list) and (cls in CONTAINER_CLASSES or "layers" in cfg):
            if cls == "Sequential" or not _has_graph(cfg):
                return self._sequential(layers, path, depth)
            return self._functional(cfg, path, depth)[:2]
        n = self.node(path, cls)
        return [n], [n]

    def _sequential(self, layers: list, prefix: str, depth: int) -> tuple[list[str], list[str]]:
        first: list[str] = []
        prev: list[str] = []
        for it in layers:
            if not isinstance(it, dict) or it.get("class_name") == "InputLayer":
                continue
            ins, outs = self.expand(it, _join(prefix, layer_name(it)), depth + 1)
            if prev:
                self.link(prev, ins)
            else:
                first = ins
            prev = outs
        return first, prev

    def _functional(self, cfg: dict, prefix: str, depth: int):
        items = [it for it in cfg["layers"] if isinstance(it, dict)]
        ends: dict[str, tuple[list[str], list[str]]] = {}
        for it in items:
            name = layer_name(it) or str(it.get("name", ""))
            ends[name] = self.expand(it, _join(prefix, name), depth + 1)
        for it in items:
            name = layer_name(it) or str(it.get("name", ""))
            for src in _refs(it.get("inbound_nodes"), ends):
                if src != name:
                    self.link(ends[src][1], ends[name][0])
        ins = [n for name in _layer_refs(cfg.get("input_layers"), ends) for n in ends[name][0]]
        out_names = _layer_refs(cfg.get("output_layers"), ends)
        outs = [n for name in out_names for n in ends[name][1]]
        return ins, outs, out_names, ends

    def topo(self) -> tuple[str, ...]:
        indeg = {n: 0 for n in self.nodes}
        for s in self.nodes:
            for d in self.edges[s]:
                indeg[d] += 1
        rank = {n: i for i, n in enumerate(self.nodes)}
        import heapq

        ready = [(rank[n], n) for n in self.nodes if indeg[n] == 0]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for d in self.edges[n]:
                indeg[d] -= 1
                if indeg[d] == 0:
                    heapq.heappush(ready, (rank[d], d))
        if len(out) < len(self.nodes):  # a cycle in a hostile config: keep declaration order
            seen = set(out)
            out += [n for n in self.nodes if n not in seen]
        return tuple(out)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _has_graph(cfg: dict) -> bool:
    return any(isinstance(it, dict) and it.get("inbound_nodes") for it in cfg.get("layers", []))


def _refs(obj: object, names: dict, depth: int = 0) -> list[str]:
    """Layer names referenced by an ``inbound_nodes`` value (both serialisations)."""
    found: list[str] = []
    if depth > 40:
        return found
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__" and isinstance(obj.get("config"), dict):
            hist = obj["config"].get("keras_history")
            if isinstance(hist, list) and hist and isinstance(hist[0], str) and hist[0] in names:
                found.append(hist[0])
            return found
        for v in obj.values():
            found += _refs(v, names, depth + 1)
    elif isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) and isinstance(obj[2], int):
            if obj[0] in names:
                found.append(obj[0])
            for v in obj[3:]:
                found += _refs(v, names, depth + 1)
        else:
            for v in obj:
                found += _refs(v, names, depth + 1)
    return found


def _layer_refs(obj: object, names: dict) -> list[str]:
    """Layer names in ``input_layers``/``output_layers`` (single triple, list or dict)."""
    out: list[str] = []
    for name in _refs(obj, names):
        if name not in out:
            out.append(name)
    return out


def _head_names(cfg: dict, out_names: list[str]) -> list[tuple[str, str]]:
    """(head name, output layer name) pairs; dict outputs use their keys."""
    spec = cfg.get("output_layers")
    if isinstance(spec, dict):
        pairs = []
        for key, value in spec.items():
            for name in _refs(value, set(out_names)):
                pairs.append((str(key), name))
        if pairs:
            return pairs
    return [(n, n) for n in out_names]


def build_graph(model_config: dict | None) -> ModelGraph | None:
    """The layer graph of a model config, or None when it describes no container."""
    if not isinstance(model_config, dict):
        return None
    top = top_config(model_config)
    cls = str(top.get("class_name", ""))
    cfg = top.get("config") if isinstance(top.get("config"), dict) else None
    if cfg is None or not isinstance(cfg.get("layers"), list):
        return None
    b = _Builder()
    heads: dict[str, tuple[str, ...]] = {}
    if cls == "Sequential" or not _has_graph(cfg):
        _, outs = b._sequential(cfg["layers"], "", 0)
        items = [it for it in cfg["layers"] if isinstance(it, dict) and it.get("class_name") != "InputLayer"]
        if items and outs:
            heads[layer_name(items[-1])] = tuple(outs)
    else:
        _, _, out_names, ends = b._functional(cfg, "", 0)
        for head, name in _head_names(cfg, out_names):
            heads[head] = tuple(heads.get(head, ())) + tuple(ends[name][1])
    return ModelGraph(
        order=b.topo(),
        edges={k: tuple(v) for k, v in b.edges.items()},
        heads=heads,
        classes=dict(b.classes),
    )
