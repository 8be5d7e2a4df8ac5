"""Value rules over one tensor's statistics: non-finite weights, float16 overflow at
save time, non-finite optimizer state."""

from __future__ import annotations

from typing import Iterator

from ..report import Severity
from .base import Hit, Scope, TensorContext, breakdown, rule, where


def _indices_args(ctx: TensorContext) -> tuple[tuple[int, ...], str]:
    s = ctx.stats
    one_d = len(ctx.var.shape) == 1
    return s.nonfinite_indices, where(s.nonfinite_indices, s.n_nonfinite, one_d)


def _nonfinite_hit(ctx: TensorContext) -> Hit:
    """The hit of a tensor holding NaN/±Inf (NUM001, OPT001): counts, breakdown, where."""
    s = ctx.stats
    idx, loc = _indices_args(ctx)
    return Hit(
        ctx.var.layer_path, ctx.var.name,
        {"path": ctx.var.path, "count": s.n_nonfinite, "size": s.size, "breakdown": breakdown(s), "where": loc},
        idx, s.n_nonfinite, {"nan": s.n_nan, "posinf": s.n_posinf, "neginf": s.n_neginf},
    )


@rule(
    "NUM001",
    "non-finite-weight",
    Severity.ERROR,
    Scope.TENSOR,
    "{path}: {count} of {size} values non-finite ({breakdown}) at {where}",
    "Restore this variable from the last checkpoint where it was finite, or retrain; "
    "`ckptscan fix` can replace the values when a safe strategy exists.",
    patchable=True,
    impact=True,
)
def non_finite_weight(ctx: TensorContext) -> Iterator[Hit]:
    """A model weight holds NaN or ±Inf.

    ## What it does
    Counts NaN, +Inf and -Inf in every model weight (kernels, biases, embeddings,
    normalization parameters other than the BatchNormalization vectors, which have
    their own rules BN001 and BN004) and names the channels (1-D tensors) or the first
    flat indices (larger tensors) that hold them.

    ## Why is this bad?
    One non-finite weight makes every output that depends on it NaN: NaN propagates
    through every sum and product, and ``Inf - Inf`` or ``0 · Inf`` creates new NaN.
    The model still loads without a warning; it only fails at ``predict`` time.

    ## Example
    ``dense/kernel: 1 of 32768 values non-finite (1 +Inf) at flat index [517]``

    ## Fix
    Go back to the last checkpoint where the tensor was finite (``ckptscan scan`` every
    epoch's file to find it). A single corrupted value (a bit flip, a bad copy) can be
    replaced, but re-training from a good checkpoint is the honest repair.

    ## Known problems
    Integer tensors are not checked (they cannot hold NaN). Optimizer state is reported
    by OPT001 instead.
    """
    s = ctx.stats
    if ctx.in_bn_group or ctx.var.kind != "weight" or s.n_nonfinite == 0:
        return
    yield _nonfinite_hit(ctx)


@rule(
    "F16001",
    "float16-overflow-at-save",
    Severity.WARNING,
    Scope.TENSOR,
    "{path}: stored as float16 and holds {inf}: the value overflowed float16 (max 65504) when saved",
    "Save the weights in float32 (a float32 variable policy, e.g. mixed_float16 keeps variables in "
    "float32) and restore the tensor from a float32 copy.",
    impact=False,
)
def float16_overflow_at_save(ctx: TensorContext) -> Iterator[Hit]:
    """A tensor stored as float16 already holds ±Inf.

    ## What it does
    Looks at tensors whose stored dtype is float16 and reports those that contain
    +Inf or -Inf, in addition to the rule that reports the non-finite values
    themselves (NUM001, BN001, BN004 or OPT001).

    ## Why is this bad?
    float16 cannot hold values beyond 65504. A value that was finite (and large) in
    float32 became Inf when the variable was cast to float16, typically by a model
    built with a ``float16`` variable dtype or by a converter. The original value is
    lost; the Inf poisons inference.

    ## Example
    ``conv1/bias: stored as float16 and holds 2 +Inf: the value overflowed float16 (max 65504) when saved``

    ## Fix
    Keep variables in float32 (``mixed_float16`` does this: only computations are
    float16) and re-export from the float32 copy.

    ## Known problems
    An Inf that was already Inf in float32 is reported the same way.
    """
    s = ctx.stats
    if ctx.var.dtype != "float16" or s.n_inf == 0:
        return
    parts = [f"{s.n_posinf} +Inf" if s.n_posinf else "", f"{s.n_neginf} -Inf" if s.n_neginf else ""]
    one_d = len(ctx.var.shape) == 1
    inf_idx = tuple(i for i in s.nonfinite_indices if i not in set(s.nan_indices))
    yield Hit(
        ctx.var.layer_path, ctx.var.name,
        {"path": ctx.var.path, "inf": ", ".join(p for p in parts if p), "where": where(inf_idx, s.n_inf, one_d)},
        inf_idx, s.n_inf, {"posinf": s.n_posinf, "neginf": s.n_neginf},
    )


@rule(
    "OPT001",
    "optimizer-state-non-finite",
    Severity.WARNING,
    Scope.TENSOR,
    "{path}: optimizer state holds {count} non-finite values of {size} ({breakdown}) at {where}; "
    "resuming training from this file will fail",
    "Inference is unaffected. To resume training, restore the optimizer state from an earlier "
    "checkpoint or reset the optimizer (re-compile) and keep the model weights.",
    category="optimizer",
)
def optimizer_state_non_finite(ctx: TensorContext) -> Iterator[Hit]:
    """Optimizer state (Adam moments, iteration counters, loss scale) holds NaN or ±Inf.

    ## What it does
    Checks every variable saved under the optimizer (``optimizer/vars/…`` in Keras 3,
    ``optimizer_weights`` in legacy files) for NaN and ±Inf. Reported as its own
    category: it does not change what the model predicts.

    ## Why is this bad?
    ``predict`` never reads optimizer state, so inference is fine. Resuming training
    from this file feeds the NaN moments into the next update, and the weights become
    NaN after one step.

    ## Example
    ``optimizer/adam/dense_kernel_momentum: optimizer state holds 4 non-finite values of 512 (4 NaN) …``

    ## Fix
    Resume from an earlier checkpoint, or re-compile the model (fresh optimizer) and
    continue from these weights. ``--no-include-optimizer`` skips these variables.

    ## Known problems
    Variable names inside the optimizer are whatever the writer stored; ckptscan does
    not map every moment back to the weight it belongs to.
    """
    s = ctx.stats
    if ctx.var.kind != "optimizer" or s.n_nonfinite == 0:
        return
    yield _nonfinite_hit(ctx)


__all__ = ["non_finite_weight", "float16_overflow_at_save", "optimizer_state_non_finite"]
