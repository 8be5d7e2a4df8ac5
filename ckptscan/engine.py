"""The scan engine: read every tensor of a checkpoint once, run the rules, say what breaks.

>>> from ckptscan.engine import scan_file
>>> result = scan_file("model.keras")                         # doctest: +SKIP
>>> [f.message for f in result.findings]                      # doctest: +SKIP

Per file: every float tensor is streamed once through :func:`ckptscan.stats.count_values`
(NaN/±Inf counts and where they are: all the tensor rules read; the small 1-D vectors of
BatchNormalization layers are read whole, once, because the BN rules need their channels
side by side); tensor rules see the counts (and are not called for a tensor without
NaN/Inf, where none of them can report), BN rules see each layer's vectors together
(after one vectorised screen, :func:`ckptscan.rules.quiet_layers`, that spares healthy
layers the per-layer calls), model rules see every BN layer and the config. The
impact analysis (:func:`impact`) places the broken layers in the config's graph.

Finding the files is :mod:`ckptscan.discover`'s job; :func:`ckptscan.scan` (in
:mod:`ckptscan.bulk`) puts the two together.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from .errors import CkptscanError
from .graph import build_graph
from .naming import BN_CLASSES
from .report import FileResult, Finding, Report
from .rules import (
    ALL_RULES,
    NONFINITE_ONLY,
    SCREENED_BN,
    BNContext,
    BNLayer,
    FileContext,
    ModelContext,
    Rule,
    Scope,
    TensorContext,
    Thresholds,
    quiet_layers,
    select_rules,
)
from .settings import Settings
from .stats import count_values, vector_counts

#: Keras' default BatchNormalization epsilon (Keras 3 and tf-keras).
DEFAULT_BN_EPSILON = 1e-3
BN_VECTORS = ("gamma", "beta", "moving_mean", "moving_variance")
#: A BN vector longer than this is streamed like any tensor (never read whole).
MAX_BN_VECTOR = 1 << 22

ProgressFn = Callable[..., None]


@dataclass(frozen=True)
class ScanOptions:
    """Everything :func:`scan_file` needs (plain data: picklable for worker processes)."""

    rule_ids: tuple[str, ...] = tuple(r.id for r in ALL_RULES)
    include_optimizer: bool = True
    config: str | None = None
    """``config.json`` naming the variables of bare weights files."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    settings: Settings = field(default_factory=Settings)
    timeout: float | None = None
    """Seconds per file (``None``/0: no limit)."""
    per_file_settings: bool = False
    """Re-read the settings nearest to each file (:mod:`ckptscan.filesettings`)."""
    request: tuple = ()
    """The explicit ``select``/``ignore``/``include_optimizer`` arguments, kept to merge
    them again over another file's settings."""
    profile: str = ""
    """``summary`` or ``charts``: attach the BN profile (:mod:`ckptscan.bnprofile`) to
    the result from the vectors the BN rules read anyway; ``""``: none."""

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The selected rules."""
        ids = set(self.rule_ids)
        return tuple(r for r in ALL_RULES if r.id in ids)


# --- one file --------------------------------------------------------------------------


def _epsilon(ckpt, var) -> tuple[float, bool]:
    info = ckpt.layer_for(var)
    eps = info.config.get("epsilon") if info is not None and isinstance(info.config, dict) else None
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and np.isfinite(eps) and eps >= 0:
        return float(eps), True
    return DEFAULT_BN_EPSILON, False


def _bn_groups(variables) -> dict[str, dict[str, object]]:
    """layer path → {vector name: Variable} for BatchNormalization(-like) layers."""
    by_layer: dict[str, dict[str, object]] = {}
    classes: dict[str, str | None] = {}
    for v in variables:
        if v.kind != "weight":
            continue
        by_layer.setdefault(v.layer_path, {})[v.name] = v
        classes[v.layer_path] = v.layer_class
    out = {}
    for path, vs in by_layer.items():
        cls = classes[path]
        names = set(vs)
        if cls in BN_CLASSES or (cls is None or cls == "unknown") and {"moving_mean", "moving_variance"} <= names:
            group = {n: vs[n] for n in BN_VECTORS if n in vs}
            shapes = {g.shape for g in group.values()}
            if (
                "moving_variance" in group
                and len(shapes) == 1
                and len(next(iter(shapes))) == 1
                and all(g.is_float for g in group.values())
                and next(iter(shapes))[0] <= MAX_BN_VECTOR
            ):
                out[path] = group
    return out


def _needs_values(rules: Sequence[Rule]) -> bool:
    """True when some selected rule reads tensor values."""
    return any(r.scope in (Scope.TENSOR, Scope.BN_LAYER) or r.id == "BN007" for r in rules)


def _screened(rules: Sequence[Rule]) -> bool:
    """True when every selected tensor rule fires only on NaN/±Inf: a tensor the reader's
    screening pass found finite needs nothing more."""
    return all(r.id in NONFINITE_ONLY for r in rules if r.scope == Scope.TENSOR)


@dataclass(frozen=True)
class CheckpointScan:
    """What :func:`scan_checkpoint` found in one open checkpoint."""

    findings: tuple[Finding, ...]
    """In report order: severity, then file order of the layers."""
    impact: dict
    """Where the damage starts and which outputs it reaches (:func:`impact`)."""
    variables: int
    """Variables value-checked."""
    bytes: int
    """Bytes of the variables value-checked."""
    skipped: int
    """Variables not value-checked (integer dtypes, optimizer state when excluded)."""
    layers: tuple[str, ...]
    """Every layer path with a scanned variable, in file order."""
    profile: dict = field(default_factory=dict)
    """The BN profile when ``ScanOptions.profile`` asks for it (:mod:`ckptscan.bnprofile`)."""


def scan_checkpoint(ckpt, options: ScanOptions, progress: ProgressFn | None = None) -> CheckpointScan:
    """Findings, impact and counters of an open :class:`~ckptscan.formats.Checkpoint`."""
    rules = options.rules
    th = options.thresholds
    tensor_rules = [r for r in rules if r.scope == Scope.TENSOR]
    bn_rules = [r for r in rules if r.scope == Scope.BN_LAYER]
    model_rules = [r for r in rules if r.scope == Scope.MODEL]
    variables = ckpt.weights(options.include_optimizer)
    groups = _bn_groups(variables)
    in_group = {id(v) for g in groups.values() for v in g.values()}
    need_values = _needs_values(rules)
    hits: list[tuple[Rule, object]] = []
    counters: dict = {"variables": 0, "bytes": 0, "skipped": len(ckpt.variables) - len(variables), "layers": []}
    bn_values: dict[str, dict[str, np.ndarray]] = {p: {} for p in groups}
    bn_stats: dict[str, dict] = {p: {} for p in groups}
    total = sum(v.nbytes for v in variables) or 1
    done = 0
    # NUM001/F16001/OPT001 only fire on a tensor holding NaN/±Inf: with only those
    # selected, a clean tensor needs no rule call at all (the common case, by far)
    screened = _screened(rules)
    layer_paths = counters["layers"]
    # with only those rules, a tensor the reader's fast pass found finite (and checked
    # for integrity) needs nothing more; the BN vectors it keeps are read once
    finite: dict[str, bool] = {}
    if screened and need_values:
        tick = (lambda n: progress("bytes", done=n, total=total)) if progress else None
        finite = ckpt.screen([v for v in variables if v.is_float], {v.path for v in variables if id(v) in in_group}, tick)
        done = sum(v.nbytes for v in variables if v.path in finite)
    # the BN vectors, read whole (from the screen when it kept them) and counted at once
    bn_read: dict[int, tuple[np.ndarray, object]] = {}
    if need_values and in_group:
        gv = [v for v in variables if v.is_float and id(v) in in_group]
        vals = [np.asarray(ckpt.read(v)).reshape(-1) for v in gv]
        counts = vector_counts(vals, [v.name == "moving_variance" for v in gv])
        bn_read = {id(v): (x, c) for v, x, c in zip(gv, vals, counts)}
    for v in variables:
        if not v.is_float or not need_values:
            counters["skipped"] += 1
            continue
        grouped = id(v) in in_group
        if grouped:
            values, stats = bn_read[id(v)]
            bn_values[v.layer_path][v.name] = values.astype(np.float32, copy=False) if values.dtype != np.float32 else values
            bn_stats[v.layer_path][v.name] = stats
        elif finite.get(v.path):
            stats = None  # screened: finite, nothing for the rules
        else:
            stats = count_values(ckpt.iter_blocks(v), one_dimensional=len(v.shape) == 1)
        counters["variables"] += 1
        counters["bytes"] += v.nbytes
        if not layer_paths or layer_paths[-1] != v.layer_path:
            layer_paths.append(v.layer_path)
        if progress and v.path not in finite:  # the screen reported its own
            done += v.nbytes
            progress("bytes", done=done, total=total)
        if stats is None or screened and stats.n_nan == 0 and stats.n_posinf == 0 and stats.n_neginf == 0:
            continue
        ctx = TensorContext(v, stats, grouped, th)
        for r in tensor_rules:
            hits += [(r, h) for h in r.check(ctx)]
    layers: list[BNLayer] = []
    from .rules.branches import concat_segments

    segments = concat_segments(ckpt.model_config) if groups else {}
    for path, group in groups.items():
        if len(bn_values[path]) != len(group):
            continue
        eps, known = _epsilon(ckpt, group["moving_variance"])
        any_var = next(iter(group.values()))
        layers.append(BNLayer(
            layer_path=path, layer_class=any_var.layer_class, values=bn_values[path], stats=bn_stats[path],
            dtypes={n: g.dtype for n, g in group.items()}, epsilon=eps, epsilon_known=known, variables=group,
            segments=segments.get(path),
        ))
    # one vectorised screen over every BN layer: a quiet layer cannot trip the screened
    # rules, so only the others run on it (none of the built-in ones)
    quiet = quiet_layers(layers, th) if layers and bn_rules else [False] * len(layers)
    loud_rules = [r for r in bn_rules if r.id not in SCREENED_BN]
    for layer, q in zip(layers, quiet):
        ctx = BNContext(layer, th)
        for r in loud_rules if q else bn_rules:
            hits += [(r, h) for h in r.check(ctx)]
    mctx = ModelContext(layers, ckpt.model_config, ckpt.layers, th, list(getattr(ckpt, "integrity_failures", ())))
    for r in model_rules:
        hits += [(r, h) for h in r.check(mctx)]
    refused = {(v.layer_path, v.name) for v in ckpt.variables if ckpt.patch_refusal(v) is not None}
    findings = [_finding(r, h, ckpt.path, (h.layer_path, h.variable) not in refused) for r, h in hits]
    findings = [f for f in findings if not _ignored(f, options.settings)]
    findings.sort(key=_order_key(ckpt.variables))
    imp = impact(findings, ckpt.model_config)
    profile: dict = {}
    if options.profile:  # the BN vectors are in memory now, and only now
        from .bnprofile import build_profile

        profile = build_profile(layers, findings, ckpt, th, options.profile, imp)
    return CheckpointScan(tuple(findings), imp, counters["variables"], counters["bytes"], counters["skipped"],
                          tuple(dict.fromkeys(layer_paths)), profile)


def _finding(r: Rule, h, file: str, patchable: bool = True) -> Finding:
    """``patchable``: False when ``fix`` cannot patch this variable of this checkpoint."""
    inference_only = r.inference_only
    if r.id == "BN004":
        inference_only = h.variable == "moving_mean"
    return Finding(
        rule_id=r.id, rule_name=r.name, severity=r.severity, message=r.format(h), file=file,
        layer_path=h.layer_path, variable=h.variable, indices=tuple(int(i) for i in h.indices), count=int(h.count),
        category=r.category, patchable=r.patchable and patchable, inference_only=inference_only, fix_hint=r.fix_hint,
        details=dict(h.details),
    )


def _ignored(f: Finding, settings: Settings) -> bool:
    codes = settings.layer_ignores(f.layer_path)
    return any(f.rule_id.startswith(c.upper()) or c.lower() == f.rule_name for c in codes)


def _order_key(variables) -> Callable[[Finding], tuple]:
    pos = {}
    for i, v in enumerate(variables):
        pos.setdefault(v.layer_path, i)
    return lambda f: (-f.severity.rank, pos.get(f.layer_path, len(pos)), f.layer_path, f.variable, f.rule_id)


# --- impact ----------------------------------------------------------------------------


def impact(findings: Sequence[Finding], model_config: dict | None) -> dict:
    """Where the damage starts and which outputs it reaches.

    Broken layers are those with a finding of a rule marked ``impact`` (non-finite
    weights, invalid or outlying BN statistics, non-finite folded transforms). The
    origin is the earliest of them in topological order of the config's graph; the
    heads are the model outputs reachable from any broken layer. ``inference_only`` is
    True when every broken value is one that only inference reads (BN moving stats).
    """
    from .rules import get_rule

    bad = [f for f in findings if f.category == "weight" and get_rule(f.rule_id).impact]
    if not bad:
        return {}
    layers: dict[str, list[Finding]] = {}
    for f in bad:
        layers.setdefault(f.layer_path, []).append(f)
    graph = build_graph(model_config)
    doc: dict = {
        "broken_layers": [],
        "origin": None,
        "heads": [],
        "reached_heads": [],
        "inference_only": all(f.inference_only for f in bad),
        "graph": graph is not None,
    }
    if graph is None:
        order = list(layers)
        doc["note"] = "no model graph in the file (pass --config): order is the file's, outputs unknown"
    else:
        doc["heads"] = list(graph.heads)
        order = sorted(layers, key=lambda p: (graph.position(p) is None, graph.position(p) or 0))
    reached: list[str] = []
    for path in order:
        fs = layers[path]
        heads = graph.reached_heads(path) if graph is not None else []
        reached += [h for h in heads if h not in reached]
        doc["broken_layers"].append({
            "layer_path": path,
            "rules": sorted({f.rule_id for f in fs}),
            "variables": sorted({f.variable for f in fs if f.variable}),
            "severity": max((f.severity for f in fs), key=lambda s: s.rank).value,
            "inference_only": all(f.inference_only for f in fs),
            "reaches": heads,
            "in_graph": graph is not None and graph.node_for(path) is not None,
        })
    doc["origin"] = order[0]
    if graph is not None:
        doc["reached_heads"] = [h for h in graph.heads if h in reached]
    return doc


# --- files and the public API -------------------------------------------------------------


def scan_file(path: str, options: ScanOptions | None = None, progress: ProgressFn | None = None) -> FileResult:
    """Scan one file (or ``.keras`` folder / sharded index); never raises for bad input."""
    options = options or ScanOptions()
    start = time.monotonic()
    from .formats import open_checkpoint
    from .runtime.timeout import file_scope

    ignored = options.settings.file_ignores(path)
    if ignored:
        keep = {r.id for r in select_rules(None, list(ignored))}
        options = _replace_rules(options, tuple(i for i in options.rule_ids if i in keep))
    # file rules look at the file on disk before it is read (a pending journal: JRN001)
    before = [_finding(r, h, path) for r in options.rules if r.scope == Scope.FILE for h in r.check(FileContext(path))]
    before = [f for f in before if not _ignored(f, options.settings)]
    try:
        # the reader may start screening every float tensor while it names them
        ahead = options.include_optimizer and _screened(options.rules) and _needs_values(options.rules)
        with file_scope(options.timeout, path), open_checkpoint(path, config=options.config, screen_ahead=ahead) as ckpt:
            found = scan_checkpoint(ckpt, options, progress)
            fmt, version = ckpt.format, ckpt.keras_version
            notes = list(ckpt.notes)
            if ckpt.model_config is None:
                notes.append("no model config: names may be inferred and the impact has no graph (pass --config)")
    except CkptscanError as exc:
        reason = exc.reason
        if before:  # what made it unreadable may be the interrupted write
            reason += f" ({before[0].rule_id}: {before[0].message}; {before[0].fix_hint})"
        return FileResult(path=path, status="error", reason=reason, seconds=time.monotonic() - start)
    except MemoryError:  # past --max-memory outside a reader (the readers map their own)
        from .runtime.memory import memory_exhausted, memory_reason

        memory_exhausted()
        return FileResult(path=path, status="error", reason=memory_reason(), seconds=time.monotonic() - start)
    return FileResult(
        path=path, status="scanned", format=fmt, keras_version=version, findings=tuple(before) + found.findings,
        impact=found.impact,
        variables_scanned=found.variables, bytes_scanned=found.bytes, variables_skipped=found.skipped,
        seconds=time.monotonic() - start, notes=tuple(notes), layers=found.layers, profile=found.profile,
    )


def _replace_rules(options: ScanOptions, ids: tuple[str, ...]) -> ScanOptions:
    import dataclasses

    return dataclasses.replace(options, rule_ids=ids)


def make_options(
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    include_optimizer: bool | None = None,
    config: str | os.PathLike | None = None,
    settings: Settings | None = None,
    thresholds: Thresholds | None = None,
    timeout: float | None = None,
    per_file_settings: bool = False,
) -> ScanOptions:
    """Merge arguments over settings into :class:`ScanOptions` (arguments win).

    ``per_file_settings``: each file is scanned with the settings nearest to it
    (:func:`ckptscan.filesettings.options_for`), these arguments merged over them.

    Raises ValueError for an unknown rule code.
    """
    st = settings or Settings()
    sel = list(select) if select else (list(st.select) if st.select is not None else None)
    ign = list(st.ignore) + list(ignore or [])
    rules = select_rules(sel, ign)
    inc = include_optimizer if include_optimizer is not None else (st.include_optimizer if st.include_optimizer is not None else True)
    return ScanOptions(
        rule_ids=tuple(r.id for r in rules), include_optimizer=inc, config=str(config) if config else None,
        thresholds=thresholds or st.thresholds, settings=st, timeout=timeout,
        per_file_settings=per_file_settings and thresholds is None,
        request=(("select", tuple(select) if select else None), ("ignore", tuple(ignore or ())),
                 ("include_optimizer", include_optimizer)),
    )


class Candidate(Protocol):
    """What :func:`scan_candidates` needs of a candidate (:class:`ckptscan.discover.Candidate`)."""

    path: str
    skip_reason: str | None


def scan_candidates(cands: Sequence[Candidate], options: ScanOptions, progress: ProgressFn | None = None) -> Report:
    """Scan candidates (from :func:`ckptscan.discover.discover`) in order."""
    results = []
    todo = [c for c in cands if c.skip_reason is None]
    i = 0
    for c in cands:
        if c.skip_reason is not None:
            results.append(FileResult(path=c.path, status="skipped", reason=c.skip_reason))
            continue
        i += 1
        if progress:
            progress("file", index=i, total=len(todo), path=c.path)
        results.append(scan_file(c.path, options, progress))
    return Report(files=tuple(results))


__all__ = ["CheckpointScan", "ScanOptions", "impact", "make_options", "scan_candidates", "scan_checkpoint",
           "scan_file"]
