"""``diff`` and ``timeline`` across TensorFlow-format and HDF5 checkpoints of the same model
(issue 14): ``fixtures/tfckpt/seed_broken_sw`` is the seed-like model of
``fixtures/tf2/seed.h5`` saved by tf-keras ``save_weights`` in TF format with three BN
faults injected. A ``save_weights`` checkpoint does not name the nested backbone
(``layer_with_weights-0``); ``--config`` gives the names tf-keras reports, so both sides
match exactly."""

from __future__ import annotations

import json
import shlex
import shutil

from conftest import FIXTURES
from ckptscan.cli import main
from ckptscan.formats import open_checkpoint

TF_CKPT = FIXTURES / "tfckpt" / "seed_broken_sw" / "ckpt"
H5 = FIXTURES / "tf2" / "seed.h5"
CONFIG = FIXTURES / "tfckpt" / "seed.config.json"
FAULTS = {"resnet101v2/conv5_block3_2_bn/moving_variance", "resnet101v2/post_bn/moving_mean",
          "resnet101v2/post_bn/moving_variance"}


def _diff(capsys, *args):
    code = main(["diff", "--json", *map(str, args)])
    return code, json.loads(capsys.readouterr().out)


def test_diff_tf_checkpoint_against_h5_with_config_matches_every_name_exactly(capsys):
    code, doc = _diff(capsys, "--config", CONFIG, TF_CKPT, H5)
    assert code == 1
    assert doc["a"]["format"] == "tf-checkpoint" and doc["b"]["format"] == "legacy-model"
    with open_checkpoint(H5) as h5:
        names = {v.path for v in h5.weights(False)}
    assert {v["path"] for v in doc["variables"]} == names  # paired by the exact path, no leftovers
    assert doc["summary"]["only_in_a"] == doc["summary"]["only_in_b"] == 0
    changed = {v["path"] for v in doc["variables"] if v["status"] == "changed"}
    assert changed == FAULTS
    assert doc["summary"]["resolved_nonfinite_values"] == 64  # post_bn's 32 + 32 NaN are finite in the .h5


def test_diff_without_config_names_the_backbone_by_its_edge(capsys):
    _, doc = _diff(capsys, TF_CKPT, H5)
    changed = {v["path"] for v in doc["variables"] if v["status"] == "changed"}
    assert changed == {p.replace("resnet101v2/", "layer_with_weights-0/") for p in FAULTS}


def test_timeline_across_formats_with_config_and_its_fix_command_repairs(tmp_path, capsys):
    shutil.copytree(TF_CKPT.parent, tmp_path / "sw")
    bad = tmp_path / "sw" / "ckpt"
    code = main(["timeline", "--json", "--keep-order", "--config", str(CONFIG), str(H5), str(bad)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(c["path"], c["status"]) for c in doc["checkpoints"]] == [(str(H5), "good"), (str(bad), "bad")]
    assert set(doc["checkpoints"][1]["bad_variables"]) >= {"resnet101v2/post_bn/moving_mean",
                                                          "resnet101v2/post_bn/moving_variance"}
    argv = shlex.split(doc["fix_command"])
    assert argv[:2] == ["ckptscan", "fix"] and "--config" in argv
    assert main(argv[1:]) == 0
    capsys.readouterr()
    assert main(["timeline", "--json", "--config", str(CONFIG), str(bad)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoints"][0]["status"] == "good"
