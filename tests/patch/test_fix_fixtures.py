"""Every corrupted fixture of fixtures/faults.json (Keras 3 and tf-keras, every layout),
repaired with every applicable strategy, then checked in Keras 3 (jax).

Keras 3 cannot ``load_model`` tf-keras legacy ``.h5`` models of the nested ResNet
(its Functional reconstruction fails before ckptscan is involved), so every repaired
file is loaded with ``load_weights`` into the Keras 3 build of the same architecture
(``k3/seed.keras``, ``k3/deep_legacy.h5``) and must ``predict`` finite values on the
fixed inputs; repaired ``.keras`` archives must also pass ``testzip`` and
``keras.saving.load_model``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ckptscan
from ckptscan.formats import open_checkpoint
from ckptscan.patch.rawio import read_raw
from ckptscan.report import Severity
from ckptscan import scan
from conftest import FIXTURES, fixture_path
from test_patch_models import dataset_digests, sha256

FAULTS = FIXTURES / "faults.json"
DATA = json.loads(FAULTS.read_text())  # committed: without it the module fails to collect
BN_STATS = ("moving_mean", "moving_variance")
ARCH = {"seed": "k3/seed.keras", "deep": "k3/deep_legacy.h5"}


def _weight_faults(rel):
    return [x for x in DATA.get("faults", []) if x["file"] == rel and x.get("kind") == "weight"]


CORRUPT = sorted(rel for rel, info in DATA["files"].items() if info.get("corrupted") and _weight_faults(rel)
                 and info.get("model") in ARCH)


def _twin(rel):
    info = DATA["files"][rel]
    if info.get("derived_from"):
        return info["derived_from"]
    lib = info["written_by"]["library"]
    for other, o in DATA["files"].items():  # a clean full model of the same family and writer
        if not o.get("corrupted") and o.get("model") == info["model"] and o["written_by"]["library"] == lib \
                and o["format"] == info["format"]:
            return other
    return None


def cases():
    out = []
    for rel in CORRUPT:
        faults = _weight_faults(rel)
        other = [x for x in faults if x["variable"] not in BN_STATS]
        every_channel = any(x["variable"] in BN_STATS and len(x["indices"]) == x["shape"][0] for x in faults)
        extra = {"value": 0.0} if other else {}
        out.append((rel, "auto", extra, "fixed"))
        out.append((rel, "reset", {"rule_strategies": {"BN001": "reset", "BN004": "reset"}, **extra}, "fixed"))
        out.append((rel, "median", {"rule_strategies": {"BN001": "median", "BN004": "median"}, **extra},
                    "refused" if every_channel else "fixed"))
        out.append((rel, "value", {"strategy": "value", "value": 0.5}, "fixed"))
        if _twin(rel):
            out.append((rel, "from", {"ref": str(FIXTURES / _twin(rel))}, "fixed"))
    return out


def test_every_corrupted_fixture_is_committed():
    """The parametrised cases are not empty and each file they name is in fixtures/
    (an empty or shrunken list would otherwise pass silently)."""
    assert {DATA["files"][rel]["model"] for rel in CORRUPT} == set(ARCH)
    assert len(CORRUPT) >= 10, CORRUPT
    for rel, strategy, kwargs, _ in cases():
        fixture_path(rel)
        if strategy == "from":
            assert Path(kwargs["ref"]).is_file(), kwargs["ref"]
    for rel in ARCH.values():
        fixture_path(rel)


@pytest.fixture(scope="module")
def models():
    import keras

    return {fam: keras.saving.load_model(FIXTURES / rel, compile=False) for fam, rel in ARCH.items()}


def _inputs(model):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(1234).standard_normal((4,) + shape).astype("float32")


def _copy(rel, dst):
    src = FIXTURES / rel
    dst.mkdir()
    if src.suffix == ".json":
        for name in {n for v in json.loads(src.read_text())["weight_map"].values()
                     for n in ([v] if isinstance(v, str) else v)}:
            shutil.copyfile(src.parent / name, dst / name)
    shutil.copyfile(src, dst / src.name)
    return dst / src.name


_BEFORE: dict[tuple[str, str], dict[str, str]] = {}


def _digests_before(rel: str, file_sha: str, path: Path) -> dict[str, str]:
    """``dataset_digests`` of an unrepaired copy of fixture ``rel``, computed once per
    fixture and content (the sha256 of the file named): every strategy of a fixture starts
    from the same bytes, and a fixture's other files (shards) come with its name."""
    key = (rel, file_sha)
    if key not in _BEFORE:
        _BEFORE[key] = dataset_digests(path)
    return _BEFORE[key]


@pytest.mark.parametrize("rel,strategy,kwargs,expect", cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_fixture_repaired(models, tmp_path, rel, strategy, kwargs, expect):
    p = _copy(rel, tmp_path / "w")
    before_sha = sha256(p)
    before = _digests_before(rel, before_sha, p)
    (f,) = ckptscan.fix(str(p), **kwargs).files
    if expect == "refused":
        assert f.status == "refused" and "no healthy channel left for median" in f.reason, f
        assert sha256(p) == before_sha
        return
    assert f.status == "fixed", f
    # every injected fault is among the changed elements; nothing else changed
    changed = {(c.layer_path, c.variable): set(c.indices) for c in f.changes}
    for x in _weight_faults(rel):
        if x["fault"] == "huge_variance":  # a warning (BN002): not a default target
            continue
        assert set(x["indices"]) <= changed[(x["layer_path"], x["variable"])], x
    after = dataset_digests(p)
    assert len({k for k in after if after[k] != before[k]}) == len(changed)
    assert [x for x in scan([str(p)]).findings if x.severity is Severity.ERROR] == []
    if strategy == "from":
        ref = kwargs["ref"]
        with open_checkpoint(p) as a, open_checkpoint(ref) as b:
            for (lp, var), idx in changed.items():
                i = sorted(idx)
                va, vb = a.find(f"{lp}/{var}"), b.find(f"{lp}/{var}")
                assert read_raw(a, va)[i].tobytes() == read_raw(b, vb)[i].tobytes()
    model = models[DATA["files"][rel]["model"]]
    model.load_weights(p)
    y = model.predict(_inputs(model), verbose=0)
    assert all(np.isfinite(np.asarray(o)).all() for o in (y if isinstance(y, (list, tuple)) else [y]))
    if p.suffix == ".keras" and strategy == "from":
        import zipfile

        import keras

        with zipfile.ZipFile(p) as zf:
            assert zf.testzip() is None
        m = keras.saving.load_model(p, compile=False)
        y = m.predict(_inputs(m), verbose=0)
        assert all(np.isfinite(np.asarray(o)).all() for o in (y if isinstance(y, (list, tuple)) else [y]))
