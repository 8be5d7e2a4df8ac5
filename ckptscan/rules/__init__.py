"""The rule registry: every rule with its stable ID.

===========  ==========================  ========  ==========================================
ID           name                        severity  what
===========  ==========================  ========  ==========================================
NUM001       non-finite-weight           error     NaN/±Inf in a model weight
F16001       float16-overflow-at-save    warning   float16-stored tensor already holds ±Inf
OPT001       optimizer-state-non-finite  warning   NaN/±Inf in optimizer state (resume risk)
BN001        bn-variance-invalid         error     moving_variance NaN/±Inf/negative
BN002        bn-variance-outlier         warning   variance channels far above the layer's
BN003        bn-variance-fp16-overflow   warning   variance > 65504 (breaks fp16 export)
BN004        bn-param-non-finite         error     moving_mean/gamma/beta NaN/±Inf
BN005        bn-param-outlier            warning   moving_mean/gamma/beta extreme channel
BN006        bn-folded-invalid           error     folded scale/offset non-finite in float32
BN007        bn-stats-never-updated      warning   statistics still 0/1 in a trained model
BN008        bn-folded-fp16-overflow     warning   folded scale/offset overflows fp16/bf16
CFG001       lambda-layer                info      Lambda layer in the config
CFG002       custom-object               info      custom (non-Keras) class in the config
INT001       checksum-mismatch           error     stored bytes fail their checksum (TF CRC32C)
JRN001       interrupted-fix             error     an interrupted ckptscan fix left its journal
===========  ==========================  ========  ==========================================
"""

from __future__ import annotations

from . import batchnorm, config, file, integrity, numeric  # noqa: F401  (registration)
from .base import (
    REGISTRY,
    BNContext,
    BNLayer,
    FileContext,
    Hit,
    ModelContext,
    Rule,
    Scope,
    TensorContext,
    Thresholds,
)
from .batchnorm import SCREENED_BN, quiet_layers

__all__ = [
    "ALL_RULES", "NONFINITE_ONLY", "SCREENED_BN", "BNContext", "BNLayer", "FileContext", "Hit", "ModelContext", "Rule", "Scope",
    "TensorContext", "Thresholds", "get_rule", "quiet_layers", "select_rules",
]

#: Tensor rules that yield nothing for a tensor without NaN/±Inf: the scan engine does
#: not call them for clean tensors (``tests/rules/test_rules.py`` checks the claim).
NONFINITE_ONLY = frozenset({"NUM001", "F16001", "OPT001"})

#: Every rule, in ID order.
ALL_RULES: tuple[Rule, ...] = tuple(sorted(REGISTRY.values(), key=lambda r: r.id))


def get_rule(rule_id: str) -> Rule:
    """The rule with this ID or kebab name (case-insensitive); KeyError otherwise."""
    key = rule_id.strip()
    for r in ALL_RULES:
        if r.id.lower() == key.lower() or r.name == key.lower():
            return r
    raise KeyError(rule_id)


def _matches(rule: Rule, codes: list[str]) -> int:
    """Length of the longest code prefix matching ``rule`` (0 for none)."""
    best = 0
    for c in codes:
        c = c.strip().upper()
        if c == "ALL":
            best = max(best, 1)
        elif c and rule.id.startswith(c):
            best = max(best, len(c) + 1)
        elif c and c.lower() == rule.name:
            best = max(best, 100)
    return best


def select_rules(select: list[str] | None = None, ignore: list[str] | None = None) -> tuple[Rule, ...]:
    """Rules after ``--select``/``--ignore`` (ID prefixes like ruff: ``BN`` = every BN rule).

    With both matching a rule, the more specific (longer) code wins; on a tie, ignore wins.
    Unknown codes raise ValueError.
    """
    for code in (select or []) + (ignore or []):
        c = code.strip()
        if c.upper() != "ALL" and not any(r.id.startswith(c.upper()) or r.name == c.lower() for r in ALL_RULES):
            raise ValueError(f"unknown rule code {code!r}")
    out = []
    for r in ALL_RULES:
        s = _matches(r, select) if select else 1
        i = _matches(r, ignore or [])
        if s and s > i:
            out.append(r)
    return tuple(out)
