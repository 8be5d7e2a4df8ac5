"""TensorFlow-format checkpoints written by tf-keras (``fixtures/tfckpt/``, issue 14).

Names: ckptscan's (layer path, variable, shape, dtype) set equals what tf-keras
reported when it wrote the file (``manifest.json``, recorded by ``fixtures/gen_tfckpt.py``
from ``model.layers`` / ``layer.weights`` and from the optimizer's own slot lists); the
same is asserted against tf-keras restoring each checkpoint during the test in
``test_tf_names_tfkeras.py``, which does not read the manifest. Faults found at their exact layer, variable and indices; clean files have no finding;
checksums verified; detection by content in every way a user names a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import FIXTURES
from ckptscan import scan
from ckptscan.cli import main
from ckptscan.formats import detect, open_checkpoint

TF = FIXTURES / "tfckpt"
MANIFEST = json.loads((TF / "manifest.json").read_text())["checkpoints"]
KERAS = [n for n, d in MANIFEST.items() if not d["kind"].startswith("tf1_saver")]


def _open(name, with_config=True):
    doc = MANIFEST[name]
    cfg = str(TF / doc["config"]) if with_config and doc.get("config") else None
    return open_checkpoint(TF / doc["path"], config=json.loads(open(cfg).read()) if cfg else None)


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERAS)
def test_weight_names_equal_tf_keras(name):
    doc = MANIFEST[name]
    with _open(name) as ck:
        got = {(v.layer_path, v.name, tuple(v.shape), v.dtype) for v in ck.variables if v.kind == "weight"}
        assert all(v.naming == "known" for v in ck.variables if v.kind == "weight")
    want = {(lp, n, tuple(s), d) for lp, n, s, d in doc["weights"]}
    assert got == want


@pytest.mark.parametrize("name", [n for n in KERAS if "optimizer" in MANIFEST[n]])
def test_optimizer_slots_attributed_as_tf_keras(name):
    doc = MANIFEST[name]["optimizer"]
    with _open(name) as ck:
        opt = {v.path: v for v in ck.variables if v.kind == "optimizer"}
        got = {(ck.slots[p][0], ck.slots[p][1], p, tuple(v.shape), v.dtype) for p, v in opt.items() if p in ck.slots}
    want = {(var, slot, path, tuple(s), d) for var, slot, path, s, d in doc["slots"]}
    assert got == want
    assert set(doc["variables"]) <= set(opt)


def test_without_config_nested_model_is_named_by_its_edge_and_marked_inferred():
    doc = MANIFEST["seed_broken_sw"]
    with _open("seed_broken_sw", with_config=False) as ck:
        weights = [v for v in ck.variables if v.kind == "weight"]
        nested = [v for v in weights if v.naming == "inferred"]
        assert nested and all(v.layer_path.startswith("layer_with_weights-0/") for v in nested)
        assert {v.path.replace("layer_with_weights-0/", "resnet101v2/", 1) for v in weights} == {
            f"{lp}/{n}" for lp, n, _s, _d in doc["weights"]}
        assert any("inferred" in n for n in ck.notes)


def test_savedmodel_layers_have_class_and_config():
    with _open("nested_broken_sm") as ck:
        assert ck.format == "tf-savedmodel"
        bn = ck.find("backbone/bn_b/moving_variance")
        assert bn.layer_class == "BatchNormalization"
        assert ck.layers["backbone/bn_b"].config["epsilon"] == pytest.approx(1e-3)
        assert ck.model_config["class_name"] == "Functional"


def test_tf1_names_and_slots():
    doc = MANIFEST["tf1"]
    with _open("tf1") as ck:
        assert ck.format == "tf1-checkpoint"
        keys = {v.h5path: v for v in ck.variables}
        assert {(k, tuple(v.shape), v.dtype) for k, v in keys.items()} == {(n, tuple(s), d) for n, s, d in doc["variables"]}
        mv = keys["conv1/batch_normalization/moving_variance"]
        assert (mv.layer_path, mv.name, mv.kind) == ("conv1/batch_normalization", "moving_variance", "weight")
        adam = keys["conv1/conv/kernel/Adam_1"]
        assert adam.kind == "optimizer" and ck.slots[adam.path] == ("conv1/conv/kernel", "Adam_1")
        assert keys["global_step"].kind == "optimizer" and keys["beta1_power"].kind == "optimizer"


def test_dtypes_float16_int64_and_training_state():
    with _open("mixed16_sw") as ck:
        assert ck.find("half_dense/kernel").dtype == "float16"
        assert ck.find("optimizer/iteration").dtype == "int64"
        assert ck.find("optimizer/iteration").kind == "optimizer"
        assert ck.read(ck.find("half_dense/kernel")).dtype.name == "float16"
    with open_checkpoint(TF / "mgr") as ck:
        assert ck.find("save_counter").kind == "optimizer"
        assert ck.find("save_counter").dtype == "int64"


# --- scan: faults and clean files -------------------------------------------------------------


def _finding_keys(report):
    out = set()
    for f in report.files[0].findings:
        out.add((f.layer_path, f.variable, f.rule_id, tuple(f.indices)))
    return out


@pytest.mark.parametrize("name", [n for n, d in MANIFEST.items() if d["faults"]])
def test_every_fault_found_at_its_layer_variable_and_indices(name):
    doc = MANIFEST[name]
    cfg = str(TF / doc["config"]) if doc.get("config") else None
    report = scan(TF / doc["path"], config=cfg)
    res = report.files[0]
    assert res.status == "scanned", res.reason
    found = {(f.layer_path, f.variable): f for f in res.findings}
    for fault in doc["faults"]:
        if fault["kind"] == "optimizer":
            key = tuple(fault["optimizer_variable"].rsplit("/", 1))
            rule = "OPT001"
        else:
            key = (fault["layer_path"], fault["variable"])
            rule = {"huge_variance": "BN002"}.get(fault["fault"])
        assert key in found, (key, sorted(found))
        hits = [f for f in res.findings if (f.layer_path, f.variable) == key]
        if rule:
            assert rule in {f.rule_id for f in hits}
        idx = fault["indices"]
        assert any(list(f.indices) == idx[: len(f.indices)] and len(f.indices) >= min(len(idx), 32) for f in hits), hits
    # nothing else is an error or warning
    faulty = {(f["layer_path"], f["variable"]) if f["kind"] == "weight" else tuple(f["optimizer_variable"].rsplit("/", 1))
              for f in doc["faults"]}
    assert {(f.layer_path, f.variable) for f in res.findings if f.severity.value in ("error", "warning")} <= faulty


@pytest.mark.parametrize("path", ["mgr/ckpt-1", "bidi_sw", "mixed16_sw/ckpt", "misc_sw"])
def test_clean_checkpoints_have_no_warning(path):
    report = scan(TF / path)
    res = report.files[0]
    assert res.status == "scanned", res.reason
    assert [f for f in res.findings if f.severity.value in ("error", "warning")] == []
    assert res.variables_scanned > 0


def test_inspect_lists_names_shard_and_byte_range(capsys):
    assert main(["inspect", "--json", "--include-optimizer", "--config", str(TF / "seed.config.json"),
                 str(TF / "seed_broken_sw" / "ckpt")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "tf-checkpoint"
    by = {v["path"]: v for v in doc["variables"]}
    mv = by["resnet101v2/conv5_block3_2_bn/moving_variance"]
    assert mv["member"] == "ckpt.data-00000-of-00001" and mv["nbytes"] == 4 * mv["shape"][0] and mv["offset"] >= 0
    assert by["optimizer/Adam/m/class_head/kernel"]["slot_of"] == {"variable": "class_head/kernel", "slot": "m"}
    assert main(["inspect", str(TF / "tf1" / "model.ckpt")]) == 0
    assert "conv1/batch_normalization" in capsys.readouterr().out


# --- checksums -------------------------------------------------------------------------------------


def test_checksum_mismatch_is_an_error_finding_naming_the_tensor(tmp_path, capsys):
    d = tmp_path / "ck"
    shutil.copytree(TF / "bidi_sw", d)
    with open_checkpoint(d / "ckpt") as ck:
        v = ck.find("out/kernel")
        off = v.offset
    data = bytearray((d / "ckpt.data-00000-of-00001").read_bytes())
    data[off + 1] ^= 0x01  # a bit flip in the low mantissa: still finite
    (d / "ckpt.data-00000-of-00001").write_bytes(bytes(data))
    report = scan(d / "ckpt")
    res = report.files[0]
    assert res.status == "scanned"
    assert [(f.rule_id, f.layer_path, f.variable, f.severity.value) for f in res.findings] == [
        ("INT001", "out", "kernel", "error")]
    assert main(["scan", str(d / "ckpt")]) == 1
    assert "INT001" in capsys.readouterr().out


def test_checksum_mismatch_in_a_bn_vector_read_whole(tmp_path):
    # the BN rules read BN vectors whole (TFCheckpoint.read, one preadv): still verified
    d = tmp_path / "ck"
    shutil.copytree(TF / "seed_broken_sw", d)
    with open_checkpoint(d / "ckpt") as ck:
        v = next(v for v in ck.variables if v.name == "moving_mean" and v.layer_path.endswith("conv2_block1_1_bn"))
        off, lp = v.offset, v.layer_path
        assert 0 < v.size <= 1 << 17 and v.dtype == "float32"
    before = {(f.rule_id, f.layer_path, f.variable) for f in scan(d / "ckpt").files[0].findings}
    data = bytearray((d / "ckpt.data-00000-of-00001").read_bytes())
    data[off + 1] ^= 0x01  # still finite: only the checksum can tell
    (d / "ckpt.data-00000-of-00001").write_bytes(bytes(data))
    after = {(f.rule_id, f.layer_path, f.variable) for f in scan(d / "ckpt").files[0].findings}
    assert after - before == {("INT001", lp, "moving_mean")}


# --- detection ---------------------------------------------------------------------------------------


def test_every_way_of_naming_a_checkpoint(tmp_path):
    sw = TF / "bidi_sw"
    assert detect(sw / "ckpt.index") == "tf-checkpoint"
    assert detect(sw / "ckpt") == "tf-checkpoint"  # the prefix
    assert detect(sw) == "tf-checkpoint"  # folder with a checkpoint state file
    assert detect(TF / "nested_broken_sm") == "tf-savedmodel"
    assert detect(sw / "ckpt.data-00000-of-00001") == "tf-data-shard"
    # the empty basename: dir/ names dir/.index
    d = tmp_path / "emptybase"
    d.mkdir()
    shutil.copy(sw / "ckpt.index", d / ".index")
    shutil.copy(sw / "ckpt.data-00000-of-00001", d / ".data-00000-of-00001")
    with open_checkpoint(str(d) + os.sep) as ck:
        assert ck.find("bi/forward_lstm/lstm_cell/kernel").shape
    with open_checkpoint(d) as ck:
        assert len(ck.variables) > 5


def test_state_file_latest_and_stale_paths(tmp_path):
    d = tmp_path / "mgr"
    shutil.copytree(TF / "mgr", d)
    with open_checkpoint(d) as ck:
        assert ck.prefix.endswith("ckpt-2")
        assert any("latest of 2 checkpoints" in n for n in ck.notes)
    # absolute paths from another machine: the same base name beside the state file
    (d / "checkpoint").write_text('model_checkpoint_path: "/home/someone/run7/ckpt-2"\n'
                                  'all_model_checkpoint_paths: "/home/someone/run7/ckpt-1"\n'
                                  'all_model_checkpoint_paths: "/home/someone/run7/ckpt-2"\n')
    with open_checkpoint(d) as ck:
        assert ck.prefix.endswith("ckpt-2")
    # a state file naming checkpoints that are gone: the newest index present
    (d / "checkpoint").write_text('model_checkpoint_path: "ckpt-9"\n')
    with open_checkpoint(d) as ck:
        assert ck.prefix.endswith("ckpt-2")
    for f in d.glob("ckpt-2.*"):
        f.unlink()
    with open_checkpoint(d) as ck:
        assert ck.prefix.endswith("ckpt-1")


def test_folder_walk_scans_each_checkpoint_once_and_skips_shards(tmp_path):
    shutil.copytree(TF / "mgr", tmp_path / "run" / "mgr")
    loose = tmp_path / "run" / "loose"
    loose.mkdir()
    for f in (TF / "bidi_sw").glob("ckpt.*"):
        shutil.copy(f, loose / f.name)
    report = scan(tmp_path / "run")
    by = {os.path.relpath(r.path, tmp_path / "run"): r for r in report.files}
    assert by["mgr"].status == "scanned"
    assert by["loose/ckpt.index"].status == "scanned"
    assert by["loose/ckpt.data-00000-of-00001"].status == "skipped"
    assert "through its .index" in by["loose/ckpt.data-00000-of-00001"].reason
    assert not any(p.startswith("mgr/") for p in by)


def test_data_shard_named_alone_is_one_error_line(capsys):
    assert main(["inspect", str(TF / "bidi_sw" / "ckpt.data-00000-of-00001")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scan its index (ckpt.index)" in err[0]


def test_orbax_unsupported_when_named_listed_in_a_folder(tmp_path, capsys):
    ob = tmp_path / "runs" / "orbax_ckpt"
    (ob / "0").mkdir(parents=True)
    (ob / "0" / "_CHECKPOINT_METADATA").write_text("{}")
    assert main(["inspect", str(ob)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsupported: Orbax checkpoint" in err[0]
    report = scan(tmp_path / "runs")
    assert [(r.status, r.reason) for r in report.files] == [("skipped", "unsupported: Orbax checkpoint (TensorStore arrays; not read)")]
