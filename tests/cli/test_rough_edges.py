"""Rough edges of issue 13, item 9: help text, natural order, inspect --layer, SARIF, JSON Schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

import ckptscan
from ckptscan.discover import discover
from conftest import FIXTURES, ROOT, run_cli

K3 = FIXTURES / "k3"
SCHEMAS = ROOT / "ckptscan" / "schema"


def _schema(name: str) -> dict:
    doc = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def _valid(doc: dict, name: str) -> None:
    doc = json.loads(json.dumps(doc))  # in-process documents hold tuples; validate the JSON
    jsonschema.Draft202012Validator(_schema(name)).validate(doc)


def test_scan_help_has_no_eaten_markup():
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ckptscan", "scan", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "COLUMNS": "400"}, timeout=60)
    flat = " ".join(out.stdout.replace("│", " ").split())
    assert " ." not in flat.replace("... ", "").replace(" .weights", "").replace(" .ckptscan", "").replace(" .keras", "")
    assert "pip install 'ckptscan[dask]'" in flat
    assert "(rule OPT001; default: include)" in flat


def test_folders_are_discovered_in_natural_order(tmp_path):
    for n in (10, 2, 1, 33, 3):
        shutil.copy(K3 / "fp16.keras", tmp_path / f"epoch_{n}.keras")
    names = [Path(c.path).name for c in discover([tmp_path])]
    assert names == ["epoch_1.keras", "epoch_2.keras", "epoch_3.keras", "epoch_10.keras", "epoch_33.keras"]
    globbed = [Path(c.path).name for c in discover([str(tmp_path / "epoch_*.keras")])]
    assert globbed == names


def test_inspect_layer_matches_a_path_suffix_or_says_nothing_matched():
    out = run_cli("inspect", "--json", "--layer", "post_bn", K3 / "seed.keras")
    doc = json.loads(out.stdout)
    assert {v["layer_path"] for v in doc["variables"]} == {"resnet101v2/post_bn"}
    v = doc["variables"][0]
    assert (v["layer_name"], v["leaf_layer"]) == ("resnet101v2", "post_bn")  # nested: the outer model, and the leaf
    none = run_cli("inspect", "--layer", "no_such_layer", K3 / "seed.keras")
    assert none.returncode == 0 and "note: no layer matches --layer 'no_such_layer'" in none.stdout
    doc = json.loads(run_cli("inspect", "--json", "--layer", "no_such_layer", K3 / "seed.keras").stdout)
    assert doc["variables"] == [] and doc["notes"][-1] == "no layer matches --layer 'no_such_layer'"


def test_sarif_region_help_uri_and_relative_uris(monkeypatch):
    rel = "fixtures/k3/seed_broken.keras"
    monkeypatch.delenv("CKPTSCAN_RULE_DOCS_URL", raising=False)
    out = run_cli("scan", "--format", "sarif", rel, str(ROOT / "fixtures" / "k3" / "seed.keras"), cwd=ROOT)
    run = json.loads(out.stdout)["runs"][0]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == ROOT.as_uri() + "/"
    rules = run["tool"]["driver"]["rules"]
    # no published address configured: no helpUri (it must be absolute), the repository path instead
    assert all("helpUri" not in r for r in rules)
    assert all((ROOT / r["properties"]["helpPath"]).is_file() for r in rules)
    assert all(r["properties"]["helpPath"] == f"docs/rules/{r['id']}.md" for r in rules)
    monkeypatch.setenv("CKPTSCAN_RULE_DOCS_URL", "https://example.org/ckptscan/docs/rules")
    out = run_cli("scan", "--format", "sarif", rel, cwd=ROOT)
    rules = json.loads(out.stdout)["runs"][0]["tool"]["driver"]["rules"]
    assert all(r["helpUri"] == f"https://example.org/ckptscan/docs/rules/{r['id']}.md" for r in rules)
    for res in run["results"]:
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"] == {"uri": rel, "uriBaseId": "SRCROOT"}
        assert loc["region"] == {"startLine": 1}
    # an absolute path inside the working directory is made relative too
    assert {a["location"]["uri"] for a in run["artifacts"]} == {rel, "fixtures/k3/seed.keras"}
    assert all(a["location"]["uriBaseId"] == "SRCROOT" for a in run["artifacts"])


@pytest.mark.parametrize("name", ["seed.keras", "optnan.keras", "seed_sharded.weights.json", "bf16_legacy.h5",
                                  "seed.weights.h5"])
def test_inspect_json_matches_its_schema(name):
    out = run_cli("inspect", "--json", "--include-optimizer", K3 / name)
    _valid(json.loads(out.stdout), "inspect.schema.json")


@pytest.mark.parametrize("name", ["mgr", "tf1", "nested_broken_sm"])
def test_inspect_json_of_tensorflow_checkpoints_matches_its_schema(name):
    doc = json.loads(run_cli("inspect", "--json", "--include-optimizer", FIXTURES / "tfckpt" / name).stdout)
    _valid(doc, "inspect.schema.json")
    assert doc["format"].startswith("tf") and any("slot_of" in v for v in doc["variables"])


def test_diff_json_matches_its_schema():
    for a, b in ((K3 / "seed.keras", K3 / "seed_broken.keras"), (K3 / "seed.keras", K3 / "seed_legacy.h5"),
                 (K3 / "seed.keras", K3 / "misc.keras")):
        out = run_cli("diff", "--json", a, b)
        doc = json.loads(out.stdout)
        _valid(doc, "diff.schema.json")
    assert {v["status"] for v in doc["variables"]} >= {"only-in-a", "only-in-b"}


def test_timeline_json_matches_its_schema(tmp_path):
    shutil.copy(K3 / "seed.keras", tmp_path / "epoch_1.keras")
    shutil.copy(K3 / "seed_broken.keras", tmp_path / "epoch_2.keras")
    (tmp_path / "epoch_3.keras").write_bytes(b"")
    out = run_cli("timeline", "--json", *sorted(tmp_path.iterdir()))
    doc = json.loads(out.stdout)
    _valid(doc, "timeline.schema.json")
    assert [c["status"] for c in doc["checkpoints"]] == ["good", "bad", "error"]


def test_fix_manifest_matches_its_schema(tmp_path):
    shutil.copy(K3 / "seed_broken.keras", tmp_path / "a.keras")
    shutil.copy(K3 / "seed.keras", tmp_path / "clean.keras")
    shutil.copy(K3 / "faults.weights.h5", tmp_path / "f.weights.h5")
    (tmp_path / "empty.keras").write_bytes(b"")
    dry = ckptscan.fix([tmp_path / "a.keras"], dry_run=True)
    _valid(dry.to_dict(), "fix-manifest.schema.json")
    manifest = tmp_path / "manifest.json"
    res = run_cli("fix", "--backup", "--strategy", "reset", "--manifest", manifest, tmp_path / "a.keras",
                  tmp_path / "clean.keras", tmp_path / "f.weights.h5", tmp_path / "empty.keras")
    doc = json.loads(manifest.read_text())
    _valid(doc, "fix-manifest.schema.json")
    assert {f["status"] for f in doc["files"]} == {"fixed", "unchanged", "refused", "failed"}, res.stdout
    opt = ckptscan.fix(shutil.copy(K3 / "optnan.keras", tmp_path / "o.keras"), include_optimizer=True)
    _valid(opt.to_dict(), "fix-manifest.schema.json")
