"""Checkpoint history: ``diff`` two checkpoints and the health ``timeline`` of a series.

Both work on any pair of formats ckptscan reads (a ``.keras`` against a legacy
``.h5``, a sharded store against a ``.weights.h5``): variables are matched by their
Keras path (``layer_path/name``), never by HDF5 location, and values are streamed
block by block through :meth:`~ckptscan.formats.base.Checkpoint.iter_blocks`, so
neither tensor is ever held whole in memory.

NaN-aware comparison: a NaN in A and a NaN at the same position in B is *not* a
change; ``+Inf`` equals ``+Inf``. Differences (absolute and relative) are measured
over the positions where both values are finite; a value that is finite in A and
non-finite in B is counted as *new non-finite*, the reverse as *resolved*.

Relative difference is symmetric: ``|a - b| / max(|a|, |b|)`` (0 where both are 0),
so it lies in ``[0, 2]`` and does not explode on zeros.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .discover import natural_key
from .errors import CkptscanError
from .formats.base import DEFAULT_BLOCK_ELEMS, Checkpoint, Variable

#: Version of the ``diff --json`` and ``timeline --json`` document layouts.
HISTORY_SCHEMA_VERSION = 1


# --- diff ----------------------------------------------------------------------
@dataclass(frozen=True)
class VariableDiff:
    """How one variable differs between checkpoint A and checkpoint B."""

    path: str
    """``layer_path/name`` (the matching key)."""
    status: str
    """``same``, ``changed``, ``shape-mismatch``, ``only-in-a`` or ``only-in-b``."""
    kind: str = "weight"
    """``weight`` or ``optimizer``."""
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    changed_values: int = 0
    """Positions whose values differ (NaN vs NaN and Inf vs same Inf are equal)."""
    max_abs_diff: float = 0.0
    """Largest ``|a - b|`` over positions where both are finite."""
    max_rel_diff: float = 0.0
    """Largest ``|a - b| / max(|a|, |b|)`` over positions where both are finite."""
    nonfinite_a: int = 0
    nonfinite_b: int = 0
    new_nonfinite: int = 0
    """Positions finite in A and NaN/Inf in B."""
    resolved_nonfinite: int = 0
    """Positions NaN/Inf in A and finite in B."""

    @property
    def dtype_mismatch(self) -> bool:
        """True when both sides exist and store different dtypes (values still compared)."""
        return self.dtype_a is not None and self.dtype_b is not None and self.dtype_a != self.dtype_b

    def to_dict(self) -> dict:
        """The stable JSON form."""
        return {
            "path": self.path,
            "status": self.status,
            "kind": self.kind,
            "shape_a": None if self.shape_a is None else list(self.shape_a),
            "shape_b": None if self.shape_b is None else list(self.shape_b),
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "dtype_mismatch": self.dtype_mismatch,
            "changed_values": self.changed_values,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "nonfinite_a": self.nonfinite_a,
            "nonfinite_b": self.nonfinite_b,
            "new_nonfinite": self.new_nonfinite,
            "resolved_nonfinite": self.resolved_nonfinite,
        }


@dataclass(frozen=True)
class DiffResult:
    """The comparison of two checkpoints, one :class:`VariableDiff` per variable path."""

    a: str
    b: str
    format_a: str
    format_b: str
    variables: tuple[VariableDiff, ...]
    tolerance: float = 0.0

    def by_status(self, status: str) -> list[VariableDiff]:
        """The variable diffs with ``status``."""
        return [v for v in self.variables if v.status == status]

    @property
    def identical(self) -> bool:
        """True when every variable is present on both sides with equal values."""
        return all(v.status == "same" and not v.dtype_mismatch for v in self.variables)

    @property
    def new_nonfinite(self) -> int:
        """Total values that became NaN/Inf from A to B."""
        return sum(v.new_nonfinite for v in self.variables)

    def get(self, path: str) -> VariableDiff:
        """The diff of the variable ``path`` (KeyError otherwise)."""
        for v in self.variables:
            if v.path == path:
                return v
        raise KeyError(path)

    def summary(self) -> dict:
        """Counts per status plus the non-finite totals."""
        counts = {s: len(self.by_status(s)) for s in ("same", "changed", "shape-mismatch", "only-in-a", "only-in-b")}
        return {
            "matched": counts["same"] + counts["changed"] + counts["shape-mismatch"],
            **{k.replace("-", "_"): n for k, n in counts.items()},
            "dtype_mismatch": sum(1 for v in self.variables if v.dtype_mismatch),
            "new_nonfinite_values": self.new_nonfinite,
            "new_nonfinite_variables": sum(1 for v in self.variables if v.new_nonfinite),
            "resolved_nonfinite_values": sum(v.resolved_nonfinite for v in self.variables),
        }

    def to_dict(self) -> dict:
        """The ``diff --json`` document."""
        return {
            "schema_version": HISTORY_SCHEMA_VERSION,
            "a": {"file": self.a, "format": self.format_a},
            "b": {"file": self.b, "format": self.format_b},
            "tolerance": self.tolerance,
            "identical": self.identical,
            "summary": self.summary(),
            "variables": [v.to_dict() for v in self.variables],
        }


def _aligned(blocks_a: Iterator[np.ndarray], blocks_b: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pair two flat block streams of the same total length into equal-length pieces.

    Each stream is advanced only once its current block is used up, so the
    "valid until the next block" contract of ``iter_blocks`` holds without copies.
    """
    a = b = None
    ia = ib = 0
    while True:
        if a is None or ia >= len(a):
            a, ia = next(blocks_a, None), 0
            if a is None:
                return
            if len(a) == 0:
                continue
        if b is None or ib >= len(b):
            b, ib = next(blocks_b, None), 0
            if b is None:
                return
            if len(b) == 0:
                continue
        n = min(len(a) - ia, len(b) - ib)
        yield a[ia : ia + n], b[ib : ib + n]
        ia += n
        ib += n


@dataclass
class _Acc:
    changed: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    nf_a: int = 0
    nf_b: int = 0
    new_nf: int = 0
    resolved: int = 0


def _compare_block(xa: np.ndarray, xb: np.ndarray, acc: _Acc, tolerance: float) -> None:
    if xa.dtype.kind in "fc" or xb.dtype.kind in "fc":
        fa = xa.astype(np.float64, copy=False)
        fb = xb.astype(np.float64, copy=False)
        fin_a, fin_b = np.isfinite(fa), np.isfinite(fb)
        both = fin_a & fin_b
        acc.nf_a += int(fin_a.size - np.count_nonzero(fin_a))
        acc.nf_b += int(fin_b.size - np.count_nonzero(fin_b))
        acc.new_nf += int(np.count_nonzero(fin_a & ~fin_b))
        acc.resolved += int(np.count_nonzero(~fin_a & fin_b))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(both, np.abs(fa - fb), 0.0)
            denom = np.maximum(np.abs(fa), np.abs(fb))
            rel = np.where(both & (denom > 0), diff / np.where(denom > 0, denom, 1.0), 0.0)
        if diff.size:
            acc.max_abs = max(acc.max_abs, float(diff.max()))
            acc.max_rel = max(acc.max_rel, float(rel.max()))
        # changed: finite pairs beyond tolerance; non-finite pairs unless identical (NaN==NaN, Inf==Inf)
        neither = ~fin_a & ~fin_b
        same_nonfinite = neither & ((np.isnan(fa) & np.isnan(fb)) | (fa == fb))
        changed_finite = both & (diff > tolerance)
        changed_mixed = (fin_a ^ fin_b) | (neither & ~same_nonfinite)
        acc.changed += int(np.count_nonzero(changed_finite | changed_mixed))
    else:
        ia, ib = xa.astype(np.int64, copy=False), xb.astype(np.int64, copy=False)
        d = np.abs(ia - ib)
        if d.size:
            acc.max_abs = max(acc.max_abs, float(d.max()))
            denom = np.maximum(np.abs(ia), np.abs(ib))
            rel = np.where(denom > 0, d / np.where(denom > 0, denom, 1), 0.0)
            acc.max_rel = max(acc.max_rel, float(rel.max()))
        acc.changed += int(np.count_nonzero(d > tolerance))


def diff_variable(
    ca: Checkpoint, va: Variable, cb: Checkpoint, vb: Variable,
    tolerance: float = 0.0, block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> VariableDiff:
    """Compare one variable present in both checkpoints, streaming both block by block."""
    base = dict(path=va.path, kind=va.kind, shape_a=va.shape, shape_b=vb.shape, dtype_a=va.dtype, dtype_b=vb.dtype)
    if va.shape != vb.shape:
        nf_a = _count_nonfinite(ca, va, block_elems)
        nf_b = _count_nonfinite(cb, vb, block_elems)
        return VariableDiff(status="shape-mismatch", nonfinite_a=nf_a, nonfinite_b=nf_b, **base)
    acc = _Acc()
    for xa, xb in _aligned(ca.iter_blocks(va, block_elems), cb.iter_blocks(vb, block_elems)):
        _compare_block(xa, xb, acc, tolerance)
    return VariableDiff(
        status="changed" if acc.changed else "same",
        changed_values=acc.changed,
        max_abs_diff=acc.max_abs,
        max_rel_diff=acc.max_rel,
        nonfinite_a=acc.nf_a,
        nonfinite_b=acc.nf_b,
        new_nonfinite=acc.new_nf,
        resolved_nonfinite=acc.resolved,
        **base,
    )


def _count_nonfinite(ckpt: Checkpoint, var: Variable, block_elems: int = DEFAULT_BLOCK_ELEMS) -> int:
    if not var.is_float:
        return 0
    n = 0
    for block in ckpt.iter_blocks(var, block_elems):
        n += int(block.size - np.count_nonzero(np.isfinite(block)))
    return n


def match_variables(
    a: Sequence[Variable], b: Sequence[Variable]
) -> tuple[list[tuple[Variable, Variable]], list[Variable], list[Variable]]:
    """Pair variables of A and B by ``layer_path/name``.

    Exact paths first; then, for the leftovers, a path whose *last layer name plus
    variable name* is unique on both sides (a nested model that one format names
    ``model/dense`` and the other ``dense``). Returns ``(pairs, only_a, only_b)``.
    """
    by_b = {v.path: v for v in b}
    pairs: list[tuple[Variable, Variable]] = []
    only_a: list[Variable] = []
    used: set[str] = set()
    for v in a:
        w = by_b.get(v.path)
        if w is not None and w.path not in used:
            pairs.append((v, w))
            used.add(w.path)
        else:
            only_a.append(v)
    rest_b = [w for w in b if w.path not in used]

    def tail(v: Variable) -> tuple[str, str, str]:
        return (v.kind, v.layer_path.rsplit("/", 1)[-1], v.name)

    def unique(vs: list[Variable]) -> dict:
        seen: dict = {}
        for v in vs:
            seen.setdefault(tail(v), []).append(v)
        return {k: vs_[0] for k, vs_ in seen.items() if len(vs_) == 1}

    ua, ub = unique(only_a), unique(rest_b)
    late = [(ua[k], ub[k]) for k in ua if k in ub]
    paired_a = {id(x) for x, _ in late}
    paired_b = {id(y) for _, y in late}
    pairs.extend(late)
    return pairs, [v for v in only_a if id(v) not in paired_a], [w for w in rest_b if id(w) not in paired_b]


def diff_checkpoints(
    ca: Checkpoint, cb: Checkpoint, include_optimizer: bool = False,
    tolerance: float = 0.0, layer_glob: str | None = None, block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> DiffResult:
    """Compare two open checkpoints variable by variable (see the module docstring)."""
    import fnmatch

    def pick(c: Checkpoint) -> list[Variable]:
        vs = c.weights(include_optimizer)
        if layer_glob:
            vs = [v for v in vs if fnmatch.fnmatchcase(v.layer_path, layer_glob) or fnmatch.fnmatchcase(v.path, layer_glob)]
        return vs

    pairs, only_a, only_b = match_variables(pick(ca), pick(cb))
    out: list[VariableDiff] = []
    for va, vb in pairs:
        out.append(diff_variable(ca, va, cb, vb, tolerance, block_elems))
    for v in only_a:
        out.append(VariableDiff(path=v.path, status="only-in-a", kind=v.kind, shape_a=v.shape, dtype_a=v.dtype,
                                nonfinite_a=_count_nonfinite(ca, v, block_elems)))
    for v in only_b:
        nf = _count_nonfinite(cb, v, block_elems)
        out.append(VariableDiff(path=v.path, status="only-in-b", kind=v.kind, shape_b=v.shape, dtype_b=v.dtype,
                                nonfinite_b=nf))
    return DiffResult(ca.path, cb.path, ca.format, cb.format, tuple(out), tolerance)


def diff(a: str | os.PathLike, b: str | os.PathLike, config: str | os.PathLike | None = None, **kwargs) -> DiffResult:
    """Open two checkpoints (paths or remote URIs) and :func:`diff_checkpoints` them.

    ``config`` (a ``config.json``) names the variables of either side that carries no
    config of its own (a bare ``.weights.h5``, a TensorFlow ``save_weights``
    checkpoint), so a TensorFlow checkpoint and an ``.h5`` of the same model match by
    the names tf-keras reports."""
    from .formats import open_checkpoint

    cfg = None if config is None else os.fspath(config)
    with open_checkpoint(a, config=cfg) as ca, open_checkpoint(b, config=cfg) as cb:
        return diff_checkpoints(ca, cb, **kwargs)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def render_diff(result: DiffResult, show_same: bool = False) -> str:
    """Human-readable diff: a summary line, then one line per non-identical variable."""
    s = result.summary()
    lines = [
        f"A {result.a} ({result.format_a})",
        f"B {result.b} ({result.format_b})",
        f"{s['matched']} variables matched: {s['changed']} changed, {s['same']} identical, "
        f"{s['shape_mismatch']} shape mismatch; {s['only_in_a']} only in A, {s['only_in_b']} only in B",
    ]
    if s["new_nonfinite_values"]:
        lines.append(f"{s['new_nonfinite_values']} new non-finite values in {s['new_nonfinite_variables']} variables")
    if s["resolved_nonfinite_values"]:
        lines.append(f"{s['resolved_nonfinite_values']} non-finite values of A are finite in B")
    rows = []
    for v in result.variables:
        if v.status == "same" and not v.dtype_mismatch and not show_same:
            continue
        detail = []
        if v.status in ("changed", "same"):
            detail.append(f"{v.changed_values} values, max abs {_fmt(v.max_abs_diff)}, max rel {_fmt(v.max_rel_diff)}")
        if v.status == "shape-mismatch":
            detail.append(f"shape {tuple(v.shape_a)} vs {tuple(v.shape_b)}")
        if v.dtype_mismatch:
            detail.append(f"dtype {v.dtype_a} vs {v.dtype_b}")
        if v.new_nonfinite:
            detail.append(f"{v.new_nonfinite} new non-finite")
        if v.resolved_nonfinite:
            detail.append(f"{v.resolved_nonfinite} non-finite resolved")
        if v.status == "only-in-a" and v.nonfinite_a:
            detail.append(f"{v.nonfinite_a} non-finite")
        if v.status == "only-in-b" and v.nonfinite_b:
            detail.append(f"{v.nonfinite_b} non-finite")
        rows.append((v.status, v.path + (" (optimizer)" if v.kind == "optimizer" else ""), "; ".join(detail)))
    if rows:
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines.append("")
        lines.extend(f"{r[0].ljust(w0)}  {r[1].ljust(w1)}  {r[2]}".rstrip() for r in rows)
    return "\n".join(lines)


# --- timeline ------------------------------------------------------------------
def natural_sort(paths: Iterable[str]) -> list[str]:
    """``paths`` in natural order (see :func:`natural_key`)."""
    return sorted(map(str, paths), key=natural_key)


@dataclass(frozen=True)
class Health:
    """The health of one checkpoint of a series."""

    path: str
    status: str
    """``good``, ``bad`` (non-finite weights or error-level findings) or ``error`` (unreadable)."""
    reason: str = ""
    """Why not good: the error, or a one-line summary of the problems."""
    nonfinite_values: int = 0
    bad_variables: tuple[str, ...] = ()
    """Paths of the variables with problems (non-finite values or error findings)."""
    findings: int = 0
    """Error-level findings (when the full rule set judged the file)."""
    method: str = "nonfinite"
    """``scan`` (the full rule set) or ``nonfinite`` (NaN/Inf check only)."""
    details: dict = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict:
        """The stable JSON form."""
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "nonfinite_values": self.nonfinite_values,
            "bad_variables": list(self.bad_variables),
            "findings": self.findings,
            "method": self.method,
            "warnings": self.details.get("warnings", 0),
            "f16_headroom": self.details.get("f16_headroom"),
        }


def nonfinite_health(path: str, include_optimizer: bool = False, config: str | None = None) -> Health:
    """Health from a NaN/Inf count over every (weight) variable; never raises for bad input.
    ``config`` names the variables of a checkpoint without its own config."""
    from .formats import open_checkpoint

    try:
        with open_checkpoint(path, config=config) as ckpt:
            total = 0
            bad: list[str] = []
            for v in ckpt.weights(include_optimizer):
                n = _count_nonfinite(ckpt, v)
                if n:
                    total += n
                    bad.append(v.path)
    except CkptscanError as exc:
        return Health(path, "error", reason=exc.reason, method="nonfinite")
    if total:
        return Health(path, "bad", reason=f"{total} non-finite values in {len(bad)} variables",
                      nonfinite_values=total, bad_variables=tuple(bad), method="nonfinite")
    return Health(path, "good", method="nonfinite")


def scan_health(path: str, include_optimizer: bool = False, config: str | None = None) -> Health:
    """Health from the full rule set (:func:`ckptscan.engine.scan_file`) plus the NaN/Inf count.

    Bad: NaN/Inf weights or error-level findings (optimizer findings only with
    ``include_optimizer``). Module level, so worker processes can run it.
    """
    base = nonfinite_health(path, include_optimizer, config)
    if base.status == "error":
        return base
    from .engine import ScanOptions, scan_file

    result = scan_file(path, ScanOptions(config=config, profile="summary"))  # + BN summaries: float16 headroom
    if result.status == "error":
        return Health(path, "error", reason=result.reason, method="scan")
    errors = [f for f in result.findings if f.severity.value == "error"]
    if not include_optimizer:
        errors = [f for f in errors if f.category != "optimizer"]
    bad = list(base.bad_variables)
    for f in errors:
        if f.path not in bad:
            bad.append(f.path)
    from .bnprofile import health_details

    details = health_details(result, include_optimizer)
    if errors or base.nonfinite_values:
        rules = sorted({f.rule_id for f in errors})
        why = []
        if base.nonfinite_values:
            why.append(f"{base.nonfinite_values} non-finite values")
        if errors:
            why.append(f"{len(errors)} error findings ({', '.join(rules)})")
        return Health(path, "bad", reason="; ".join(why) + f" in {len(bad)} variables",
                      nonfinite_values=base.nonfinite_values, bad_variables=tuple(bad),
                      findings=len(errors), method="scan", details=details)
    return Health(path, "good", method="scan", details=details)


@dataclass(frozen=True)
class Timeline:
    """A series of checkpoints in order, each with its health."""

    entries: tuple[Health, ...]
    config: str | None = None
    """The ``--config`` the checkpoints were named with (repeated in :attr:`fix_command`)."""

    @property
    def first_bad(self) -> Health | None:
        """The first checkpoint that is bad (unreadable ones are skipped, not bad)."""
        return next((h for h in self.entries if h.status == "bad"), None)

    @property
    def last_good(self) -> Health | None:
        """The last good checkpoint before the first bad one (or the last good one overall)."""
        fb = self.first_bad
        stop = self.entries.index(fb) if fb is not None else len(self.entries)
        good = [h for h in self.entries[:stop] if h.status == "good"]
        return good[-1] if good else None

    @property
    def fix_command(self) -> str | None:
        """``ckptscan fix --from <last good> <first bad>``, or None when there is nothing to do."""
        fb, lg = self.first_bad, self.last_good
        if fb is None or lg is None:
            return None
        cfg = f" --config {shlex.quote(self.config)}" if self.config else ""
        return f"ckptscan fix --from {shlex.quote(lg.path)}{cfg} {shlex.quote(fb.path)}"

    def to_dict(self) -> dict:
        """The ``timeline --json`` document."""
        fb, lg = self.first_bad, self.last_good
        return {
            "schema_version": HISTORY_SCHEMA_VERSION,
            "checkpoints": [h.to_dict() for h in self.entries],
            "first_bad": fb.path if fb else None,
            "last_good": lg.path if lg else None,
            "fix_command": self.fix_command,
        }


def timeline(
    paths: Iterable[str | os.PathLike], include_optimizer: bool = False, sort: bool = True,
    method: str = "auto", health_fn: Callable[[str, bool], Health] | None = None,
    jobs: int = 1, executor: str | None = None, config: str | os.PathLike | None = None,
) -> Timeline:
    """The health of each checkpoint, in natural order unless ``sort`` is False.

    ``method``: ``scan`` or ``auto`` (the full rule set of :mod:`ckptscan.engine`) or
    ``nonfinite`` (NaN/Inf only). ``jobs``/``executor`` judge the checkpoints in
    parallel (:func:`ckptscan.runtime.executor.run_many`; same result). A TensorFlow
    checkpoint folder with a ``checkpoint`` state file (a ``CheckpointManager``
    directory) stands for every checkpoint it lists
    (:func:`ckptscan.discover.checkpoints_in`); one listed but gone is an ``error`` entry.
    ``config`` names the variables of checkpoints without their own config (a TensorFlow
    ``save_weights`` checkpoint beside ``.h5`` files of the same model).
    """
    import functools

    from .discover import Candidate, checkpoints_in

    cands = [one for p in paths for one in checkpoints_in(Candidate(os.fspath(p), explicit=True))]
    missing = {c.path: c.skip_reason for c in cands if c.skip_reason is not None}
    items = [c.path for c in cands]
    items = natural_sort(items) if sort else items
    todo = [p for p in items if p not in missing]
    if health_fn is None:
        health_fn = nonfinite_health if method == "nonfinite" else scan_health
    cfg = None if config is None else os.fspath(config)
    judge = functools.partial(health_fn, include_optimizer=include_optimizer, **({"config": cfg} if cfg else {}))
    if jobs == 1 and executor is None:
        judged = {p: judge(p) for p in todo}
    else:
        from .runtime.executor import run_many

        judged = {}
        for out in run_many(judge, todo,
                            jobs=jobs, executor=executor, ordered=True):
            judged[todo[out.index]] = out.value if out.ok else Health(todo[out.index], "error", reason=out.error or "")
    return Timeline(tuple(judged[p] if p in judged else Health(p, "error", reason=missing[p]) for p in items), cfg)


def render_timeline(tl: Timeline) -> str:
    """Human-readable timeline: one line per checkpoint, then the verdict and the fix command."""
    if not tl.entries:
        return "no checkpoints"
    width = max(len(h.path) for h in tl.entries)
    fb, lg = tl.first_bad, tl.last_good
    lines = []
    for h in tl.entries:
        mark = ""
        if fb is not None and h is fb:
            mark = "  <- first bad"
        elif lg is not None and h is lg and fb is not None:
            mark = "  <- last good"
        label = {"good": "ok", "bad": "BAD", "error": "ERROR"}[h.status]
        lines.append(f"{h.path.ljust(width)}  {label:5}  {h.reason}{_headroom_note(h)}".rstrip() + mark)
    lines.append("")
    if fb is None:
        lines.append("all checkpoints are healthy" if all(h.status == "good" for h in tl.entries)
                     else "no bad checkpoint (some could not be read)")
    else:
        lines.append(f"first bad: {fb.path}")
        if fb.bad_variables:
            shown = ", ".join(fb.bad_variables[:5]) + (f", … ({len(fb.bad_variables)} in all)" if len(fb.bad_variables) > 5 else "")
            lines.append(f"  {shown}")
        if lg is None:
            lines.append("last good: none (no healthy checkpoint before it)")
        else:
            lines.append(f"last good: {lg.path}")
            lines.append(f"restore with: {tl.fix_command}")
    return "\n".join(lines)


def _headroom_note(h: Health) -> str:
    """``  [f16 headroom 8.2x stem_bn]`` for float16-compute models (see ckptscan.bnprofile)."""
    from .bnprofile import min_headroom

    low = min_headroom(h.details.get("f16_headroom"))
    return f"  [f16 headroom {low[0]:.3g}x {low[1]}]" if low else ""
