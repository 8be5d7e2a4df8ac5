"""fix ⇄ scan agreement (issue 13, item 4).

For every fixture with a fixable finding (fixtures/faults.json) and every strategy:
copy, ``fix``, ``scan`` again. The second scan must show none of the findings the fix
repaired and no finding that was not there before (any severity). A table of every
case is printed (``pytest -s`` shows it; it is also in the failure message).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ckptscan
from ckptscan.formats import open_checkpoint
from ckptscan.patch.rawio import decode, read_raw
from ckptscan.patch.strategies import reset_variance
from ckptscan.bulk import scan
from conftest import FIXTURES, run_cli

DATA = json.loads((FIXTURES / "faults.json").read_text())
FILES = sorted({f["file"] for f in DATA["faults"]})


def _twin(rel: str) -> str | None:
    info = DATA["files"][rel]
    if info.get("derived_from"):
        return info["derived_from"]
    for other, o in DATA["files"].items():
        if not o.get("corrupted") and o.get("model") == info["model"] \
                and o["written_by"]["library"] == info["written_by"]["library"] and o["format"] == info["format"]:
            return other
    return None


def _copy(rel: str, dst) -> str:
    src = FIXTURES / rel
    if rel.endswith(".weights.json"):
        stem = src.name[: -len(".weights.json")]
        for p in src.parent.glob(stem + "*"):
            if p.name == src.name or p.name.startswith(stem + "_0"):
                shutil.copy(p, dst / p.name)
    else:
        shutil.copy(src, dst / src.name)
    return str(dst / src.name)


def _keys(report) -> dict:
    return {(f.rule_id, f.layer_path, f.variable): f.severity.value for f in report.findings}


_BEFORE: dict[str, dict] = {}


def _keys_before(path: str) -> dict:
    """``_keys(scan(path))`` of an unrepaired copy, scanned once per distinct content (the
    sha256 of the names and bytes of the files copied): every case of a fixture starts from
    the same bytes."""
    h = hashlib.sha256()
    for f in sorted(Path(path).parent.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    key = h.hexdigest()
    if key not in _BEFORE:
        _BEFORE[key] = _keys(scan(path))
    return _BEFORE[key]


STRATEGIES = {
    "auto": {},
    "reset": {"strategy": "reset"},
    "median": {"strategy": "median"},
    "clamp": {"strategy": "clamp"},
    "value": {"strategy": "value", "value": 0.5},
}


def _cases():
    out = []
    for rel in FILES:
        kinds = {f["fault"] for f in DATA["faults"] if f["file"] == rel}
        strategies = dict(STRATEGIES)
        if _twin(rel):
            strategies["from"] = {"ref": str(FIXTURES / _twin(rel))}
        for name, kw in strategies.items():
            out.append((rel, name, (), False, kw))
            if "huge_variance" in kinds:  # BN002 is a warning: repaired only when selected
                out.append((rel, name, ("BN002",), False, kw))
            if "optimizer_nan" in kinds:
                out.append((rel, name, (), True, kw))
    return out


CASES = _cases()
TABLE: list[tuple] = []


def _print_table():
    head = ("fixture", "strategy", "select", "opt", "status", "fixed", "left after", "new after")
    rows = [head] + [tuple(str(x) for x in r) for r in TABLE]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


@pytest.mark.parametrize("rel,strategy,select,include_optimizer,kw", CASES,
                         ids=[f"{c[0]}-{c[1]}{'-' + c[2][0] if c[2] else ''}{'-opt' if c[3] else ''}" for c in CASES])
def test_fix_then_scan_agrees(tmp_path, rel, strategy, select, include_optimizer, kw):
    path = _copy(rel, tmp_path)
    before = _keys_before(path)
    res = ckptscan.fix(path, select=select, include_optimizer=include_optimizer, **kw).files[0]
    after = _keys(scan(path))
    changed = {(c.layer_path, c.variable): {r.strip() for r in c.reason.split(";")[0].split(",")} for c in res.changes}
    fixed = {k for k in before if (k[1], k[2]) in changed and k[0] in changed[(k[1], k[2])]}
    still = sorted(k for k in fixed if k in after)
    new = sorted(k for k in after if k not in before)
    TABLE.append((rel, strategy, ",".join(select) or "-", "yes" if include_optimizer else "-", res.status,
                  len(fixed), len(after), ", ".join(f"{r} {lp}/{v}" for r, lp, v in new) or "-"))
    print("\n" + _print_table())
    assert not still, f"fixed but still reported: {still}\n{_print_table()}"
    assert not new, f"created by the fix: {new}\n{_print_table()}"
    if res.status in ("refused", "unchanged", "failed"):
        assert after == before
    if res.status == "fixed":
        assert fixed, "a fix that changed something reports which findings it repaired"


def test_every_fixable_fixture_gets_a_real_repair():
    """Guard against a vacuous table: each fixture is fixed by at least one strategy."""
    assert {c[0] for c in CASES} == set(FILES)
    assert len(FILES) >= 10


def test_reset_is_not_never_updated(tmp_path):
    """post_bn is NaN in every channel: reset writes 0 / one step above 1, and BN007 stays quiet."""
    path = _copy("k3/seed_broken.keras", tmp_path)
    res = ckptscan.fix(path, strategy="reset").files[0]
    assert res.status == "fixed"
    with open_checkpoint(path) as ck:
        var = ck.find("resnet101v2/post_bn/moving_variance")
        v = decode(read_raw(ck, var), var)
        mean = decode(read_raw(ck, ck.find("resnet101v2/post_bn/moving_mean")), var)
    assert np.all(v == np.float32(reset_variance(1.0, "float32"))) and np.all(mean == 0)
    assert reset_variance(1.0, "float32") == float(np.nextafter(np.float32(1), np.float32(2)))
    assert reset_variance(1.0, "float16") == 1.0 + 2 ** -10
    assert reset_variance(1.0, "bfloat16") == 1.0 + 2 ** -7
    assert not [f for f in scan(path).findings if f.rule_id == "BN007"]


def test_clamp_stays_in_the_healthy_range(tmp_path):
    path = _copy("k3/seed_broken.keras", tmp_path)
    res = ckptscan.fix(path, select=("BN002",), strategy="clamp").files[0]
    assert res.status == "fixed"
    (c,) = res.changes
    with open_checkpoint(path) as ck:
        var = ck.find(f"{c.layer_path}/{c.variable}")
        v = decode(read_raw(ck, var), var).astype(np.float64)
    others = np.delete(v, list(c.indices))
    assert all(others.min() <= float(x) <= others.max() for x in c.new), (c.new, others.min(), others.max())
    assert max(float(x) for x in c.new) < 3e38
    assert "largest healthy variance" in c.note


def test_include_optimizer_repairs_moments(tmp_path):
    for rel in ("k3/optnan.keras", "k3/optnan_legacy.h5"):
        path = _copy(rel, tmp_path)
        assert [f.rule_id for f in scan(path).findings] == ["OPT001"]
        plain = ckptscan.fix(path).files[0]
        assert plain.status == "unchanged"
        assert "1 warning OPT001" in plain.reason and "--include-optimizer repairs it" in plain.reason
        res = ckptscan.fix(path, include_optimizer=True).files[0]
        assert res.status == "fixed" and [c.strategy for c in res.changes] == ["zero"]
        assert set(res.changes[0].new) == {0.0}
        assert not scan(path).findings


def test_optimizer_counter_is_never_changed(tmp_path):
    import h5py

    path = _copy("k3/optnan_legacy.h5", tmp_path)
    with h5py.File(path, "r+") as f:  # a NaN learning rate: a hyper-parameter, not a slot
        group = f["optimizer_weights"]
        names = []
        group.visit(names.append)
        lr = [n for n in names if n.endswith("learning_rate") and isinstance(group[n], h5py.Dataset)]
        if not lr:
            pytest.fail(f"no learning_rate in {names[:5]}")
        group[lr[0]][...] = np.nan
    res = ckptscan.fix(path, include_optimizer=True).files[0]
    assert res.status == "refused", res
    assert "never changed" in res.reason


def test_nothing_to_fix_says_what_is_left(tmp_path):
    path = _copy("k3/seed_broken.keras", tmp_path)
    assert ckptscan.fix(path).files[0].status == "fixed"
    res = ckptscan.fix(path).files[0]
    assert res.status == "unchanged"
    assert res.reason == ("nothing to fix at error severity; left: 1 warning BN002 on "
                          "resnet101v2/conv5_block3_2_bn (--select BN002 repairs it); 1 warning BN003 on "
                          "resnet101v2/conv5_block3_2_bn (not repairable by fix: nothing to do for Keras inference)")
    none = ckptscan.fix(path, select=("BN005",)).files[0]
    assert none.reason == ("nothing to fix: --select BN005 matched no finding "
                           "(the file has: 1 warning BN002, 1 warning BN003)")
    layer = ckptscan.fix(path, layer="nope*").files[0]
    assert layer.reason.startswith("nothing to fix: --layer nope* matched no finding's layer")
    out = run_cli("fix", "--select", "BN005", path)
    assert "nothing to fix: --select BN005 matched no finding" in out.stdout
    clean = _copy("k3/seed.keras", tmp_path)
    assert ckptscan.fix(clean).files[0].reason == "nothing to fix: no findings"


def test_cli_fix_then_scan_same_fail_on(tmp_path):
    path = _copy("k3/seed_broken.weights.h5", tmp_path)
    for fail_on in ("error", "warning"):
        fix = run_cli("fix", "--select", "BN" if fail_on == "warning" else "BN001,BN004,NUM", "--strategy", "reset", path)
        assert fix.returncode == 0, fix.stdout + fix.stderr
        out = run_cli("scan", "--fail-on", fail_on, path)
        assert out.returncode == 0, out.stdout
