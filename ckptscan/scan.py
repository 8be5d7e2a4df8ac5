"""The scan engine: find the files, read every tensor once, run the rules, say what breaks.

>>> from ckptscan import scan
>>> report = scan(["model.keras"])                            # doctest: +SKIP
>>> [f.message for f in report.findings]                      # doctest: +SKIP

Per file: every float tensor is streamed once through :func:`ckptscan.stats.count_values`
(NaN/±Inf counts and where they are: all the tensor rules read; the small 1-D vectors of
BatchNormalization layers are read whole, once, because the BN rules need their channels
side by side); tensor rules see the counts (and are not called for a tensor without
NaN/Inf, where none of them can report), BN rules see each layer's vectors together
(after one vectorised screen, :func:`ckptscan.rules.quiet_layers`, that spares healthy
layers the per-layer calls), model rules see every BN layer and the config. The
impact analysis (:func:`impact`) places the broken layers in the config's graph.

Discovery (:func:`discover`): files as given; directories recursively, keeping what
the content says is a Keras archive (a ``.keras`` folder counts as one archive, shards
listed by a ``*.weights.json`` index are scanned through it); glob patterns.
"""

from __future__ import annotations

import glob as globmod
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import CkptscanError
from .graph import build_graph
from .naming import BN_CLASSES
from .report import FileResult, Finding, Report
from .rules import ALL_RULES, NONFINITE_ONLY, SCREENED_BN, BNContext, BNLayer, ModelContext, Rule, Scope, TensorContext, Thresholds, quiet_layers, select_rules
from .settings import Settings
from .stats import array_counts, count_values

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

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The selected rules."""
        ids = set(self.rule_ids)
        return tuple(r for r in ALL_RULES if r.id in ids)


# --- discovery -----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A path found by :func:`discover`: to scan, or skipped with a reason."""

    path: str
    skip_reason: str | None = None
    explicit: bool = False
    """Named on the command line (an unreadable one is an error, not a skip)."""


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def discover(paths: Iterable[str | os.PathLike]) -> list[Candidate]:
    """Expand files, directories (recursive, by content) and globs into candidates."""
    from .formats import detect

    out: list[Candidate] = []
    seen: set[str] = set()

    def add(c: Candidate) -> None:
        key = os.path.normpath(c.path)
        if key not in seen:
            seen.add(key)
            out.append(c)

    for raw in paths:
        p = str(raw)
        if not os.path.exists(p) and _is_glob(p) and "://" not in p:  # URIs (signed ?query=) are not globs
            matches = sorted(globmod.glob(p, recursive=True))
            for m in matches:
                if os.path.isdir(m) and not _is_keras_dir(m):
                    for c in _walk_dir(m, detect):
                        add(c)
                else:
                    add(Candidate(m, explicit=True))
            continue
        if os.path.isdir(p) and not _is_keras_dir(p):
            for c in _walk_dir(p, detect):
                add(c)
        else:
            add(Candidate(p, explicit=True))
    return out


def _is_keras_dir(p: str) -> bool:
    return os.path.isfile(os.path.join(p, "config.json")) and (
        os.path.isfile(os.path.join(p, "model.weights.h5")) or os.path.isfile(os.path.join(p, "model.weights.json"))
    )


def _walk_dir(root: str, detect) -> Iterator[Candidate]:
    found: list[tuple[str, str | None]] = []
    shards: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                continue
            if _is_keras_dir(full):
                found.append((full, None))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith(".") or os.path.islink(full) and not os.path.exists(full):
                continue
            try:
                fmt = detect(full)
            except CkptscanError as exc:
                found.append((full, f"not a Keras weight archive ({exc.reason})"))
                continue
            except Exception as exc:  # pragma: no cover - defensive: one bad file never stops the walk
                found.append((full, f"not recognised ({type(exc).__name__})"))
                continue
            if fmt == "keras-zip" and not _zip_is_keras(full):
                found.append((full, "zip archive that is not a .keras model (no config.json or model.weights.h5)"))
                continue
            found.append((full, None))
            if fmt == "keras3-sharded":
                for shard in _shards_of(full):
                    shards[os.path.normpath(shard)] = full
    for path, reason in found:
        owner = shards.get(os.path.normpath(path))
        if owner and reason is None:
            reason = f"shard of {owner} (scanned through its index)"
        yield Candidate(path, reason)


def _zip_is_keras(path: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return True  # let the reader report what is wrong with it
    return bool(names & {"config.json", "model.weights.h5", "model.weights.npz"})


def _shards_of(index: str) -> list[str]:
    import json

    try:
        with open(index, "rb") as fh:
            doc = json.loads(fh.read(64 << 20).decode("utf-8", "replace"))
    except (OSError, ValueError):
        return []
    names: list[str] = []
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    for v in (wm or {}).values() if isinstance(wm, dict) else ():
        for n in [v] if isinstance(v, str) else v if isinstance(v, list) else []:
            if isinstance(n, str) and os.path.basename(n) == n:
                names.append(os.path.join(os.path.dirname(index), n))
    return names


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


def scan_checkpoint(ckpt, options: ScanOptions, progress: ProgressFn | None = None) -> tuple[list[Finding], dict, dict]:
    """Findings, impact and counters of an open :class:`~ckptscan.formats.Checkpoint`."""
    rules = options.rules
    th = options.thresholds
    tensor_rules = [r for r in rules if r.scope == Scope.TENSOR]
    bn_rules = [r for r in rules if r.scope == Scope.BN_LAYER]
    model_rules = [r for r in rules if r.scope == Scope.MODEL]
    variables = ckpt.weights(options.include_optimizer)
    groups = _bn_groups(variables)
    in_group = {id(v) for g in groups.values() for v in g.values()}
    need_values = bool(tensor_rules or bn_rules or any(r.id == "BN007" for r in model_rules))
    hits: list[tuple[Rule, object]] = []
    counters: dict = {"variables": 0, "bytes": 0, "skipped": len(ckpt.variables) - len(variables), "layers": []}
    bn_values: dict[str, dict[str, np.ndarray]] = {p: {} for p in groups}
    bn_stats: dict[str, dict] = {p: {} for p in groups}
    total = sum(v.nbytes for v in variables) or 1
    done = 0
    # NUM001/F16001/OPT001 only fire on a tensor holding NaN/±Inf: with only those
    # selected, a clean tensor needs no rule call at all (the common case, by far)
    screened = all(r.id in NONFINITE_ONLY for r in tensor_rules)
    layer_paths = counters["layers"]
    for v in variables:
        if not v.is_float or not need_values:
            counters["skipped"] += 1
            continue
        grouped = id(v) in in_group
        if grouped:
            values = np.asarray(ckpt.read(v)).reshape(-1)
            stats = array_counts(values, negatives=v.name == "moving_variance")
            bn_values[v.layer_path][v.name] = values.astype(np.float32, copy=False) if values.dtype != np.float32 else values
            bn_stats[v.layer_path][v.name] = stats
        else:
            stats = count_values(ckpt.iter_blocks(v), one_dimensional=len(v.shape) == 1)
        counters["variables"] += 1
        counters["bytes"] += v.nbytes
        if not layer_paths or layer_paths[-1] != v.layer_path:
            layer_paths.append(v.layer_path)
        done += v.nbytes
        if progress:
            progress("bytes", done=done, total=total)
        if screened and stats.n_nan == 0 and stats.n_posinf == 0 and stats.n_neginf == 0:
            continue
        ctx = TensorContext(v, stats, grouped, th)
        for r in tensor_rules:
            hits += [(r, h) for h in r.check(ctx)]
    layers: list[BNLayer] = []
    for path, group in groups.items():
        if len(bn_values[path]) != len(group):
            continue
        eps, known = _epsilon(ckpt, group["moving_variance"])
        any_var = next(iter(group.values()))
        layers.append(BNLayer(
            layer_path=path, layer_class=any_var.layer_class, values=bn_values[path], stats=bn_stats[path],
            dtypes={n: g.dtype for n, g in group.items()}, epsilon=eps, epsilon_known=known, variables=group,
        ))
    # one vectorised screen over every BN layer: a quiet layer cannot trip the screened
    # rules, so only the others run on it (none of the built-in ones)
    quiet = quiet_layers(layers, th) if layers and bn_rules else [False] * len(layers)
    loud_rules = [r for r in bn_rules if r.id not in SCREENED_BN]
    for layer, q in zip(layers, quiet):
        ctx = BNContext(layer, th)
        for r in loud_rules if q else bn_rules:
            hits += [(r, h) for h in r.check(ctx)]
    mctx = ModelContext(layers, ckpt.model_config, ckpt.layers, th)
    for r in model_rules:
        hits += [(r, h) for h in r.check(mctx)]
    findings = [_finding(r, h, ckpt.path) for r, h in hits]
    findings = [f for f in findings if not _ignored(f, options.settings)]
    findings.sort(key=_order_key(ckpt.variables))
    return findings, impact(findings, ckpt.model_config), counters


def _finding(r: Rule, h, file: str) -> Finding:
    inference_only = r.inference_only
    if r.id == "BN004":
        inference_only = h.variable == "moving_mean"
    return Finding(
        rule_id=r.id, rule_name=r.name, severity=r.severity, message=r.format(h), file=file,
        layer_path=h.layer_path, variable=h.variable, indices=tuple(int(i) for i in h.indices), count=int(h.count),
        category=r.category, patchable=r.patchable, inference_only=inference_only, fix_hint=r.fix_hint,
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
    try:
        from .limits import file_timeout
    except ImportError:  # pragma: no cover - limits ships with ckptscan
        file_timeout = None
    from .formats import open_checkpoint

    ignored = options.settings.file_ignores(path)
    if ignored:
        keep = {r.id for r in select_rules(None, list(ignored))}
        options = _replace_rules(options, tuple(i for i in options.rule_ids if i in keep))
    try:
        ctxmgr = file_timeout(options.timeout, path) if file_timeout else _null()
        with ctxmgr, open_checkpoint(path, config=options.config) as ckpt:
            findings, imp, counters = scan_checkpoint(ckpt, options, progress)
            fmt, version = ckpt.format, ckpt.keras_version
            notes = list(ckpt.notes)
            if ckpt.model_config is None:
                notes.append("no model config: names may be inferred and the impact has no graph (pass --config)")
    except CkptscanError as exc:
        return FileResult(path=path, status="error", reason=exc.reason, seconds=time.monotonic() - start)
    except MemoryError:  # past --max-memory outside a reader (the readers map their own)
        from .limits import memory_exhausted, memory_reason

        memory_exhausted()
        return FileResult(path=path, status="error", reason=memory_reason(), seconds=time.monotonic() - start)
    return FileResult(
        path=path, status="scanned", format=fmt, keras_version=version, findings=tuple(findings), impact=imp,
        variables_scanned=counters["variables"], bytes_scanned=counters["bytes"],
        variables_skipped=counters["skipped"], seconds=time.monotonic() - start, notes=tuple(notes),
        layers=tuple(dict.fromkeys(counters["layers"])),
    )


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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
) -> ScanOptions:
    """Merge arguments over settings into :class:`ScanOptions` (arguments win).

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
    )


def scan(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    include_optimizer: bool | None = None,
    config: str | os.PathLike | None = None,
    settings: Settings | None = None,
    thresholds: Thresholds | None = None,
    timeout: float | None = None,
    progress: ProgressFn | None = None,
) -> Report:
    """Scan files, directories and globs; returns a :class:`~ckptscan.report.Report`.

    ``select``/``ignore`` take rule ID prefixes (``BN``, ``BN002``) or names;
    ``include_optimizer`` (default True) also checks optimizer state (rule OPT001);
    ``config`` names the variables of bare ``.weights.h5`` files; ``settings`` (see
    :mod:`ckptscan.settings`) supplies defaults, per-file and per-layer ignores and
    thresholds; ``timeout`` limits the seconds spent per file; ``progress`` is called
    as ``progress("file", index=i, total=n, path=p)`` and ``progress("bytes", done=,
    total=)``. Unreadable files become results with ``status="error"``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    options = make_options(select=select, ignore=ignore, include_optimizer=include_optimizer, config=config,
                           settings=settings, thresholds=thresholds, timeout=timeout)
    return scan_candidates(discover(paths), options, progress)


def scan_candidates(cands: Sequence[Candidate], options: ScanOptions, progress: ProgressFn | None = None) -> Report:
    """Scan discovered candidates in order."""
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


__all__ = ["Candidate", "ScanOptions", "discover", "impact", "make_options", "scan", "scan_checkpoint",
           "scan_file", "scan_candidates"]
