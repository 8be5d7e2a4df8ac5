"""BatchNormalization rules: each looks at the vectors of one layer together.

Calibration (what healthy trained layers look like): channel variances of one layer
span about 2–4× around the layer median; a dead channel can sit at 1e-36 and is
harmless; the first BN after raw, un-normalised input can legitimately hold variances
of 1e6–1e7. So every comparison is within one layer, on a log scale, and only
*high* outliers count. Keras computes BN in float32 even under ``mixed_float16``, so a
variance above the float16 maximum is an export hazard, not an inference error.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..formats.base import bf16_to_f32, f32_to_bf16_bits
from ..report import Severity
from ..stats import stacked
from .base import (
    FLOAT16_MAX,
    BNContext,
    Hit,
    ModelContext,
    Scope,
    breakdown,
    fmt,
    plural,
    rule,
    where,
)
from .branches import branch_outliers, variance_outliers

STAT_NAMES = ("moving_mean", "moving_variance")
PARAM_NAMES = ("gamma", "beta", "moving_mean")


def _channels(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(np.flatnonzero(mask).tolist())


# --- BN001 ---------------------------------------------------------------------------


@rule(
    "BN001",
    "bn-variance-invalid",
    Severity.ERROR,
    Scope.BN_LAYER,
    "{path}: {what} in {where} of {size}",
    "Restore moving_variance from the last good checkpoint, or re-estimate the statistics "
    "(run a few hundred batches through the model in training mode with the weights frozen).",
    patchable=True,
    inference_only=True,
    impact=True,
)
def bn_variance_invalid(ctx: BNContext) -> Iterator[Hit]:
    """A BatchNormalization ``moving_variance`` is NaN, ±Inf or negative.

    ## What it does
    Reports every channel of ``moving_variance`` that is NaN, ±Inf or below zero.

    ## Why is this bad?
    At inference, BatchNormalization computes ``(x - moving_mean) / sqrt(moving_variance
    + epsilon)``. A NaN or negative variance (below ``-epsilon``) makes the channel NaN;
    +Inf turns it into a constant. Training mode uses the batch statistics instead,
    so the training loss looks fine while ``predict`` returns NaN: the damage is
    inference-only.

    A diverged mixed-precision run produces exactly this: a float16 activation
    overflows, the batch variance becomes Inf/NaN and is folded into the moving
    average while the loss-scale optimizer merely skips that step.

    ## Example
    ``post_bn/moving_variance: 256 NaN in channels [0–255] of 256``

    ## Fix
    Take ``moving_mean``/``moving_variance`` of this layer from the last good epoch
    (keep the trained ``gamma``/``beta``), or re-estimate them by running data through
    the model in training mode with the optimizer off.

    ## Known problems
    A negative variance in ``[-epsilon, 0)`` does not produce NaN in Keras, but no
    variance estimate can be negative, so it is still reported: the tensor was
    written by something other than the moving average.
    """
    layer = ctx.layer
    v = layer.values.get("moving_variance")
    if v is None:
        return
    bad = ~np.isfinite(v) | (v < 0)
    if not bad.any():
        return
    s = layer.stats["moving_variance"]
    parts = [p for p in (breakdown(s), f"{s.n_negative} negative" if s.n_negative else "") if p]
    idx = _channels(bad)
    yield Hit(
        layer.layer_path, "moving_variance",
        {"path": f"{layer.layer_path}/moving_variance", "what": ", ".join(parts),
         "where": where(idx, len(idx), True), "size": v.size},
        idx, len(idx),
        {"nan": s.n_nan, "posinf": s.n_posinf, "neginf": s.n_neginf, "negative": s.n_negative},
    )


# --- BN002 ---------------------------------------------------------------------------


@rule(
    "BN002",
    "bn-variance-outlier",
    Severity.WARNING,
    Scope.BN_LAYER,
    "{path}: {where} {factor} the layer's median variance {median} (max {max})",
    "Compare with the previous checkpoint; if these channels were ordinary there, restore "
    "this layer's moving_variance from it.",
    patchable=True,
    inference_only=True,
    impact=True,
)
def bn_variance_outlier(ctx: BNContext) -> Iterator[Hit]:
    """Some channels of a ``moving_variance`` are far above the same layer's other channels.

    ## What it does
    Compares each channel's variance with the other channels of the *same* layer, on a
    log10 scale: the reference is the median of the live channels and the spread is the
    median absolute deviation (MAD). A channel is reported when it is at least 1000×
    the median *and* more than 6 robust spreads above it. Dead channels (variance near
    0, e.g. 1e-36) are left out and never reported: only high outliers count.

    ## Why is this bad?
    In trained layers the channel variances span about 2–4× around the median. A
    channel 1e4× above its neighbours divides that channel's activations by 100× its
    trained scale: the channel is silenced at inference (training mode does not use the
    moving statistics, so training metrics do not show it). Such values come from
    corruption, a bad update, or a partial overwrite, not from training.

    ## Example
    ``backbone/conv5_block3_2_bn/moving_variance: 3 channels [4, 9, 17] are 1e+04–1e+06× the
    layer's median variance 0.8123 (max 8.1e+05)``

    ## Fix
    Restore the layer's moving statistics from a good checkpoint, or re-estimate them.

    ## Known problems
    The scale of one BN layer is never compared with other BN layers: the first BN
    after raw, un-normalised input can legitimately hold variances of 1e6–1e7. A layer
    with fewer than 4 live channels is not tested.

    A BN layer after a ``Concatenate`` can hold a whole branch at another scale. With
    a config, each concatenated input's channels are judged among themselves. Without
    one, a contiguous block of two or more outlying channels whose mean moved with its
    variance (``|mean| / std`` on the scale of the rest of the layer, or at least 0.1) is
    taken for such a branch and not reported: a poisoned variance does not drag its
    mean along. A corrupted block whose means were scaled by the same factor is missed. Thresholds: ``bn-outlier-decades``,
    ``bn-outlier-mads``, ``bn-outlier-min-spread`` in ``[tool.ckptscan.thresholds]``.
    """

    layer = ctx.layer
    v = layer.values.get("moving_variance")
    if v is None or v.ndim != 1:
        return
    mask, median, _ = variance_outliers(v, ctx.thresholds)
    if not mask.any():
        return
    mask = branch_outliers(v, layer.values.get("moving_mean"), mask, layer.segments, ctx.thresholds)
    if not mask.any():
        return
    idx = _channels(mask)
    ratios = v[mask].astype(np.float64) / median
    lo, hi = float(ratios.min()), float(ratios.max())
    lo_s, hi_s = f"{lo:.2g}×", f"{hi:.2g}×"
    factor = f"{'is' if len(idx) == 1 else 'are'} {lo_s if lo_s == hi_s else lo_s + '–' + hi_s}"
    yield Hit(
        layer.layer_path, "moving_variance",
        {"path": f"{layer.layer_path}/moving_variance", "where": where(idx, len(idx), True),
         "factor": factor, "median": fmt(median), "max": fmt(float(v[mask].max()))},
        idx, len(idx), {"median": median, "max_ratio": hi, "min_ratio": lo},
    )


# --- BN003 ---------------------------------------------------------------------------


@rule(
    "BN003",
    "bn-variance-fp16-overflow",
    Severity.WARNING,
    Scope.BN_LAYER,
    "{path}: {where} above the float16 maximum 65504 (max {max}); breaks when exported to fp16 "
    "(TFLite/TensorRT), fine in Keras",
    "Nothing to do for Keras inference. Before an fp16 export, fold BN into the preceding "
    "convolution in float32, or normalise the model's input so this layer's variance is small.",
    inference_only=True,
)
def bn_variance_fp16_overflow(ctx: BNContext) -> Iterator[Hit]:
    """A ``moving_variance`` channel is above 65504, the largest float16 value.

    ## What it does
    Reports channels whose (finite) moving variance exceeds 65504.

    ## Why is this bad?
    Keras computes BatchNormalization in float32 even under ``mixed_float16``, so the
    model is fine in Keras. An exporter that stores the BN parameters as float16
    (TFLite fp16 quantization, TensorRT fp16) turns the variance into +Inf and the
    channel into a constant: the exported model breaks while the Keras one works.
    Typical cause: the first BN after raw, un-normalised input (pixel counts, 12-bit
    sensor values).

    ## Example
    ``stem_bn/moving_variance: 16 channels [0, 1, …] above the float16 maximum 65504 (max 5.716e+06) …``

    ## Fix
    Normalise the input (``Rescaling``/``Normalization`` before the first layer), or fold
    BN into the preceding convolution in float32 before casting.

    ## Known problems
    Whether an exporter really keeps the variance in float16 depends on the tool;
    folded values are checked separately by BN008.
    """
    layer = ctx.layer
    v = layer.values.get("moving_variance")
    if v is None:
        return
    mask = np.isfinite(v) & (v > FLOAT16_MAX)
    if not mask.any():
        return
    idx = _channels(mask)
    yield Hit(
        layer.layer_path, "moving_variance",
        {"path": f"{layer.layer_path}/moving_variance", "where": where(idx, len(idx), True),
         "max": fmt(float(v[mask].max()))},
        idx, len(idx), {"max": float(v[mask].max())},
    )


# --- BN004 ---------------------------------------------------------------------------


@rule(
    "BN004",
    "bn-param-non-finite",
    Severity.ERROR,
    Scope.BN_LAYER,
    "{path}: {what} in {where} of {size}",
    "Restore the vector from the last good checkpoint (moving_mean can also be re-estimated "
    "from data; gamma/beta need the trained values).",
    patchable=True,
    impact=True,
)
def bn_param_non_finite(ctx: BNContext) -> Iterator[Hit]:
    """A BatchNormalization ``moving_mean``, ``gamma`` or ``beta`` is NaN or ±Inf.

    ## What it does
    Reports every non-finite channel of ``moving_mean``, ``gamma`` and ``beta`` (one
    finding per vector).

    ## Why is this bad?
    Each enters the inference transform ``gamma · (x - moving_mean) / sqrt(var + eps) +
    beta`` directly: the channel's output is NaN. A non-finite ``moving_mean`` is
    inference-only damage (training uses batch statistics); a non-finite ``gamma`` or
    ``beta`` breaks training too.

    ## Example
    ``post_bn/moving_mean: 256 NaN in channels [0–255] of 256``

    ## Fix
    Restore from the last good checkpoint; ``moving_mean`` can also be re-estimated.

    ## Known problems
    None known.
    """
    layer = ctx.layer
    for name in PARAM_NAMES:
        v = layer.values.get(name)
        if v is None:
            continue
        bad = ~np.isfinite(v)
        if not bad.any():
            continue
        idx = _channels(bad)
        s = layer.stats[name]
        yield Hit(
            layer.layer_path, name,
            {"path": f"{layer.layer_path}/{name}", "what": breakdown(s), "where": where(idx, len(idx), True),
             "size": v.size},
            idx, len(idx),
            {"nan": s.n_nan, "posinf": s.n_posinf, "neginf": s.n_neginf, "inference_only": name == "moving_mean"},
        )


# --- BN005 ---------------------------------------------------------------------------


@rule(
    "BN005",
    "bn-param-outlier",
    Severity.WARNING,
    Scope.BN_LAYER,
    "{path}: {where} extreme (up to {max}, layer median |x| {median})",
    "Compare with the previous checkpoint and restore the vector if these channels were ordinary there.",
    patchable=True,
)
def bn_param_outlier(ctx: BNContext) -> Iterator[Hit]:
    """A ``moving_mean``, ``gamma`` or ``beta`` channel is an extreme outlier within its layer.

    ## What it does
    For each of the three vectors, reports finite channels whose |value| is above
    10 000× the layer's median |value| (the median raised to at least 0.01) and above
    100 in absolute terms. For ``moving_mean`` the value must also be above 100× the
    channel's own standard deviation ``sqrt(moving_variance + epsilon)``.

    ## Why is this bad?
    Trained gamma and beta stay within a small range around 1 and 0; a moving mean
    follows its channel's activations. A single channel 10 000× its neighbours is a
    corrupted value that dominates the layer's output.

    ## Example
    ``head/bn/gamma: channel [12] extreme (up to 3.2e+05, layer median |x| 0.97)``

    ## Fix
    Restore the vector from a good checkpoint.

    ## Known problems
    Layers with fewer than 4 finite channels are not tested. Thresholds:
    ``param-outlier-factor``, ``param-outlier-floor``, ``param-outlier-abs``.
    """
    layer = ctx.layer
    th = ctx.thresholds
    var = layer.values.get("moving_variance")
    for name in PARAM_NAMES:
        v = layer.values.get(name)
        if v is None or v.ndim != 1:
            continue
        a = np.abs(v.astype(np.float64))
        fin = np.isfinite(a)
        if int(fin.sum()) < th.bn_min_channels:
            continue
        med = float(np.median(a[fin]))
        limit = max(th.param_outlier_factor * max(med, th.param_outlier_floor), th.param_outlier_abs)
        mask = fin & (a > limit)
        if name == "moving_mean" and var is not None and var.shape == v.shape:
            with np.errstate(invalid="ignore"):
                std = np.sqrt(np.maximum(var.astype(np.float64), 0.0) + layer.epsilon)
                mask &= ~np.isfinite(std) | (a > 100.0 * std)
        if not mask.any():
            continue
        idx = _channels(mask)
        yield Hit(
            layer.layer_path, name,
            {"path": f"{layer.layer_path}/{name}", "where": where(idx, len(idx), True),
             "max": fmt(float(a[mask].max())), "median": fmt(med)},
            idx, len(idx), {"median_abs": med, "limit": limit},
        )


# --- BN006 / BN008: the folded transform ----------------------------------------------


def folded(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(scale, offset, inputs_ok) of the inference transform, computed in float32.

    ``scale = gamma / sqrt(moving_variance + epsilon)``, ``offset = beta - moving_mean ·
    scale``; ``inputs_ok`` marks channels whose four inputs are finite and whose variance
    is not negative (the others are already reported by BN001/BN004).
    """
    var = layer.values.get("moving_variance")
    mean = layer.values.get("moving_mean")
    if var is None or mean is None or var.shape != mean.shape:
        return None
    n = var.shape
    gamma = layer.values.get("gamma", np.ones(n, np.float32))
    beta = layer.values.get("beta", np.zeros(n, np.float32))
    if gamma.shape != n or beta.shape != n:
        return None
    f32 = np.float32
    g, b, m, v = (np.asarray(x, dtype=f32) for x in (gamma, beta, mean, var))
    ok = np.isfinite(g) & np.isfinite(b) & np.isfinite(m) & np.isfinite(v) & (v >= 0)
    with np.errstate(all="ignore"):
        scale = g / np.sqrt(v + f32(layer.epsilon))
        offset = b - m * scale
    return scale, offset, ok


@rule(
    "BN006",
    "bn-folded-invalid",
    Severity.ERROR,
    Scope.BN_LAYER,
    "{path}: folded {which} is {what} in float32 at {where} (epsilon {eps})",
    "Restore the layer's statistics from a good checkpoint; check the epsilon in the config.",
    patchable=True,
    inference_only=True,
    impact=True,
)
def bn_folded_invalid(ctx: BNContext) -> Iterator[Hit]:
    """The folded inference transform of a BN layer is non-finite or extreme in float32.

    ## What it does
    Computes, in float32 as the inference kernels do, ``scale = gamma / sqrt(moving_variance
    + epsilon)`` and ``offset = beta - moving_mean · scale`` (epsilon from the layer
    config, the Keras default 1e-3 otherwise) for the channels whose inputs are finite
    and non-negative, and reports channels where either is non-finite or beyond 1e12.

    ## Why is this bad?
    Every finite input can still fold into an Inf: a variance of ``-epsilon`` exactly, a
    zero epsilon with a zero variance, or a huge mean times a large scale. Inference
    (and every converter that folds BN into the previous convolution) then produces
    Inf/NaN for that channel.

    ## Example
    ``bn/moving_variance: folded scale is non-finite in float32 at channel [3] (epsilon 0)``

    ## Fix
    Restore the statistics; if the config's epsilon is 0, rebuild with a positive one.

    ## Known problems
    Channels already reported by BN001 or BN004 are skipped, and an offset is not reported
    where the scale already is. The finding is attached to ``moving_variance`` (scale) or
    ``moving_mean`` (offset).
    """
    res = folded(ctx.layer)
    if res is None:
        return
    scale, offset, ok = res
    limit = ctx.thresholds.folded_extreme
    scale_bad = np.zeros(scale.shape, bool)
    for which, vals, var_name in (("scale", scale, "moving_variance"), ("offset", offset, "moving_mean")):
        with np.errstate(invalid="ignore"):
            bad = ok & (~np.isfinite(vals) | (np.abs(vals) > limit)) & ~scale_bad
        if which == "scale":
            scale_bad = bad  # a broken scale breaks the offset too: reported once
        if not bad.any():
            continue
        idx = _channels(bad)
        nonfinite = bool((~np.isfinite(vals[bad])).any())
        yield Hit(
            ctx.layer.layer_path, var_name,
            {"path": f"{ctx.layer.layer_path}/{var_name}", "which": which,
             "what": "non-finite" if nonfinite else f"extreme (|x| > {limit:.0e})",
             "where": where(idx, len(idx), True), "eps": fmt(ctx.layer.epsilon)},
            idx, len(idx), {"folded": which, "epsilon": ctx.layer.epsilon},
        )


def _to_bf16(x: np.ndarray) -> np.ndarray:
    return bf16_to_f32(f32_to_bf16_bits(x))


@rule(
    "BN008",
    "bn-folded-fp16-overflow",
    Severity.WARNING,
    Scope.BN_LAYER,
    "{path}: folded {which} overflows {dtype} at {where} (max |x| {max}); breaks when exported to {dtype}",
    "Fine in Keras. Before a float16/bfloat16 export, normalise the model's input or keep this "
    "layer in float32.",
    inference_only=True,
)
def bn_folded_fp16_overflow(ctx: BNContext) -> Iterator[Hit]:
    """The folded BN transform is finite in float32 but overflows after a cast to float16/bfloat16.

    ## What it does
    Casts the float32 folded ``scale`` and ``offset`` (see BN006) to float16 and to
    bfloat16 and reports channels that become ±Inf.

    ## Why is this bad?
    Converters fold BatchNormalization into the preceding convolution and then cast the
    whole model to float16 (TFLite fp16, TensorRT, Core ML). A folded value above 65504
    becomes Inf there: the exported model breaks although Keras inference is fine.

    ## Example
    ``stem_bn/moving_mean: folded offset overflows float16 at channel [2] (max |x| 8.1e+04); …``

    ## Fix
    Normalise the input, or exclude the layer from the reduced-precision export.

    ## Known problems
    Underflow (a folded scale that rounds to 0 in float16) is not reported.
    """
    res = folded(ctx.layer)
    if res is None:
        return
    scale, offset, ok = res
    for dtype, cast in (("float16", lambda x: x.astype(np.float16)), ("bfloat16", _to_bf16)):
        for which, vals, var_name in (("scale", scale, "moving_variance"), ("offset", offset, "moving_mean")):
            good32 = ok & np.isfinite(vals) & (np.abs(vals) <= ctx.thresholds.folded_extreme)
            with np.errstate(over="ignore", invalid="ignore"):
                bad = good32 & ~np.isfinite(cast(vals))
            if not bad.any():
                continue
            idx = _channels(bad)
            yield Hit(
                ctx.layer.layer_path, var_name,
                {"path": f"{ctx.layer.layer_path}/{var_name}", "which": which, "dtype": dtype,
                 "where": where(idx, len(idx), True), "max": fmt(float(np.abs(vals[bad]).max()))},
                idx, len(idx), {"folded": which, "dtype": dtype},
            )


# --- BN007 ---------------------------------------------------------------------------


def _is_default_stats(layer) -> bool:
    m, v = layer.values.get("moving_mean"), layer.values.get("moving_variance")
    return m is not None and v is not None and m.size > 0 and not m.any() and bool((v == 1).all())


def _has_trained_affine(layer) -> bool:
    g, b = layer.values.get("gamma"), layer.values.get("beta")
    return (g is not None and bool(np.any(g != 1))) or (b is not None and bool(np.any(b != 0)))


def _stats_flags(layers) -> tuple[list[bool], list[bool]]:
    """``(_is_default_stats, _has_trained_affine)`` of every layer: at once (one
    comparison over each kind of vector concatenated, reduced per layer) for the layers
    whose four vectors are non-empty 1-D arrays, one by one for the others. Same answers,
    without four reductions per layer."""
    default = [False] * len(layers)
    trained = [False] * len(layers)
    idx = []
    for i, ly in enumerate(layers):
        vals = ly.values
        if all(isinstance(vals.get(k), np.ndarray) and vals[k].ndim == 1 and vals[k].size for k in _VECTORS):
            idx.append(i)
        else:
            default[i], trained[i] = _is_default_stats(ly), _has_trained_affine(ly)
    if idx:
        def per_layer(kind: str, test, reduce) -> list[bool]:
            flat, starts = stacked([layers[i].values[kind] for i in idx])
            with np.errstate(invalid="ignore"):
                return reduce.reduceat(test(flat), starts).tolist()

        mean_zero = per_layer("moving_mean", lambda x: x == 0, np.logical_and)
        var_one = per_layer("moving_variance", lambda x: x == 1, np.logical_and)
        gamma_moved = per_layer("gamma", lambda x: x != 1, np.logical_or)
        beta_moved = per_layer("beta", lambda x: x != 0, np.logical_or)
        for j, i in enumerate(idx):
            default[i] = mean_zero[j] and var_one[j]
            trained[i] = gamma_moved[j] or beta_moved[j]
    return default, trained


@rule(
    "BN007",
    "bn-stats-never-updated",
    Severity.WARNING,
    Scope.MODEL,
    "{path}: moving_mean is all 0 and moving_variance all 1 (initial values) while {evidence}",
    "Re-estimate the statistics: run representative data through the model in training mode "
    "(weights frozen), or check that the layer was not frozen/called with training=False while training.",
    inference_only=True,
)
def bn_stats_never_updated(ctx: ModelContext) -> Iterator[Hit]:
    """A BatchNormalization layer still holds its initial statistics in a trained model.

    ## What it does
    Reports BN layers whose ``moving_mean`` is exactly 0 and ``moving_variance`` exactly
    1 in every channel, when the model is otherwise trained: the layer's own ``gamma``/
    ``beta`` moved away from 1/0, or at least half of the model's BN layers have updated
    statistics.

    ## Why is this bad?
    The moving statistics are only updated by forward passes in training mode. A layer
    always called with ``training=False`` (or frozen while its gamma/beta were trained
    elsewhere, or whose statistics were overwritten at load time) normalises with mean 0
    and variance 1 at inference: predictions differ from what training measured.

    ## Example
    ``head/bn: moving_mean is all 0 and moving_variance all 1 (initial values) while gamma/beta are trained``

    ## Fix
    Re-estimate the statistics on representative data; find why the layer never ran in
    training mode.

    ## Known problems
    A freshly initialised (untrained) model is not reported: nothing in it is trained. A
    model where a few layers were edited by hand is not taken as trained either.
    """
    default, trained = _stats_flags(ctx.bn_layers)
    updated = [ly for ly, d in zip(ctx.bn_layers, default) if not d and "moving_mean" in ly.values]
    trained_model = len(updated) * 2 >= len(ctx.bn_layers)
    for ly, d, t in zip(ctx.bn_layers, default, trained):
        if not d:
            continue
        if t:
            evidence = "gamma/beta are trained"
        elif trained_model:
            evidence = f"{plural(len(updated), 'other BN layer')} {'has' if len(updated) == 1 else 'have'} updated statistics"
        else:
            continue
        yield Hit(ly.layer_path, "moving_mean", {"path": ly.layer_path, "evidence": evidence},
                  (), int(ly.values["moving_mean"].size), {"evidence": evidence})


# --- the screen: which layers cannot trip any BN-layer rule -----------------------------

#: The BN-layer rules :func:`quiet_layers` vouches for.
SCREENED_BN = frozenset({"BN001", "BN002", "BN003", "BN004", "BN005", "BN006", "BN008"})
_VECTORS = ("gamma", "beta", "moving_mean", "moving_variance")


def _screenable(layer) -> bool:
    vals = layer.values
    if any(n not in vals for n in _VECTORS) or len(vals) != len(_VECTORS):
        return False
    n = vals["moving_variance"].shape
    return len(n) == 1 and n[0] > 0 and all(
        isinstance(vals[k], np.ndarray) and vals[k].dtype == np.float32 and vals[k].shape == n for k in _VECTORS
    )


def quiet_layers(layers, th) -> list[bool]:
    """For each layer, True when none of :data:`SCREENED_BN` can report anything on it.

    A conservative screen over every layer at once (the vectors concatenated, one
    vectorised pass, per-layer reductions with ``reduceat``), so that a model with a
    hundred healthy BN layers does not pay a hundred calls of every rule. A layer is
    quiet only when, in every channel: all four vectors are finite and the variance is
    not negative (BN001, BN004); the variance is at most 65504 (BN003); |gamma|, |beta|,
    |moving_mean| are at most ``param_outlier_abs``, below which BN005 never reports;
    the folded scale and offset, computed exactly as :func:`folded` does (float32, same
    operations), are at most ``min(65504, folded_extreme)`` (BN006, BN008); and the
    live variances span fewer than ``bn_outlier_decades`` decades (less a 1e-6 margin
    for rounding of ``log10``) or there are fewer than ``bn_min_channels`` of them
    (BN002: a reported channel is that far above the median, which is at least the
    smallest live variance). Layers without exactly the four float32 1-D vectors of one
    length are never quiet; their rules run as usual.
    """
    out = [False] * len(layers)
    lim = (th.bn_outlier_decades, th.param_outlier_abs, th.folded_extreme, th.dead_variance)
    if not all(np.isfinite(x) for x in lim):
        return out
    idx = [i for i, ly in enumerate(layers) if _screenable(ly)]
    if not idx:
        return out
    sizes = [layers[i].values["moving_variance"].size for i in idx]
    (g, starts), (b, _), (m, _), (v, _) = (stacked([layers[i].values[k] for i in idx]) for k in _VECTORS)
    eps = np.repeat(np.array([layers[i].epsilon for i in idx], dtype=np.float32), sizes)
    with np.errstate(all="ignore"):
        scale = g / np.sqrt(v + eps)
        offset = b - m * scale
        folded_limit = min(FLOAT16_MAX, th.folded_extreme)
        # NaN fails every "<=": a non-finite value anywhere makes the layer loud
        # BN005 compares in float64: the largest |x| per layer, compared as float64
        big = np.maximum(np.maximum(np.abs(g), np.abs(b)), np.abs(m))
        ok = v >= 0
        ok &= v <= FLOAT16_MAX
        ok &= np.abs(scale) <= folded_limit
        ok &= np.abs(offset) <= folded_limit
        quiet = np.logical_and.reduceat(ok, starts)
        quiet &= np.maximum.reduceat(big, starts).astype(np.float64) <= th.param_outlier_abs
        live = v > th.dead_variance
        n_live = np.add.reduceat(live, starts, dtype=np.int64)
        lo = np.minimum.reduceat(np.where(live, v, np.inf), starts).astype(np.float64)
        hi = np.maximum.reduceat(np.where(live, v, -np.inf), starts).astype(np.float64)
        spread = np.log10(hi) - np.log10(lo)
    quiet &= (n_live < th.bn_min_channels) | (spread <= th.bn_outlier_decades - 1e-6)
    for i, q in zip(idx, quiet.tolist()):
        out[i] = q
    return out
