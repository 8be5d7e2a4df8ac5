"""Broken-file kinds for the one-verdict gate (issue 13): each written into a folder from fixtures/.

Shared by tests/formats/test_integrity.py (scan, --jobs 2, API) and
tests/integration/test_gate_entry_points.py (Action, docs/api.md recipes, pre-commit).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

from conftest import FIXTURES

K3 = FIXTURES / "k3"
HEALTHY = K3 / "fp16.keras"


def stored_keras_with_cut_member(dst: Path) -> None:
    """A consistent zip (central directory intact) whose stored weights member is cut in half."""
    with zipfile.ZipFile(K3 / "seed.keras") as src, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "model.weights.h5":
                data = data[: len(data) // 2]
            out.writestr(info.filename, data)


def write_kind(folder: Path, kind: str) -> tuple[str, str]:
    """Put the broken file of ``kind`` in ``folder``; (its name, a substring of the reason)."""
    sources = {"h5": (K3 / "seed_legacy.h5", "model.h5"), "weights": (K3 / "seed.weights.h5", "model.weights.h5"),
               "keras": (K3 / "seed.keras", "model.keras")}
    if kind.startswith("cut"):
        _, fmt, frac = kind.split(":")
        src, name = sources[fmt]
        f = float(frac)
        data = src.read_bytes()
        (folder / name).write_bytes(data[: (1 if f == -1 else int(len(data) * f))])
        if f == 0:
            return name, "empty file"
        return name, "truncated"
    if kind == "empty.keras":
        (folder / "empty.keras").write_bytes(b"")
        return "empty.keras", "empty file"
    if kind == "random.h5":
        (folder / "random.h5").write_bytes(np.random.default_rng(7).bytes(4096))
        return "random.h5", "neither zip, HDF5 nor a sharded index"
    if kind == "random.keras":
        (folder / "random.keras").write_bytes(np.random.default_rng(8).bytes(4096))
        return "random.keras", "neither zip, HDF5 nor a sharded index"
    if kind == "text.h5":
        (folder / "notes.h5").write_text("these are my notes, not a model\n")
        return "notes.h5", "neither zip, HDF5 nor a sharded index"
    if kind == "text.weights.json":
        (folder / "model.weights.json").write_text("{\"hello\": 1}\n")
        return "model.weights.json", "no weight_map"
    if kind in ("shard-missing", "shard-cut"):
        for p in K3.glob("seed_sharded*"):
            shutil.copy(p, folder / p.name)
        shard = folder / "seed_sharded_00001.weights.h5"
        if kind == "shard-missing":
            shard.unlink()
            return "seed_sharded.weights.json", "shard seed_sharded_00001.weights.h5 is missing"
        shard.write_bytes(shard.read_bytes()[:-100])
        return "seed_sharded.weights.json", "shard seed_sharded_00001.weights.h5: truncated: HDF5 end-of-file address"
    if kind == "member-cut":
        stored_keras_with_cut_member(folder / "stored.keras")
        return "stored.keras", "truncated: HDF5 end-of-file address"
    raise AssertionError(kind)


KINDS = [f"cut:{fmt}:{frac}" for fmt in ("h5", "weights", "keras") for frac in ("0", "-1", "0.5", "0.999")] + [
    "empty.keras", "random.h5", "random.keras", "text.h5", "text.weights.json", "shard-missing", "shard-cut",
    "member-cut",
]
