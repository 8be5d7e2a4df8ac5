"""What ``ckptscan inspect`` shows: a checkpoint's variables as data, table or JSON."""

from __future__ import annotations

import fnmatch

from .formats import Checkpoint, Variable

#: Version of the ``inspect --json`` document layout.
INSPECT_SCHEMA_VERSION = 1


def variable_record(v: Variable) -> dict:
    """The stable JSON form of one variable."""
    return {
        "path": v.path,
        "layer_path": v.layer_path,
        "layer_name": v.layer_name,
        "layer_class": v.layer_class,
        "name": v.name,
        "shape": list(v.shape),
        "dtype": v.dtype,
        "kind": v.kind,
        "naming": v.naming,
        "file": v.file,
        "member": v.member,
        "h5path": v.h5path,
        "offset": v.offset,
        "nbytes": v.nbytes,
    }


def select(ckpt: Checkpoint, layer_glob: str | None = None, include_optimizer: bool = False) -> list[Variable]:
    """Variables filtered by a layer-path glob and kind."""
    out = []
    for v in ckpt.weights(include_optimizer):
        if layer_glob and not (fnmatch.fnmatchcase(v.layer_path, layer_glob) or fnmatch.fnmatchcase(v.path, layer_glob)):
            continue
        out.append(v)
    return out


def inventory(ckpt: Checkpoint, layer_glob: str | None = None, include_optimizer: bool = False) -> dict:
    """The ``inspect --json`` document."""
    variables = select(ckpt, layer_glob, include_optimizer)
    weights = [v for v in ckpt.variables if v.kind == "weight"]
    return {
        "schema_version": INSPECT_SCHEMA_VERSION,
        "file": ckpt.path,
        "format": ckpt.format,
        "keras_version": ckpt.keras_version,
        "counts": {
            "variables": len(weights),
            "optimizer_variables": sum(1 for v in ckpt.variables if v.kind == "optimizer"),
            "metric_variables": sum(1 for v in ckpt.variables if v.kind == "metric"),
            "layers": len({v.layer_path for v in weights}),
            "inferred_names": sum(1 for v in weights if v.naming == "inferred"),
        },
        "parameters": sum(v.size for v in weights),
        "bytes": sum(v.nbytes for v in weights),
        "variables": [_with_slot(variable_record(v), getattr(ckpt, "slots", {})) for v in variables],
        "notes": list(ckpt.notes),
    }


def _with_slot(rec: dict, slots: dict) -> dict:
    """Add ``slot_of`` (variable path, slot name) to an optimizer slot's record, when known."""
    if rec["path"] in slots:
        target, slot = slots[rec["path"]]
        rec["slot_of"] = {"variable": target, "slot": slot}
    return rec


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def render_table(doc: dict) -> str:
    """Human-readable header plus one row per variable."""
    c = doc["counts"]
    lines = [
        f"{doc['file']}",
        f"  format {doc['format']}, Keras {doc['keras_version'] or 'unknown'}",
        f"  {c['variables']} variables in {c['layers']} layers, {doc['parameters']:,} parameters, "
        f"{_human(doc['bytes'])}; {c['optimizer_variables']} optimizer variables",
    ]
    if c["inferred_names"]:
        lines.append(f"  {c['inferred_names']} names inferred (no config): pass --config config.json to name them exactly")
    rows = [("layer path", "variable", "shape", "dtype", "size")]
    for v in doc["variables"]:
        name = v["name"] + ("*" if v["naming"] == "inferred" else "")
        if v.get("slot_of"):
            name += f" (optimizer: {v['slot_of']['slot']} of {v['slot_of']['variable']})"
        elif v["kind"] in ("optimizer", "metric"):
            name += f" ({v['kind']})"
        rows.append((v["layer_path"], name, "(" + ", ".join(map(str, v["shape"])) + ")", v["dtype"], _human(v["nbytes"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for i, r in enumerate(rows):
        lines.append("  ".join(col.ljust(w) if k < 4 else col.rjust(w) for k, (col, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if c["inferred_names"]:
        lines.append("")
        lines.append("* inferred name")
    return "\n".join(lines)
