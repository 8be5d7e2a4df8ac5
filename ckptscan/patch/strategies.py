"""Repair strategies: turn a target (a tensor and its bad elements) into a :class:`Change`.

=========  ===============================================================  =============
strategy   new values                                                       applies to
=========  ===============================================================  =============
reset      the layer's ``moving_mean_initializer``/``moving_variance_       BN moving
           initializer`` (zeros/ones by default, ``Constant`` honoured);    statistics
           a variance that would be 1 in every channel one step above 1
           (see :func:`reset_variance`)
median     median of the same variable's healthy channels                   BN moving stats
clamp      variance clipped into ``[clamp_min, clamp_max]``; the ceiling    moving_variance
           is by default the layer's largest healthy variance
           (:func:`healthy_range`), never a BN002/BN003 outlier
from       the same tensor of a reference checkpoint (bit for bit)          any tensor
value      a constant (never ≤ 0 for a variance)                            any tensor
zero       0, as a freshly built optimizer starts (never a counter, a       optimizer
           learning rate or a loss scale)                                   slots
=========  ===============================================================  =============

Every strategy's values are healthy by ckptscan's own rules, so the next ``scan`` reports
none of the findings a fix repaired and none it created (tests/patch/test_fix_scan_agree.py).

By default only the bad elements change; ``whole_tensor`` rewrites the variable.
A strategy that cannot apply raises :class:`PatchRefusedError` naming the ones that do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .._compat import assert_never
from ..errors import PatchRefusedError
from ..formats.base import Checkpoint, Variable, bf16_to_f32, f32_to_bf16_bits
from .model import Change
from .rawio import decode, read_at, read_raw

BN_CLASSES = {"BatchNormalization", "SyncBatchNormalization"}
BN_STATS = ("moving_mean", "moving_variance")
FLOAT16_MAX = 65504.0
FLOAT32_MAX = float(np.finfo(np.float32).max)
STOP_GAP = ("stop-gap: moving statistics reset to the initializer values (a variance of 1 in every "
            "channel one step above 1, so the layer is not taken for one never updated); the layer now "
            "normalizes with made-up statistics. Restore them from a good checkpoint "
            "(--from) or recalibrate before trusting accuracy")
ESTIMATE = "estimate: bad channels take the median of the healthy channels of the same layer"


class _Choice(str, Enum):
    """A command-line choice: :meth:`of` names the choices when a value is not one."""

    @classmethod
    def of(cls, value: str) -> _Choice:
        """The member named ``value`` (ValueError listing the choices otherwise)."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown --{cls.__name__.lower()} {value!r} (choose from {choices})") from None


class Strategy(_Choice):
    """The repair strategies (``--strategy``)."""

    AUTO = "auto"
    RESET = "reset"
    MEDIAN = "median"
    CLAMP = "clamp"
    FROM = "from"
    VALUE = "value"
    ZERO = "zero"
    """Optimizer slots (Adam/RMSprop moments …) → 0."""

    def needs(self) -> str | None:
        """The option this strategy cannot run without (``--from REF``, ``--value V``), or None."""
        if self is Strategy.FROM:
            return "--from REF"
        if self is Strategy.VALUE:
            return "--value V"
        if self is Strategy.AUTO or self is Strategy.RESET or self is Strategy.MEDIAN or self is Strategy.CLAMP \
                or self is Strategy.ZERO:
            return None
        assert_never(self)


class Verify(_Choice):
    """How a repair is verified after the write (``--verify``)."""

    FULL = "full"
    """Every tensor re-hashed (the untouched ones must be unchanged) and zip CRCs checked."""
    TARGETS = "targets"
    """Only the changed tensors re-read."""

    @property
    def rehashes_all(self) -> bool:
        """True when every tensor of the file is re-hashed, not only the changed ones."""
        if self is Verify.FULL:
            return True
        if self is Verify.TARGETS:
            return False
        assert_never(self)


@dataclass(frozen=True)
class Target:
    """A tensor to repair and which of its elements are bad."""

    variable: Variable
    indices: tuple[int, ...]
    """Flat indices of the bad elements (all of them)."""
    rule_ids: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Options:
    """How to repair (the strategy knobs of ``ckptscan fix``)."""

    strategy: Strategy = Strategy.AUTO
    per_rule: dict = field(default_factory=dict, hash=False, compare=False)
    """Rule ID → :class:`Strategy`, overriding :attr:`strategy`."""
    value: float | None = None
    clamp_min: float = 0.0
    clamp_max: float | None = None
    """None: the largest healthy variance of the layer (at most 65504 for float16)."""
    whole_tensor: bool = False


def is_bn_stat(var: Variable) -> bool:
    """True for BatchNormalization ``moving_mean``/``moving_variance``."""
    return var.name in BN_STATS and (var.layer_class in BN_CLASSES or var.layer_class is None)


def applicable(var: Variable, values: np.ndarray | None = None, bad: np.ndarray | None = None,
               has_ref: bool = False) -> list[str]:
    """Names of the strategies that can repair ``var`` (for refusal messages)."""
    out = []
    if var.kind == "optimizer":
        return ["zero", "from REF" if not has_ref else "from"] if is_slot(var) else []
    if is_bn_stat(var):
        out.append("reset")
        if values is not None and bad is not None and _healthy(var, values, bad).any():
            out.append("median")
        if var.name == "moving_variance" and (values is None or bad is None or not np.isnan(values[bad]).any()):
            out.append("clamp")
    out.append("from REF" if not has_ref else "from")
    out.append("value V" if var.name != "moving_variance" else "value V (V > 0)")
    return out


def _healthy(var: Variable, values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values)
    if var.name == "moving_variance":
        ok &= values >= 0
    ok[bad] = False
    return ok


#: Optimizer variables that are not slots: never changed by ``fix`` (substrings, lower-case).
NOT_SLOTS = ("iteration", "learning_rate", "loss_scale", "step", "decay")


def is_slot(var: Variable) -> bool:
    """True for an optimizer slot (a moment, accumulator…), False for a counter or hyper-parameter.

    Iteration counters are integers, learning rates and loss scales scalars; a name
    that says so (``iterations``, ``learning_rate``) is never a slot either.
    """
    name = var.path.lower()
    return var.kind == "optimizer" and var.is_float and len(var.shape) > 0 and not any(n in name for n in NOT_SLOTS)


def reset_variance(v: float, dtype: str) -> float:
    """The smallest ``dtype`` value above ``v``: the variance a reset writes.

    A layer whose moving statistics are exactly the initializer's (mean 0, variance 1)
    is what BN007 reports as "never updated". One step above the initializer value
    (1.0000001 in float32, 1.0009766 in float16, 1.0078125 in bfloat16) is the same
    stop-gap for inference and tells a later scan that the statistics were reset, not
    forgotten.
    """
    if dtype == "bfloat16":
        bits = f32_to_bf16_bits(np.asarray([v], np.float32))
        return float(bf16_to_f32((bits.astype(np.uint32) + (1 if v >= 0 else -1)).astype(np.uint16))[0])
    dt = np.dtype(dtype) if dtype in ("float16", "float32", "float64") else np.dtype(np.float32)
    return float(np.nextafter(dt.type(v), dt.type(np.inf)))


def healthy_range(var: Variable, values: np.ndarray, bad: np.ndarray) -> tuple[float, float] | None:
    """(lowest, highest) healthy variance of the layer, or None without one.

    Healthy: finite, not negative, not among ``bad`` and not a high outlier by BN002's
    own test (so a clamped channel is never reported again).
    """
    from ..rules import Thresholds
    from ..rules.branches import variance_outliers

    ok = _healthy(var, values, bad)
    if ok.any():
        probe = np.where(ok, values, np.nan).astype(np.float64)
        outl, _, _ = variance_outliers(probe, Thresholds())
        ok &= ~outl
    if not ok.any():
        return None
    return float(values[ok].min()), float(values[ok].max())


def initializer_value(spec, default: float, where: str, var: Variable) -> float:
    """The constant an initializer config produces (Zeros, Ones, Constant)."""
    if spec is None:
        return default
    cfg: dict = {}
    if isinstance(spec, str):
        name = spec
    elif isinstance(spec, dict):
        name = str(spec.get("class_name", ""))
        cfg = spec.get("config") or {}
    else:
        raise PatchRefusedError(where, f"{var.path}: unreadable initializer {spec!r}; use median, from or value")
    low = name.lower().replace("_", "")
    if low in ("zeros", "zero"):
        return 0.0
    if low in ("ones", "one"):
        return 1.0
    if low == "constant":
        v = cfg.get("value", 0.0)
        try:
            return float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise PatchRefusedError(where, f"{var.path}: Constant initializer value {v!r} is not a number") from None
    raise PatchRefusedError(where, f"{var.path}: initializer {name} is not a constant; use median, from or value")


def make_change(ckpt: Checkpoint, target: Target, strategy: Strategy, opts: Options,
                ref: Checkpoint | None = None) -> Change:
    """The change ``strategy`` makes to ``target`` (refuses when it cannot apply)."""
    var = target.variable
    where = ckpt.path
    bad = np.asarray(sorted(set(target.indices)), dtype=np.int64)
    idx = np.arange(var.size, dtype=np.int64) if opts.whole_tensor else bad
    # a BN vector is read whole (median, clamp and the refusal look at every channel);
    # any other tensor, which may be a 1 GiB embedding, only at the elements that change
    values = decode(read_raw(ckpt, var), var).astype(np.float64) if is_bn_stat(var) else None
    at_idx = values[idx] if values is not None else decode(read_at(ckpt, var, idx), var).astype(np.float64)
    reason = "; ".join(filter(None, [", ".join(target.rule_ids), target.message]))
    why_not = ", ".join(applicable(var, values, bad, ref is not None))

    def refuse(msg: str) -> PatchRefusedError:
        return PatchRefusedError(where, f"{var.path}: {msg}; strategies that apply: {why_not}")

    note = ""
    if strategy is Strategy.RESET:
        if not is_bn_stat(var):
            raise refuse("reset applies to BatchNormalization moving statistics only")
        layer = ckpt.layer_for(var)
        cfg = layer.config if layer is not None else {}
        default = 0.0 if var.name == "moving_mean" else 1.0
        v = initializer_value(cfg.get(f"{var.name}_initializer"), default, where, var)
        if var.name == "moving_variance" and v == 1.0:
            after = values.copy()
            after[idx] = v
            if np.all(after == 1.0):  # the whole layer at the initial values reads as "never updated"
                v = reset_variance(v, var.dtype)
        new = np.full(idx.size, v)
        note = STOP_GAP if layer is not None else (
            STOP_GAP + f" (no layer config: Keras' default initializer, {v:g}, assumed; pass --config)")
    elif strategy is Strategy.MEDIAN:
        if not is_bn_stat(var):
            raise refuse("median applies to BatchNormalization moving statistics only")
        ok = _healthy(var, values, bad)
        if not ok.any():
            raise refuse("no healthy channel left for median")
        new = np.full(idx.size, float(np.median(values[ok])))
        note = ESTIMATE
    elif strategy is Strategy.CLAMP:
        if var.name != "moving_variance":
            raise refuse("clamp applies to moving_variance only")
        sel = at_idx
        if np.isnan(sel).any():
            nan_at = idx[np.isnan(sel)]
            raise refuse(f"clamp cannot repair NaN (channels {_fmt_idx(nan_at)})")
        if values is None:
            raise refuse("clamp applies to BatchNormalization moving_variance only")
        lo = opts.clamp_min
        if opts.clamp_max is not None:
            hi = opts.clamp_max
        else:
            rng = healthy_range(var, values, bad)
            if rng is None:
                raise refuse("clamp has no healthy channel to take its ceiling from (give --clamp-max)")
            hi = min(rng[1], FLOAT16_MAX if var.dtype == "float16" else FLOAT32_MAX)
            note = f"clamped to at most the layer's largest healthy variance {hi:.7g}"
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise PatchRefusedError(where, f"clamp range [{lo:g}, {hi:g}] is not a finite range with 0 <= min <= max")
        new = np.clip(sel, lo, hi)
    elif strategy is Strategy.FROM:
        if ref is None:
            raise PatchRefusedError(where, "--strategy from needs --from REF")
        try:
            rv = ref.find(var.path)
        except KeyError:
            raise PatchRefusedError(where, f"{var.path}: not found in reference {ref.path}") from None
        if tuple(rv.shape) != tuple(var.shape):
            raise PatchRefusedError(where, f"{var.path}: reference {ref.path} has shape {tuple(rv.shape)}, "
                                    f"this file {tuple(var.shape)}; nothing written")
        if rv.dtype != var.dtype:
            raise PatchRefusedError(where, f"{var.path}: reference {ref.path} stores {rv.dtype}, "
                                    f"this file {var.dtype}; nothing written")
        new = decode(read_at(ref, rv, idx), rv).astype(np.float64)
        broken = ~np.isfinite(new) | ((new < 0) if var.name == "moving_variance" else False)
        if np.any(broken):
            raise PatchRefusedError(where, f"{var.path}: the reference is broken too "
                                    f"(elements {_fmt_idx(idx[np.asarray(broken)])}); nothing written")
        note = f"copied from {ref.path}"
    elif strategy is Strategy.ZERO:
        if var.kind != "optimizer":
            raise refuse("zero applies to optimizer slots only")
        if not is_slot(var):
            raise PatchRefusedError(where, f"{var.path}: an optimizer counter or hyper-parameter "
                                    "(iterations, learning rate, loss scale) is never changed; use --from REF "
                                    "for the whole optimizer state or re-compile")
        new = np.zeros(idx.size)
        note = "optimizer slots set to 0, as a freshly built optimizer starts"
    elif strategy is Strategy.VALUE:
        if opts.value is None:
            raise PatchRefusedError(where, "--strategy value needs --value V")
        v = float(opts.value)
        if not math.isfinite(v):
            raise PatchRefusedError(where, f"--value {v} is not finite")
        if var.name == "moving_variance" and v <= 0:
            raise refuse(f"refusing value {v:g} for a variance (a BN variance must be > 0)")
        new = np.full(idx.size, v)
    else:  # pragma: no cover - AUTO is resolved by choose()
        raise ValueError(strategy)
    old = at_idx
    return Change(var, None if opts.whole_tensor else tuple(int(i) for i in idx), np.asarray(new, dtype=np.float64),
                  old, reason=reason, strategy=strategy.value, note=note)


def choose(target: Target, opts: Options, values: np.ndarray | None, has_ref: bool) -> Strategy | None:
    """The strategy for ``target``: per rule, else the chosen one, else the automatic one.

    Automatic: optimizer slots (``--include-optimizer``) → ``from`` with a reference,
    else ``zero``, whatever ``--strategy`` says for the model's tensors; BN moving
    statistics → ``median`` when a healthy channel is left, else ``reset``; other tensors → ``from`` with a reference, ``value`` with ``--value``,
    else None (left unfixed).
    """
    for rid in target.rule_ids:
        if rid in opts.per_rule:
            return Strategy(opts.per_rule[rid])
    var = target.variable
    if var.kind == "optimizer":  # --include-optimizer: moments → 0, or the reference's
        return Strategy.FROM if has_ref else Strategy.ZERO
    if opts.strategy is not Strategy.AUTO:
        return opts.strategy
    if has_ref:
        return Strategy.FROM
    if is_bn_stat(var):
        bad = np.asarray(target.indices, dtype=np.int64)
        if values is not None and _healthy(var, values, bad).any() and not opts.whole_tensor:
            return Strategy.MEDIAN
        return Strategy.RESET
    if opts.value is not None:
        return Strategy.VALUE
    return None


def _fmt_idx(idx, limit: int = 8) -> str:
    idx = [int(i) for i in np.asarray(idx).reshape(-1)]
    s = ", ".join(map(str, idx[:limit]))
    return s + (f", … ({len(idx)} in all)" if len(idx) > limit else "")
