"""``ckptscan diff`` and ``ckptscan timeline``: streaming, NaN-aware, across formats."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptscan import open_checkpoint
from ckptscan.history import (
    _aligned,
    diff,
    diff_checkpoints,
    natural_sort,
    nonfinite_health,
    timeline,
)

from conftest import FIXTURES, fixture_path, run_cli

DIVERGE = FIXTURES / "diverge"


# --- small Keras-built files ---------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny model saved as .keras and legacy .h5, plus edited / re-typed / re-shaped copies."""
    import keras

    d = tmp_path_factory.mktemp("hist")

    def build(units=4, extra=False, dtype=None):
        inp = keras.Input((8,))
        x = keras.layers.Dense(units, name="d1", dtype=dtype)(inp)
        x = keras.layers.BatchNormalization(name="bn", dtype=dtype)(x)
        if extra:
            x = keras.layers.Dense(3, name="extra")(x)
        out = keras.layers.Dense(2, name="d2", dtype=dtype)(x)
        return keras.Model(inp, out, name="m")

    keras.utils.set_random_seed(0)
    m = build()
    m.save(d / "a.keras")
    m.save(d / "a.h5")
    bn = m.get_layer("bn").get_weights()
    bn[2][0] = np.inf          # moving_mean[0] -> +Inf
    bn[3][1] = np.nan          # moving_variance[1] -> NaN
    m.get_layer("bn").set_weights(bn)
    k = m.get_layer("d1").get_weights()
    k[0][0, 0] += 0.5
    k[0][3, 2] *= 1.25
    m.get_layer("d1").set_weights(k)
    m.save(d / "b.keras")
    m.save(d / "b_legacy.h5")
    # c: same NaN/Inf positions as b, gamma changed
    bn[0][2] = 7.0
    m.get_layer("bn").set_weights(bn)
    m.save(d / "c.keras")
    # d: b with the NaN/Inf repaired
    bn = m.get_layer("bn").get_weights()
    bn[2][0] = 0.0
    bn[3][1] = 1.0
    m.get_layer("bn").set_weights(bn)
    m.save(d / "d.keras")
    # shape / dtype / extra-layer variants
    m5 = build(units=5)
    m5.save(d / "wide.keras")
    keras.utils.set_random_seed(0)
    mh = build(dtype="float16")
    mh.set_weights([w.astype("float16") for w in keras.models.load_model(d / "a.keras").get_weights()])
    mh.save(d / "half.keras")
    build(extra=True).save(d / "extra.keras")
    return d


def test_identical_files_have_no_changes(built):
    r = diff(built / "a.keras", built / "a.keras")
    assert r.identical
    assert {v.status for v in r.variables} == {"same"}
    assert len(r.variables) == 8


def test_keras_vs_legacy_h5_of_same_model_is_identical(built):
    r = diff(built / "a.keras", built / "a.h5")
    assert (r.format_a, r.format_b) == ("keras-zip", "legacy-model")
    assert r.identical, [v for v in r.variables if v.status != "same"]
    assert len(r.variables) == 8


def test_changed_values_and_new_nonfinite_exact(built):
    r = diff(built / "a.keras", built / "b.keras")
    changed = {v.path: v for v in r.by_status("changed")}
    assert set(changed) == {"d1/kernel", "bn/moving_mean", "bn/moving_variance"}
    k = changed["d1/kernel"]
    assert k.changed_values == 2 and k.new_nonfinite == 0
    with open_checkpoint(built / "a.keras") as ca:
        ka = ca.read(ca.find("d1/kernel")).astype(np.float64)
    with open_checkpoint(built / "b.keras") as cb:
        kb = cb.read(cb.find("d1/kernel")).astype(np.float64)
    assert k.max_abs_diff == pytest.approx(np.abs(ka - kb).max())
    rel = np.abs(ka - kb) / np.maximum(np.abs(ka), np.abs(kb))
    assert k.max_rel_diff == pytest.approx(np.nanmax(rel))
    mm, mv = changed["bn/moving_mean"], changed["bn/moving_variance"]
    assert (mm.changed_values, mm.new_nonfinite, mm.nonfinite_b, mm.max_abs_diff) == (1, 1, 1, 0.0)
    assert (mv.changed_values, mv.new_nonfinite, mv.nonfinite_b, mv.max_abs_diff) == (1, 1, 1, 0.0)
    assert r.new_nonfinite == 2
    assert r.summary()["new_nonfinite_variables"] == 2


def test_nan_at_same_position_is_not_a_change(built):
    # b and c share the Inf/NaN; only gamma differs
    r = diff(built / "b.keras", built / "c.keras")
    assert [v.path for v in r.by_status("changed")] == ["bn/gamma"]
    mv = r.get("bn/moving_variance")
    assert (mv.status, mv.nonfinite_a, mv.nonfinite_b, mv.new_nonfinite) == ("same", 1, 1, 0)


def test_resolved_nonfinite_counted(built):
    r = diff(built / "b.keras", built / "d.keras")
    assert r.get("bn/moving_mean").resolved_nonfinite == 1
    assert r.get("bn/moving_variance").resolved_nonfinite == 1
    assert r.new_nonfinite == 0


def test_across_formats_reports_same_changes(built):
    """.keras A against legacy .h5 B gives the same per-variable verdicts as .keras B."""
    r1 = diff(built / "a.keras", built / "b.keras")
    r2 = diff(built / "a.keras", built / "b_legacy.h5")
    assert [v.to_dict() | {"dtype_a": 0, "dtype_b": 0} for v in r1.variables] == [
        v.to_dict() | {"dtype_a": 0, "dtype_b": 0} for v in r2.variables
    ]


def test_shape_mismatch(built):
    r = diff(built / "a.keras", built / "wide.keras")
    mism = {v.path: (v.shape_a, v.shape_b) for v in r.by_status("shape-mismatch")}
    assert mism["d1/kernel"] == ((8, 4), (8, 5))
    assert mism["d2/kernel"] == ((4, 2), (5, 2))
    assert mism["bn/gamma"] == ((4,), (5,))
    assert not r.identical


def test_dtype_mismatch_still_compares_values(built):
    r = diff(built / "a.keras", built / "half.keras")
    k = r.get("d1/kernel")
    assert (k.dtype_a, k.dtype_b, k.dtype_mismatch) == ("float32", "float16", True)
    # float16 rounding only: relative error below 2**-10
    assert 0 < k.max_rel_diff < 2 ** -10
    assert not r.identical
    assert r.summary()["dtype_mismatch"] == 8


def test_only_in_a_and_only_in_b(built):
    r = diff(built / "a.keras", built / "extra.keras")
    assert [v.path for v in r.by_status("only-in-b")] == ["extra/kernel", "extra/bias"]
    assert r.by_status("only-in-a") == []
    r2 = diff(built / "extra.keras", built / "a.keras")
    assert [v.path for v in r2.by_status("only-in-a")] == ["extra/kernel", "extra/bias"]


@given(
    data=st.lists(st.sampled_from([0.0, 1.0, -2.5, 3e38, float("nan"), float("inf"), -float("inf")]), min_size=1, max_size=60),
    cuts_a=st.lists(st.integers(1, 60), max_size=6),
    cuts_b=st.lists(st.integers(1, 60), max_size=6),
)
@settings(max_examples=200, deadline=None)
def test_aligned_pairs_cover_both_streams_exactly(data, cuts_a, cuts_b):
    arr = np.array(data, dtype=np.float32)
    other = arr[::-1].copy()

    def blocks(x, cuts):
        edges = sorted({c for c in cuts if c < len(x)})
        buf = np.empty(len(x), dtype=x.dtype)  # reused buffer, like iter_blocks
        prev = 0
        for e in edges + [len(x)]:
            view = buf[: e - prev]
            view[:] = x[prev:e]
            yield view
            prev = e

    pairs = list((a.copy(), b.copy()) for a, b in _aligned(blocks(arr, cuts_a), blocks(other, cuts_b)))
    assert all(len(a) == len(b) > 0 for a, b in pairs)
    np.testing.assert_array_equal(np.concatenate([a for a, _ in pairs]), arr)
    np.testing.assert_array_equal(np.concatenate([b for _, b in pairs]), other)


@pytest.mark.parametrize("b", ["seed_broken.keras", "seed_broken_legacy.h5", "seed_broken_sharded.weights.json"])
def test_k3_seed_vs_broken_matches_whole_array_oracle(b):
    """Streaming with a tiny, unaligned block size equals numpy on the whole arrays."""
    with open_checkpoint(fixture_path("k3", "seed.keras")) as ca, \
            open_checkpoint(fixture_path("k3", b), config=fixture_path("k3", "seed.config.json")) as cb:
        r = diff_checkpoints(ca, cb, block_elems=37)
        assert len(r.variables) == len(ca.weights()) and not r.by_status("only-in-a") and not r.by_status("only-in-b")
        for vd in r.variables:
            xa = ca.read(ca.find(vd.path)).astype(np.float64)
            xb = cb.read(cb.find(vd.path)).astype(np.float64)
            fa, fb = np.isfinite(xa), np.isfinite(xb)
            both = fa & fb
            same = (xa == xb) | (np.isnan(xa) & np.isnan(xb))
            assert vd.changed_values == int((~same).sum()), vd.path
            assert vd.new_nonfinite == int((fa & ~fb).sum()), vd.path
            d = np.abs(xa - xb)[both]
            assert vd.max_abs_diff == (float(d.max()) if d.size else 0.0), vd.path
    assert r.by_status("changed"), "seed_broken must differ from seed"


def test_k3_seed_across_formats_identical():
    for other in ("seed_legacy.h5", "seed.weights.h5", "seed_sharded.weights.json"):
        r = diff(fixture_path("k3", "seed.keras"), fixture_path("k3", other))
        assert r.identical, (other, [v.path for v in r.variables if v.status != "same"])


_SEED_BROKEN = ["k3/seed_broken.keras", "k3/seed_broken.weights.h5", "k3/seed_broken_legacy.h5",
                "k3/seed_broken_sharded.weights.json", "tf2/seed_broken.h5", "tf2/seed_broken_weights.h5"]


@pytest.mark.parametrize("broken", _SEED_BROKEN)
def test_diff_against_seed_names_exactly_the_injected_faults(broken):
    """diff(seed, seed_broken) changes exactly the variables faults.json says were broken."""
    faults = [f for f in json.loads(fixture_path("faults.json").read_text())["faults"] if f["file"] == broken]
    assert faults, f"faults.json records no fault for {broken}"
    seed = fixture_path("k3", "seed.keras") if broken.startswith("k3/") else fixture_path("tf2", "seed.h5")
    r = diff(seed, fixture_path(broken))
    assert not r.by_status("only-in-a") and not r.by_status("only-in-b") and not r.by_status("shape-mismatch")
    assert {v.path for v in r.by_status("changed")} == {f"{f['layer_path']}/{f['variable']}" for f in faults}
    for f in faults:
        vd = r.get(f"{f['layer_path']}/{f['variable']}")
        # every injected value replaced a different finite one: each is a change, and each
        # non-finite one (all of a "nan"/"inf" fault, none of the others) is new
        assert all(np.isfinite(float(x)) for x in f["original_values"]), f
        assert len(f["injected_values"]) == len(f["indices"]), f
        nonfinite = sum(1 for x in f["injected_values"] if not np.isfinite(float(x)))
        assert nonfinite == (len(f["indices"]) if f["fault"] in ("nan", "inf") else 0), f
        assert (vd.changed_values, vd.new_nonfinite) == (len(f["indices"]), nonfinite), (broken, f)


# --- CLI: diff ----------------------------------------------------------------------
def test_cli_diff_text_and_exit_codes(built):
    same = run_cli("diff", built / "a.keras", built / "a.h5")
    assert same.returncode == 0, same.stderr
    assert "8 variables matched: 0 changed, 8 identical" in same.stdout
    p = run_cli("diff", built / "a.keras", built / "b.keras")
    assert p.returncode == 1, p.stderr
    assert "2 new non-finite values in 2 variables" in p.stdout
    lines = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("changed")]
    assert [ln[1] for ln in lines] == ["d1/kernel", "bn/moving_mean", "bn/moving_variance"]


def test_cli_diff_json(built):
    p = run_cli("diff", "--json", built / "a.keras", built / "b_legacy.h5")
    assert p.returncode == 1 and p.stderr == ""
    doc = json.loads(p.stdout)
    assert doc["schema_version"] == 1 and doc["identical"] is False
    assert doc["b"]["format"] == "legacy-model"
    assert doc["summary"]["changed"] == 3 and doc["summary"]["new_nonfinite_values"] == 2
    mv = next(v for v in doc["variables"] if v["path"] == "bn/moving_variance")
    assert mv["new_nonfinite"] == 1 and mv["status"] == "changed"


def test_cli_diff_unreadable(tmp_path, built):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a checkpoint")
    p = run_cli("diff", built / "a.keras", junk)
    assert p.returncode == 2
    assert p.stderr.startswith(f"ckptscan: error: {junk}: ")


# --- timeline -------------------------------------------------------------------------
def test_natural_sort():
    names = ["run/epoch_10.keras", "run/epoch_2.keras", "run/epoch_1.keras", "run/epoch_02b.keras", "run/final.keras"]
    assert natural_sort(names) == [
        "run/epoch_1.keras", "run/epoch_2.keras", "run/epoch_02b.keras", "run/epoch_10.keras", "run/final.keras",
    ]


def test_timeline_diverge_matches_manifest():
    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    files = [str(DIVERGE / e["file"]) for e in manifest["epochs"]]
    random.Random(7).shuffle(files)
    tl = timeline(files)
    assert [Path(h.path).name for h in tl.entries] == [e["file"] for e in manifest["epochs"]]
    epoch_of = {e["file"]: e["epoch"] for e in manifest["epochs"]}
    assert epoch_of[Path(tl.first_bad.path).name] == manifest["first_bad_epoch"]
    assert epoch_of[Path(tl.last_good.path).name] == manifest["last_good_epoch"]
    for h, e in zip(tl.entries, manifest["epochs"]):
        assert (h.status == "good") == e["all_weights_finite"], h
    # the bad variables are exactly the manifest's non-finite BN statistics
    first = next(e for e in manifest["epochs"] if e["epoch"] == manifest["first_bad_epoch"])
    want = {f"{b['path']}/{stat}" for b in first["nonfinite_bn_layers"] for stat in ("moving_mean", "moving_variance")}
    assert set(tl.first_bad.bad_variables) == want
    # the count equals numpy over the whole arrays (an oracle independent of iter_blocks)
    with open_checkpoint(tl.first_bad.path) as c:
        oracle = sum(int((~np.isfinite(c.read(v))).sum()) for v in c.weights() if v.is_float)
    assert tl.first_bad.nonfinite_values == oracle > 0
    assert tl.fix_command == f"ckptscan fix --from {tl.last_good.path} {tl.first_bad.path}"


def test_cli_timeline_diverge(tmp_path):
    # copy to names that sort wrongly as plain strings: epoch_2 < epoch_10
    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    for e in manifest["epochs"]:
        shutil.copy(fixture_path("diverge", e["file"]), tmp_path / f"epoch_{e['epoch'] * 2}.keras")
    args = sorted(str(p) for p in tmp_path.glob("*.keras"))  # epoch_10 before epoch_2
    p = run_cli("timeline", *args)
    assert p.returncode == 1, p.stderr
    good = tmp_path / f"epoch_{manifest['last_good_epoch'] * 2}.keras"
    bad = tmp_path / f"epoch_{manifest['first_bad_epoch'] * 2}.keras"
    assert f"first bad: {bad}" in p.stdout
    assert f"last good: {good}" in p.stdout
    assert f"restore with: ckptscan fix --from {good} {bad}" in p.stdout
    order = [ln.split()[0] for ln in p.stdout.splitlines()[: len(args)]]
    assert order == [str(tmp_path / f"epoch_{e['epoch'] * 2}.keras") for e in manifest["epochs"]]
    j = run_cli("timeline", "--json", *args)
    doc = json.loads(j.stdout)
    assert doc["first_bad"] == str(bad) and doc["last_good"] == str(good)
    assert doc["fix_command"] == f"ckptscan fix --from {good} {bad}"


def test_timeline_all_good_and_unreadable(built, tmp_path):
    junk = tmp_path / "epoch_3.keras"
    junk.write_bytes(b"PK\x03\x04 truncated")
    tl = timeline([built / "a.keras", junk, built / "a.h5"], sort=False)
    assert [h.status for h in tl.entries] == ["good", "error", "good"]
    assert tl.first_bad is None and tl.fix_command is None
    p = run_cli("timeline", built / "a.keras", junk)
    assert p.returncode == 2
    assert f"ckptscan: error: {junk}: " in p.stderr
    ok = run_cli("timeline", built / "a.keras", built / "a.h5")
    assert ok.returncode == 0 and "all checkpoints are healthy" in ok.stdout


def test_timeline_bad_first_has_no_last_good(built):
    tl = timeline([built / "b.keras", built / "a.keras"], sort=False)
    assert tl.first_bad.path == str(built / "b.keras")
    assert tl.last_good is None and tl.fix_command is None


def test_nonfinite_health_counts(built):
    h = nonfinite_health(str(built / "b.keras"))
    assert (h.status, h.nonfinite_values, h.bad_variables) == ("bad", 2, ("bn/moving_mean", "bn/moving_variance"))


def test_timeline_fix_command_makes_first_bad_predict_finite(tmp_path):
    """Must-show: the command timeline prints, run as is, repairs the diverged epoch."""
    import shlex

    import keras

    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    for e in manifest["epochs"]:
        shutil.copy(fixture_path("diverge", e["file"]), tmp_path / e["file"])
    doc = json.loads(run_cli("timeline", "--json", *sorted(map(str, tmp_path.glob("epoch_*.keras")))).stdout)
    first_bad = doc["first_bad"]
    val = np.load(DIVERGE / "val.npz")
    before = keras.models.load_model(first_bad, compile=False).predict(val["x"][:256], verbose=0)
    assert not np.isfinite(before).all()
    argv = shlex.split(doc["fix_command"])
    assert argv[:3] == ["ckptscan", "fix", "--from"]
    fixed = run_cli(*argv[1:])
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    after = keras.models.load_model(first_bad, compile=False).predict(val["x"], verbose=0)
    assert np.isfinite(after).all()
    assert (after.argmax(-1) == val["y"]).mean() > 0.8
    assert timeline([doc["last_good"], first_bad]).first_bad is None


def test_tf2_keras_vs_legacy_h5_identical_except_metric_state():
    r = diff(fixture_path("tf2", "seed.keras"), fixture_path("tf2", "seed.h5"))
    assert (r.format_a, r.format_b) == ("keras-zip", "legacy-model")
    assert not r.by_status("changed") and not r.by_status("shape-mismatch") and not r.by_status("only-in-b")
    assert len(r.by_status("same")) > 100
    # tf-keras .keras files also store metric state (Mean trackers), which a legacy .h5 has not
    assert all(re.fullmatch(r"mean(_\d+)?/vars/\d+", v.path) for v in r.by_status("only-in-a"))


def test_timeline_jobs2_same_as_sequential():
    manifest = json.loads(fixture_path("diverge", "manifest.json").read_text())
    files = [str(fixture_path("diverge", e["file"])) for e in manifest["epochs"]]
    assert files == [str(p) for p in sorted(DIVERGE.glob("epoch_*.keras"))]
    seq = run_cli("timeline", "--json", *files)
    par = run_cli("timeline", "--json", "--jobs", "2", *files)
    assert seq.returncode == par.returncode == 1
    assert json.loads(par.stdout) == json.loads(seq.stdout)
    assert timeline(files, jobs=2).to_dict() == timeline(files).to_dict()
