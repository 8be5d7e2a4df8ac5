"""Rules as data: :class:`Rule` (stable ID, name, severity, message template, doc),
the registry, the contexts a check receives and the :class:`Hit` it yields.

A check is a generator function decorated with :func:`rule`; its docstring is the
rule's documentation page (What it does / Why is this bad? / Example / Fix / Known
problems) and the engine in :mod:`ckptscan.engine` turns each :class:`Hit` into a
:class:`~ckptscan.report.Finding`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Callable, Iterable, Iterator

import numpy as np

from ..report import Severity
from ..stats import TensorStats, ValueCounts

#: The largest finite float16 value.
FLOAT16_MAX = 65504.0


class Scope(str, Enum):
    """What a check looks at."""

    TENSOR = "tensor"
    """One variable's streaming statistics."""
    BN_LAYER = "bn-layer"
    """The vectors of one BatchNormalization layer together."""
    MODEL = "model"
    """The whole file: every BN layer, the config."""
    FILE = "file"
    """The file on disk, looked at before it is read (a pending journal)."""


@dataclass(frozen=True)
class Thresholds:
    """Tunable numbers of the rules (``[tool.ckptscan.thresholds]`` in settings)."""

    bn_outlier_decades: float = 3.0
    """BN002: a channel variance must exceed the layer median by this many powers of ten."""
    bn_outlier_mads: float = 6.0
    """BN002: …and by this many robust standard deviations (1.4826·MAD) of log10(variance)."""
    bn_outlier_min_spread: float = 0.25
    """BN002: floor of the robust spread, in decades (healthy layers span 2–4×)."""
    bn_min_channels: int = 4
    """BN002/BN005: fewer usable channels than this and no outlier test is made."""
    dead_variance: float = 1e-30
    """BN002: channel variances at or below this are dead channels, left out of the reference."""
    param_outlier_factor: float = 1e4
    """BN005: |value| above this many times the layer's median |value| (with a floor)…"""
    param_outlier_floor: float = 1e-2
    """BN005: …where the median is raised to at least this…"""
    param_outlier_abs: float = 100.0
    """BN005: …and |value| is also above this absolute bound."""
    folded_extreme: float = 1e12
    """BN006: a folded scale or offset beyond this in float32 is broken."""

    @classmethod
    def from_mapping(cls, data: dict) -> Thresholds:
        """Build from a settings table, accepting ``kebab-case`` or ``snake_case`` keys."""
        names = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise ValueError(f"unknown threshold {key!r} (known: {', '.join(sorted(names))})")
            kwargs[name] = int(value) if names[name].type in ("int", int) else float(value)
        return cls(**kwargs)


@dataclass(frozen=True)
class Hit:
    """What a check found; the engine adds the rule's metadata and the file."""

    layer_path: str
    variable: str
    args: dict
    """Values for the rule's message template."""
    indices: tuple[int, ...] = ()
    count: int = 0
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A rule: stable identity, default severity, message template and its check."""

    id: str
    """Stable ID (``BN002``); never reused for another meaning."""
    name: str
    """Kebab-case name (``bn-variance-outlier``)."""
    severity: Severity
    """Default severity."""
    scope: Scope
    category: str
    """``weight``, ``optimizer`` or ``config``."""
    message: str
    """One-line template formatted with :attr:`Hit.args`."""
    fix_hint: str
    """What to do, one line (kept apart from the message)."""
    patchable: bool
    """True when ``ckptscan fix`` has a strategy for it."""
    inference_only: bool
    """True when only inference reads the affected values (BN moving statistics)."""
    impact: bool
    """True when a finding marks its layer as broken for the impact analysis."""
    check: Callable = field(repr=False, compare=False, hash=False)
    doc: str = field(default="", repr=False, compare=False, hash=False)

    @property
    def summary(self) -> str:
        """First line of the documentation."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else self.name

    def format(self, hit: Hit) -> str:
        """The finding message for ``hit``."""
        return self.message.format(**hit.args)


REGISTRY: dict[str, Rule] = {}


def rule(
    id: str,
    name: str,
    severity: Severity,
    scope: Scope,
    message: str,
    fix_hint: str,
    *,
    category: str = "weight",
    patchable: bool = False,
    inference_only: bool = False,
    impact: bool = False,
) -> Callable[[Callable], Callable]:
    """Register the decorated check function as a rule."""

    def deco(fn: Callable) -> Callable:
        if id in REGISTRY:
            raise ValueError(f"duplicate rule id {id}")
        REGISTRY[id] = Rule(
            id=id, name=name, severity=severity, scope=scope, category=category, message=message,
            fix_hint=fix_hint, patchable=patchable, inference_only=inference_only, impact=impact,
            check=fn, doc=inspect.cleandoc(fn.__doc__ or ""),
        )
        fn.rule_id = id
        return fn

    return deco


# --- contexts ------------------------------------------------------------------------


@dataclass
class TensorContext:
    """One variable and its statistics."""

    var: object
    """The :class:`~ckptscan.formats.Variable`."""
    stats: TensorStats | ValueCounts
    """What the scan measured: :class:`~ckptscan.stats.ValueCounts` (NaN/±Inf counts and
    where they are; the scan engine computes only these) or full statistics."""
    in_bn_group: bool
    """True for gamma/beta/moving_* of a BatchNormalization layer (the BN rules own them)."""
    thresholds: Thresholds


@dataclass
class BNLayer:
    """The vectors of one BatchNormalization (or BN-like) layer, read whole (they are small)."""

    layer_path: str
    layer_class: str | None
    values: dict[str, np.ndarray]
    """Variable name (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) → float32 vector."""
    stats: dict[str, TensorStats | ValueCounts]
    """Per vector: NaN/±Inf counts (and, for ``moving_variance``, negatives)."""
    dtypes: dict[str, str]
    epsilon: float
    epsilon_known: bool
    variables: dict[str, object] = field(default_factory=dict)
    segments: tuple[tuple[int, int], ...] | None = None
    """Channel ranges of the ``Concatenate`` inputs feeding this layer, when the config says
    (:func:`ckptscan.rules.branches.concat_segments`); BN002 judges each on its own."""


@dataclass
class BNContext:
    """One BN layer for the per-layer rules."""

    layer: BNLayer
    thresholds: Thresholds


@dataclass(frozen=True)
class FileContext:
    """What a :data:`Scope.FILE` check receives: the checkpoint's path, before it is opened."""

    path: str


@dataclass(frozen=True)
class ModelContext:
    """The whole file: every BN layer and the model config."""

    bn_layers: list[BNLayer]
    model_config: dict | None
    layers: dict
    """Structural path → :class:`~ckptscan.formats.LayerInfo`."""
    thresholds: Thresholds
    integrity_failures: list = field(default_factory=list)
    """``(variable, reason)`` for every tensor whose bytes failed their stored checksum
    while the scan read them (TensorFlow checkpoints carry a CRC32C per tensor)."""


# --- message helpers ---------------------------------------------------------------


def where(indices: Iterable[int], count: int, one_dimensional: bool, limit: int = 8) -> str:
    """``channels [3, 7]``, ``channels [0–31]`` / ``flat indices [0, 12, …] (first 8 of 40)``.

    Runs of three or more consecutive indices are written as ``a–b``.
    """
    idx = list(indices)
    noun = "channel" if one_dimensional else "flat index"
    plural = "channels" if one_dimensional else "flat indices"
    parts: list[str] = []
    shown = 0
    i = 0
    while i < len(idx) and len(parts) < limit:
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{idx[i]}–{idx[j]}")
        else:
            j = i
            parts.append(str(idx[i]))
        shown += j - i + 1
        i = j + 1
    text = ", ".join(parts)
    if count > shown:
        return f"{plural} [{text}, …] (first {shown} of {count})"
    return f"{noun if count == 1 else plural} [{text}]"


def breakdown(s: TensorStats | ValueCounts) -> str:
    """``2 NaN, 1 +Inf`` (only the non-zero parts)."""
    parts = [(s.n_nan, "NaN"), (s.n_posinf, "+Inf"), (s.n_neginf, "-Inf")]
    return ", ".join(f"{n} {label}" for n, label in parts if n)


def fmt(x: float) -> str:
    """A short number for messages."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def plural(n: int, word: str) -> str:
    """``1 channel`` / ``3 channels``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def rules_in(scope: Scope, rules: Iterable[Rule]) -> Iterator[Rule]:
    """The rules of one scope, in ID order."""
    return (r for r in rules if r.scope == scope)
