"""Per-layer BatchNormalization profiles, collected by the scan for the HTML report and
the timeline's float16 headroom.

The scan already holds every BN layer's four vectors in memory (they are read whole,
once, for the BN rules: :func:`ckptscan.engine.scan_checkpoint`). When asked
(``ScanOptions.profile``), it hands them to :func:`build_profile` before letting them
go, so the report needs no second pass over the file. What is kept is bounded:

* ``summary``: a fixed handful of numbers per BN layer (channel count, variance
  max/median ratio, counts of non-finite, negative and above-float16 channels, the
  float16 headroom). ResNet101V2: ~100 layers, a few kB.
* ``charts``: the summary plus, for at most :data:`MAX_CHART_LAYERS` flagged layers
  (layers with a finding), ``moving_mean`` and ``moving_variance`` per channel, at most
  :data:`MAX_CHART_CHANNELS` channels each (beyond that an even stride, plus every
  flagged channel). At most 40 x 4096 x 2 floats: a few MB in the worst case.
* ``impact_paths``: the condensed path of the config graph from the origin layer to
  each reached output (origin, broken layers on the way, the output; the layers in
  between only counted).

**float16 headroom.** For a model whose config computes in float16 (a layer dtype
policy ``mixed_float16`` or ``float16``), a BN layer's input is a float16 tensor. Its
moving statistics estimate that input's per-channel mean and variance, so
``|mean| + k * sqrt(variance)`` estimates the largest magnitude the input reaches;
``headroom = 65504 / max over channels of that`` says how many times that can grow
before float16 overflows (< 1: expect Inf). A non-finite mean or variance in any
channel gives headroom 0 (it overflowed already). ``k`` = :data:`HEADROOM_K` = 8:
activations are heavy-tailed, and in the genuinely diverged fixture run
(``fixtures/diverge``) the stem convolution's largest pre-activation at epoch 1 was
16373 against a moving standard deviation of about 1970, i.e. 8.3 standard
deviations; a Gaussian ``k`` such as 3 or 4 would overstate the margin two-fold.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

#: The largest finite float16 value.
FLOAT16_MAX = 65504.0
#: Standard deviations above the mean used for the float16 headroom (see module docstring).
HEADROOM_K = 8.0
#: Flagged layers that keep per-channel vectors for the charts.
MAX_CHART_LAYERS = 40
#: Channels kept per vector of a charted layer (every flagged channel is kept besides).
MAX_CHART_CHANNELS = 4096
#: Dtype policies under which layers compute in float16.
FLOAT16_POLICIES = ("mixed_float16", "float16")

LEVELS = ("", "summary", "charts")


def _policy(ckpt, layer) -> str | None:
    from .naming import policy_name

    var = layer.variables.get("moving_variance") if layer.variables else None
    info = ckpt.layer_for(var) if var is not None and hasattr(ckpt, "layer_for") else None
    cfg = getattr(info, "config", None)
    return policy_name(cfg) if isinstance(cfg, dict) else None


def headroom(mean: np.ndarray, var: np.ndarray, k: float = HEADROOM_K) -> float:
    """``65504 / max_c(|mean_c| + k * sqrt(var_c))``; 0 when a channel is non-finite,
    NaN when every channel is 0 (no estimate; see the module docstring)."""
    m = np.asarray(mean, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    if m.size == 0 or m.shape != v.shape:
        return float("nan")
    if not (np.isfinite(m).all() and np.isfinite(v).all()):
        return 0.0
    peak = float(np.max(np.abs(m) + k * np.sqrt(np.maximum(v, 0.0))))
    return FLOAT16_MAX / peak if peak > 0 else float("nan")


def _summary(layer, policy: str | None, th) -> dict:
    v = layer.values["moving_variance"]
    m = layer.values.get("moving_mean")
    n = int(v.size)
    fin = np.isfinite(v)
    nonfinite_v = n - int(fin.sum())
    nonfinite_m = 0 if m is None else int(m.size - np.isfinite(m).sum())
    with np.errstate(invalid="ignore"):
        neg = int(np.count_nonzero(fin & (v < 0)))
        above = int(np.count_nonzero(fin & (v > FLOAT16_MAX)))
        live = v[fin & (v > th.dead_variance)]
    if live.size:
        med = float(np.median(live))
        vmax = float(live.max())
        ratio = vmax / med if med > 0 else float("nan")
    else:
        med = vmax = ratio = float("nan")
    doc = {
        "layer_path": layer.layer_path,
        "channels": n,
        "var_median": med,
        "var_max": vmax,
        "var_ratio": ratio,
        "nonfinite": nonfinite_v + nonfinite_m,
        "nonfinite_variance": nonfinite_v,
        "nonfinite_mean": nonfinite_m,
        "negative": neg,
        "above_f16": above,
        "policy": policy,
    }
    if policy in FLOAT16_POLICIES and m is not None:
        doc["f16_headroom"] = headroom(m, v)
    return doc


def _keep(n: int, flagged: Sequence[int]) -> np.ndarray:
    """Channel indices kept for a chart of ``n`` channels."""
    if n <= MAX_CHART_CHANNELS:
        return np.arange(n)
    step = math.ceil(n / MAX_CHART_CHANNELS)
    idx = np.arange(0, n, step)
    extra = np.asarray([i for i in flagged if 0 <= i < n], dtype=np.int64)
    return np.union1d(idx, extra)


def _vector(x: np.ndarray, keep: np.ndarray) -> list[float]:
    return [float(t) for t in np.asarray(x, dtype=np.float64)[keep]]


def _band(layer, th) -> dict:
    """The healthy band of each vector, for the shaded area of the charts."""
    from .rules.batchnorm import variance_outliers

    v = layer.values["moving_variance"]
    _, med, limit = variance_outliers(v, th)
    band: dict = {}
    if math.isfinite(med) and math.isfinite(limit) and med > 0:
        band["moving_variance"] = [med / 10.0**limit, min(med * 10.0**limit, FLOAT16_MAX)]
    m = layer.values.get("moving_mean")
    if m is not None:
        a = np.abs(m[np.isfinite(m)]).astype(np.float64)
        if a.size:
            med_abs = max(float(np.median(a)), th.param_outlier_floor)
            lim = max(med_abs * th.param_outlier_factor, th.param_outlier_abs)
            band["moving_mean"] = [-lim, lim]
    return band


def build_profile(layers, findings, ckpt, th, level: str = "summary", impact: dict | None = None) -> dict:
    """The BN profile of one file (see the module docstring); ``{}`` for level ``""``.

    ``layers`` are the :class:`~ckptscan.rules.BNLayer` of the scan, in file order;
    ``findings`` the file's findings (which layers and channels are flagged);
    ``impact`` the file's impact document (:func:`ckptscan.engine.impact`).
    """
    if not level:
        return {}
    summaries = []
    f16 = False
    for layer in layers:
        pol = _policy(ckpt, layer)
        f16 = f16 or pol in FLOAT16_POLICIES
        summaries.append(_summary(layer, pol, th))
    if f16:  # the model computes in float16: every BN layer's input is float16
        for s, layer in zip(summaries, layers):
            if "f16_headroom" not in s and "moving_mean" in layer.values:
                s["f16_headroom"] = headroom(layer.values["moving_mean"], layer.values["moving_variance"])
    flagged: dict[str, dict[str, set]] = {}
    for f in findings:
        if f.layer_path:
            flagged.setdefault(f.layer_path, {}).setdefault(f.variable, set()).update(f.indices)
    for s in summaries:
        s["flagged"] = s["layer_path"] in flagged
    doc: dict = {"level": level, "headroom_k": HEADROOM_K, "float16_compute": f16, "layers": summaries}
    if level != "charts":
        return doc
    charts: dict = {}
    skipped = 0
    for layer in layers:
        marks = flagged.get(layer.layer_path)
        if marks is None or "moving_variance" not in layer.values:
            continue
        if len(charts) >= MAX_CHART_LAYERS:
            skipped += 1
            continue
        n = int(layer.values["moving_variance"].size)
        every = sorted({int(i) for idx in marks.values() for i in idx})
        keep = _keep(n, every)
        charts[layer.layer_path] = {
            "channels": n,
            "index": [int(i) for i in keep] if n > MAX_CHART_CHANNELS else None,
            "moving_mean": _vector(layer.values["moving_mean"], keep) if "moving_mean" in layer.values else None,
            "moving_variance": _vector(layer.values["moving_variance"], keep),
            "flagged": {var: sorted(int(i) for i in idx) for var, idx in marks.items()},
            "band": _band(layer, th),
        }
    doc["charts"] = charts
    doc["charts_skipped"] = skipped
    doc["impact_paths"] = impact_paths(impact or {}, getattr(ckpt, "model_config", None))
    return doc


# --- impact paths ------------------------------------------------------------------------


def _shortest(edges: dict, start: str, goals: set, limit: int = 200_000) -> list[str] | None:
    prev: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo and len(prev) < limit:
        node = todo.popleft()
        if node in goals:
            path = [node]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])
            return path[::-1]
        for nxt in edges.get(node, ()):
            if nxt not in prev:
                prev[nxt] = node
                todo.append(nxt)
    return None


def impact_paths(imp: dict, model_config: dict | None) -> list[dict]:
    """For each output reached from the first broken layer: the condensed graph path.

    Each item: ``{"head": name, "steps": [{"layer": path, "broken": bool} or
    {"skipped": n}]}`` – the origin, every broken layer on the shortest path, the
    output layer, and the count of healthy layers between them.
    """
    from .graph import build_graph

    origin = imp.get("origin")
    if not origin or not imp.get("graph"):
        return []
    graph = build_graph(model_config)
    if graph is None:
        return []
    start = graph.node_for(origin)
    if start is None:
        return []
    broken = {graph.node_for(b["layer_path"]) for b in imp.get("broken_layers", [])}
    out = []
    for head in imp.get("reached_heads", []):
        ends = set(graph.heads.get(head, ()))
        path = _shortest(graph.edges, start, ends)
        if not path:
            continue
        steps: list[dict] = []
        gap = 0
        for i, node in enumerate(path):
            if i in (0, len(path) - 1) or node in broken:
                if gap:
                    steps.append({"skipped": gap})
                    gap = 0
                steps.append({"layer": node, "broken": node in broken})
            else:
                gap += 1
        out.append({"head": head, "steps": steps})
    return out


# --- per-checkpoint health details (timeline) ------------------------------------------------


def health_details(result, include_optimizer: bool = False) -> dict:
    """What the timeline keeps of one checkpoint's scan (``Health.details``): the warning
    count, each layer with a finding and its worst severity, the BN layers in order,
    and (float16-compute models) each BN layer's float16 headroom, rounded."""
    fs = [f for f in getattr(result, "findings", ())
          if include_optimizer or getattr(f, "category", "weight") != "optimizer"]
    layers: dict[str, str] = {}
    for f in fs:
        if f.severity.value in ("error", "warning") and f.layer_path:
            if layers.get(f.layer_path) != "error":
                layers[f.layer_path] = f.severity.value
    prof = getattr(result, "profile", None) or {}
    doc: dict = {
        "warnings": sum(1 for f in fs if f.severity.value == "warning"),
        "layers": layers,
        "bn_layers": [s["layer_path"] for s in prof.get("layers", ())],
    }
    if prof.get("float16_compute"):
        doc["f16_headroom"] = {s["layer_path"]: _rounded(s.get("f16_headroom")) for s in prof.get("layers", ())}
        doc["headroom_k"] = prof.get("headroom_k", HEADROOM_K)
    return doc


def _rounded(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return float(f"{v:.4g}") if math.isfinite(v) else None


def min_headroom(f16: dict | None) -> tuple[float, str] | None:
    """The lowest headroom of a checkpoint and its layer, or None (no float16 compute)."""
    vals = [(v, k) for k, v in (f16 or {}).items() if v is not None]
    return min(vals) if vals else None
