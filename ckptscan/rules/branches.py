"""Branches of another scale: telling a joined branch from a corrupted channel (BN002).

A BatchNormalization layer after a ``Concatenate`` normalises tensors that come from
different branches; one branch can legitimately run at 100× the scale of the others
(raw pixel values, an unnormalised feature), so its channels hold moving variances 1e4×
the rest. Two ways to tell that apart from a poisoned variance:

* **With a config** (:func:`concat_segments`): the joining layer that feeds the BN layer
  records each input's width (Keras 3 ``build_config.input_shape``). Each segment is
  then judged against its own channels only.
* **Without one** (:func:`branch_like`): a real activation of scale ``s`` has both its
  mean and its standard deviation moved by ``s``; a poisoned variance does not drag
  its mean along. A block of outlying channels whose ``|mean| / std`` is on the scale
  of the rest of the layer's is a branch, not damage.
"""

from __future__ import annotations

import numpy as np

from ..naming import layer_name, top_config

__all__ = ["JOIN_CLASSES", "branch_like", "branch_outliers", "concat_segments", "variance_outliers"]

#: Layers that join tensors along the channel axis.
JOIN_CLASSES = frozenset({"Concatenate", "concatenate"})
#: A block is a branch when its ``|mean|/std`` is at least this fraction of the rest's
#: (a variance poisoned by 1000× drops it by 1/√1000 ≈ 0.03).
MEAN_DRAG = 0.3
#: ... or when its own mean is at least this fraction of its std (a ReLU branch).
OWN_MEAN = 0.1
#: Without a config, a single outlying channel is never taken for a branch.
MIN_BLOCK = 2
MAX_LAYERS = 100_000


def _walk(cfg, prefix: str, out: dict, depth: int = 0) -> None:
    """Collect (path → layer entry) for every layer, nested models expanded."""
    if depth > 50 or not isinstance(cfg, dict) or len(out) > MAX_LAYERS:
        return
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    layers = inner.get("layers") if isinstance(inner.get("layers"), list) else None
    if layers is None:
        return
    for entry in layers:
        if not isinstance(entry, dict):
            continue
        name = layer_name(entry)
        if not name:
            continue
        path = f"{prefix}/{name}" if prefix else name
        out[path] = entry
        _walk(entry, path, out, depth + 1)


def _inbound_names(entry: dict) -> list[str]:
    """Names of the layers feeding ``entry`` (Keras 3 ``keras_history`` or tf-keras lists)."""
    names: list[str] = []

    def visit(obj, depth=0):
        if depth > 20 or len(names) > 64:
            return
        if isinstance(obj, dict):
            cfg = obj.get("config") if isinstance(obj.get("config"), dict) else obj
            hist = cfg.get("keras_history")
            if isinstance(hist, list) and hist:
                names.append(str(hist[0]))
                return
            for v in obj.values():
                visit(v, depth + 1)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):  # tf-keras [name, node, tensor, kw]
                names.append(obj[0])
                return
            for v in obj:
                visit(v, depth + 1)

    visit(entry.get("inbound_nodes"))
    return names


def _widths(entry: dict) -> list[int] | None:
    shapes = (entry.get("build_config") or {}).get("input_shape") if isinstance(entry.get("build_config"), dict) else None
    if not isinstance(shapes, list) or len(shapes) < 2 or not all(isinstance(s, list) and s for s in shapes):
        return None
    axis = (entry.get("config") or {}).get("axis", -1)
    rank = len(shapes[0])
    if axis not in (-1, rank - 1):
        return None
    widths = [s[-1] for s in shapes]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        return None
    return widths


def concat_segments(model_config: dict | None) -> dict[str, tuple[tuple[int, int], ...]]:
    """BN layer path → channel segments ``(start, stop)`` of the ``Concatenate`` feeding it.

    Only a BN layer fed directly by one channel-axis ``Concatenate`` whose input widths
    are recorded (Keras 3 ``build_config``) gets segments; anything else is left to
    :func:`branch_like`.
    """
    top = top_config(model_config) if isinstance(model_config, dict) else None
    if not isinstance(top, dict):
        return {}
    entries: dict[str, dict] = {}
    _walk(top, "", entries)
    by_scope: dict[tuple[str, str], str] = {}
    for path in entries:
        scope, _, name = path.rpartition("/")
        by_scope[(scope, name)] = path
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for path, entry in entries.items():
        if entry.get("class_name") not in ("BatchNormalization", "SyncBatchNormalization"):
            continue
        src = _inbound_names(entry)
        if len(set(src)) != 1:
            continue
        scope = path.rpartition("/")[0]
        feeder = entries.get(by_scope.get((scope, src[0]), ""))
        if not feeder or feeder.get("class_name") not in JOIN_CLASSES:
            continue
        widths = _widths(feeder)
        if widths is None:
            continue
        bounds = np.cumsum([0] + widths).tolist()
        out[path] = tuple((int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[cuts + 1]])
    stops = np.concatenate([idx[cuts] + 1, [idx[-1] + 1]])
    return list(zip(starts.tolist(), stops.tolist()))


def branch_like(variance: np.ndarray, mean: np.ndarray | None, outliers: np.ndarray) -> np.ndarray:
    """The outlying channels that look like a joined branch of another scale.

    Judged per contiguous block of at least :data:`MIN_BLOCK` outlying channels (a
    lone channel is never excused without a config): the block is a branch when its
    channels' ``|mean| / std`` is on the scale of the rest of the layer (at least
    :data:`MEAN_DRAG` of the rest's median) or at least :data:`OWN_MEAN` (a mean of the
    order of its std, as after a ReLU). A poisoned variance leaves the mean where it
    was, so its ratio falls by the square root of the poisoning factor.
    """
    out = np.zeros(variance.shape, bool)
    if mean is None or mean.shape != variance.shape or not outliers.any():
        return out
    with np.errstate(all="ignore"):
        std = np.sqrt(variance.astype(np.float64))
        ratio = np.abs(mean.astype(np.float64)) / std
    rest = ~outliers & np.isfinite(ratio) & (std > 0)
    ref = float(np.median(ratio[rest])) if rest.any() else float("nan")
    for a, b in _runs(outliers):
        if b - a < MIN_BLOCK:
            continue
        r = ratio[a:b]
        if not np.isfinite(r).all():
            continue
        block = float(np.median(r))
        if block >= OWN_MEAN or (np.isfinite(ref) and ref > 0 and block >= MEAN_DRAG * ref):
            out[a:b] = True
    return out


def variance_outliers(v: np.ndarray, th) -> tuple[np.ndarray, float, float]:
    """(mask of high-outlier channels, layer median variance, threshold in decades).

    Robust on log10: the reference is the median of the live channels (finite, above
    ``dead_variance``), the spread 1.4826·MAD with a floor; a channel is an outlier when
    it is above the median by at least ``bn_outlier_decades`` decades *and*
    ``bn_outlier_mads`` spreads. Low channels (dead ones) are never outliers.
    """
    mask = np.zeros(v.shape, bool)
    live = np.isfinite(v) & (v > th.dead_variance)
    if int(live.sum()) < th.bn_min_channels:
        return mask, float("nan"), float("nan")
    logv = np.log10(v[live].astype(np.float64))
    med = float(np.median(logv))
    mad = float(np.median(np.abs(logv - med)))
    spread = max(1.4826 * mad, th.bn_outlier_min_spread)
    limit = max(th.bn_outlier_decades, th.bn_outlier_mads * spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        logall = np.log10(np.where(live, v, 1.0).astype(np.float64))
    mask = live & (logall - med > limit)
    return mask, 10.0**med, limit


def branch_outliers(variance: np.ndarray, mean: np.ndarray | None, outliers: np.ndarray,
                    segments: tuple[tuple[int, int], ...] | None, th) -> np.ndarray:
    """BN002's outlier mask once branches of another scale are accounted for.

    With ``segments`` (from the config), each concatenated input's channels are
    tested among themselves (:func:`variance_outliers`); a
    segment too small to be tested alone keeps the whole-layer verdict unless it looks
    like a branch (:func:`branch_like`). Without segments, :func:`branch_like` blocks
    are removed from ``outliers``.
    """
    n = variance.shape[0]
    if segments and segments[-1][1] == n and segments[0][0] == 0:
        out = np.zeros(n, bool)
        for a, b in segments:
            seg = variance[a:b]
            live = np.isfinite(seg) & (seg > th.dead_variance)
            if int(live.sum()) >= th.bn_min_channels:
                out[a:b] = variance_outliers(seg, th)[0]
            else:
                part = outliers[a:b].copy()
                part &= ~branch_like(seg, None if mean is None else mean[a:b], part)
                out[a:b] = part
        return out
    return outliers & ~branch_like(variance, mean, outliers)
