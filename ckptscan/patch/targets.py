"""What to repair: the scan's patchable findings.

The targets are the findings of :mod:`ckptscan.engine` with ``patchable=True`` at
``error`` severity, plus warnings of rules named in ``--select`` and, with
``--include-optimizer``, optimizer state (OPT001) (``--ignore`` rule IDs,
``--layer`` glob). A finding's ``indices`` may be truncated, so the bad elements are
recomputed from the tensor (non-finite values; negative values of a BN variance) and
merged with the finding's.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from ..formats.base import Checkpoint, Variable
from ..rules import get_rule
from .strategies import Target, is_bn_stat


def bad_elements(ckpt: Checkpoint, var: Variable) -> np.ndarray:
    """Flat indices of non-finite values (and negative BN variances) of ``var``."""
    if not var.is_float or var.size == 0:
        return np.zeros(0, dtype=np.int64)
    parts = []
    pos = 0
    negvar = is_bn_stat(var) and var.name == "moving_variance"
    for block in ckpt.iter_blocks(var):
        b = np.asarray(block)
        mask = ~np.isfinite(b)
        if negvar:
            mask |= b < 0
        if mask.any():
            parts.append(np.nonzero(mask)[0] + pos)
        pos += b.size
    idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return idx.astype(np.int64)


def _layer_ok(var: Variable, layer: str | None) -> bool:
    if not layer:
        return True
    return fnmatch.fnmatchcase(var.layer_path, layer) or fnmatch.fnmatchcase(var.path, layer)


def _rule_ok(rid: str, select: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    def hit(pats):
        return any(rid == p or (rid.startswith(p) and p) for p in pats)
    if select and not hit(select):
        return False
    return not hit(ignore)


def scan_findings(ckpt: Checkpoint, select=(), ignore=(), include_optimizer=False):
    """The scan engine's findings for an open checkpoint."""
    from ..engine import make_options, scan_checkpoint

    options = make_options(select=list(select) or None, ignore=list(ignore), include_optimizer=include_optimizer)
    findings = scan_checkpoint(ckpt, options).findings
    return findings


def find_targets(ckpt: Checkpoint, select=(), ignore=(), layer=None, include_optimizer=False) -> list[Target]:
    """The targets of ``fix``: patchable scan findings at error level (or selected by rule)."""
    findings = scan_findings(ckpt, select, ignore, include_optimizer)
    by_path: dict[str, list] = {}
    for f in findings:
        sev = getattr(f.severity, "value", f.severity)
        explicit = any(f.rule_id == s or f.rule_id.startswith(s) for s in select if s)
        wanted = explicit or (f.category == "optimizer" and include_optimizer)
        # the rule's patchability, not the finding's: a finding on a variable this checkpoint
        # cannot patch (Checkpoint.patch_refusal) is still a target, reported unfixed with why
        if not get_rule(f.rule_id).patchable or not f.variable or (sev != "error" and not wanted):
            continue
        if f.category == "optimizer" and not include_optimizer:
            continue
        if not _rule_ok(f.rule_id, tuple(select), tuple(ignore)):
            continue
        by_path.setdefault(f.path, []).append(f)
    out = []
    for var in ckpt.variables:
        fs = by_path.get(var.path)
        if not fs or not _layer_ok(var, layer):
            continue
        idx = bad_elements(ckpt, var)
        merged = set(int(i) for i in idx)
        for f in fs:
            merged.update(int(i) for i in f.indices)
        merged = {i for i in merged if 0 <= i < var.size}
        if not merged:
            continue
        rules = tuple(dict.fromkeys(f.rule_id for f in fs))
        out.append(Target(var, tuple(sorted(merged)), rules, fs[0].message))
    return out
