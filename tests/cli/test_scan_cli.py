"""``ckptscan scan`` end to end through the CLI's ``main(argv)`` (in process): the seed
scenario, exit codes, clean stdout, settings, discovery."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from conftest import FIXTURES, ROOT, fixture_path, run_cli

SCHEMA = json.loads((ROOT / "ckptscan" / "schema" / "report.schema.json").read_text())
SARIF_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0.json").read_text())


@pytest.fixture(scope="module")
def seed_files():
    """The committed seed scenario (fixtures/gen_k3.py, built with Keras 3): a functional
    model wrapping a tiny ResNet-V2 backbone with two heads; conv5_block3_2_bn
    moving_variance channels 2 and 5 made 1e5x the layer median, post_bn statistics NaN.
    Plus the clean model."""
    fixture_path("k3", "seed.keras")
    return fixture_path("k3", "seed_broken.keras").parent


def _json(proc):
    doc = json.loads(proc.stdout)  # stdout holds the JSON document and nothing else
    jsonschema.validate(doc, SCHEMA)
    return doc


def test_seed_scenario_end_to_end(seed_files):
    broken = seed_files / "seed_broken.keras"
    p = run_cli("scan", broken, "--format", "json")
    assert p.returncode == 1, p.stderr
    doc = _json(p)
    (fr,) = doc["files"]
    warn_up = sorted((f["rule_id"], f["path"], tuple(f["indices"])) for f in fr["findings"]
                     if f["severity"] in ("error", "warning"))
    assert warn_up == [
        ("BN001", "resnet101v2/post_bn/moving_variance", tuple(range(32))),
        ("BN002", "resnet101v2/conv5_block3_2_bn/moving_variance", (2, 5)),
        ("BN003", "resnet101v2/conv5_block3_2_bn/moving_variance", (2, 5)),
        ("BN004", "resnet101v2/post_bn/moving_mean", tuple(range(32))),
    ]
    imp = fr["impact"]
    assert imp["origin"].endswith("/conv5_block3_2_bn")
    assert imp["heads"] == ["class_head", "aux_head"] and imp["reached_heads"] == ["class_head", "aux_head"]
    assert imp["inference_only"] is True
    assert p.stderr.strip().splitlines()[-1] == "ckptscan: 1 file scanned, 1 with errors: 2 errors, 2 warnings"

    p = run_cli("scan", broken, "--format", "sarif")
    assert p.returncode == 1
    sarif = json.loads(p.stdout)
    jsonschema.validate(sarif, SARIF_SCHEMA)
    results = sarif["runs"][0]["results"]
    names = {loc["fullyQualifiedName"] for r in results for loc in r["locations"][0]["logicalLocations"]}
    assert {"resnet101v2/post_bn", "resnet101v2/post_bn/moving_mean",
            "resnet101v2/conv5_block3_2_bn/moving_variance"} <= names
    assert {r["level"] for r in results} == {"error", "warning"}

    p = run_cli("scan", broken, "--format", "junit")
    assert p.returncode == 1
    root = ET.fromstring(p.stdout)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert "resnet101v2/conv2_block1_1_bn" in cases and cases["resnet101v2/conv2_block1_1_bn"].find("failure") is None
    assert cases["resnet101v2/post_bn"].find("failure").get("type") in ("BN001", "BN004")
    assert cases["resnet101v2/conv5_block3_2_bn"].find("failure") is None  # warnings only, --fail-on error
    assert root.get("failures") == "1"

    p = run_cli("scan", broken)
    assert p.returncode == 1
    assert "impact: first broken layer resnet101v2/post_bn (BN001, BN004)" in p.stdout
    assert "suspicious (warnings): resnet101v2/conv5_block3_2_bn (BN002)" in p.stdout
    assert "reaches 2 of 2 outputs: class_head, aux_head" in p.stdout
    assert "inference-only" in p.stdout


def test_exit_0_clean_and_fail_on(seed_files):
    p = run_cli("scan", seed_files / "seed.keras")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "ckptscan: 1 file scanned: no findings"
    assert run_cli("scan", seed_files / "seed_broken.keras", "--fail-on", "never").returncode == 0
    assert run_cli("scan", seed_files / "seed_broken.keras", "--ignore", "BN001,BN004").returncode == 0
    assert run_cli("scan", seed_files / "seed_broken.keras", "--ignore", "BN001,BN004",
                   "--fail-on", "warning").returncode == 1
    assert run_cli("scan", seed_files / "seed_broken.keras", "--select", "BN002", "--fail-on", "warning").returncode == 1


def test_exit_2_unreadable_file_others_still_scanned(seed_files, tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    p = run_cli("scan", seed_files / "seed_broken.keras", junk, tmp_path / "missing.h5", "--format", "json")
    assert p.returncode == 2
    doc = _json(p)
    status = {Path(f["path"]).name: (f["status"], f["reason"]) for f in doc["files"]}
    assert status["seed_broken.keras"][0] == "scanned"
    assert status["missing.h5"] == ("error", "no such file or directory")
    assert status["junk.keras"][0] == "error"
    assert f"ckptscan: error: {tmp_path / 'missing.h5'}: no such file or directory" in p.stderr.splitlines()
    assert doc["summary"]["exit_code"] == 2


def test_exit_3_nothing_scannable(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    p = run_cli("scan", tmp_path)
    assert p.returncode == 3
    assert "nothing scannable found" in p.stderr
    assert run_cli("scan", str(tmp_path / "*.keras")).returncode == 3


@pytest.mark.parametrize("args,msg", [
    (["--fail-on", "bogus"], ""),
    (["--select", "XYZ"], "ckptscan: error: unknown rule code 'XYZ'"),
    (["--format", "yaml"], ""),
])
def test_exit_4_usage(seed_files, args, msg):
    p = run_cli("scan", seed_files / "seed.keras", *args)
    assert p.returncode == 4
    assert msg in p.stderr


def test_output_file_and_quiet_stdout(seed_files, tmp_path):
    out = tmp_path / "r.json"
    p = run_cli("scan", seed_files / "seed_broken.keras", "--format", "json", "--output", out)
    assert p.returncode == 1 and p.stdout == ""
    jsonschema.validate(json.loads(out.read_text()), SCHEMA)


def test_directory_recursion_sharded_and_settings(tmp_path, seed_files):
    d = tmp_path / "runs" / "a"
    d.mkdir(parents=True)
    shutil.copy(seed_files / "seed_broken.keras", d / "model.bin")  # recognised by content, not name
    (tmp_path / "runs" / "README.md").write_text("notes")
    ep4 = fixture_path("diverge", "epoch_04.keras")
    shutil.copy(ep4, tmp_path / "runs" / "epoch_04.keras")
    p = run_cli("scan", tmp_path / "runs", "--format", "json", "--fail-on", "warning", cwd=tmp_path)
    doc = _json(p)
    status = {Path(f["path"]).name: f["status"] for f in doc["files"]}
    assert status == {"model.bin": "scanned", "epoch_04.keras": "scanned", "README.md": "skipped"}
    assert p.returncode == 1
    # settings: ignore BN/post_bn by layer glob and BN003 by file glob; the rest stays
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.ckptscan]\nfail-on = "warning"\n\n'
        '[tool.ckptscan.per-file-ignores]\n"runs/epoch_*.keras" = ["BN003"]\n\n'
        '[tool.ckptscan.per-layer-ignores]\n"*/post_bn" = ["BN001", "BN004"]\n'
        '"*/conv5_block3_2_bn" = ["BN"]\n')
    p = run_cli("scan", "runs", "--format", "json", cwd=tmp_path)
    doc = _json(p)
    assert [f for fr in doc["files"] for f in fr["findings"]] == []
    assert doc["summary"]["fail_on"] == "warning" and p.returncode == 0
    (tmp_path / "pyproject.toml").write_text('[tool.ckptscan]\nfail-on = "sometimes"\n')
    p = run_cli("scan", "runs", cwd=tmp_path)
    assert p.returncode == 4 and "fail-on must be one of" in p.stderr


def test_sharded_index_scans_once(tmp_path):
    src = FIXTURES / "k3"
    shards = sorted(src.glob("seed_broken_sharded*"))
    assert [s.name for s in shards] == ["seed_broken_sharded.weights.json"] + [
        f"seed_broken_sharded_{i:05d}.weights.h5" for i in range(3)]
    for s in shards:
        shutil.copy(s, tmp_path / s.name)
    p = run_cli("scan", tmp_path, "--format", "json", "--config", src / "seed.config.json")
    doc = _json(p)
    st = {Path(f["path"]).name: (f["status"], f["reason"]) for f in doc["files"]}
    assert st["seed_broken_sharded.weights.json"][0] == "scanned"
    assert all(r.startswith("shard of") for n, (s, r) in st.items() if n.endswith(".weights.h5"))
    (fr,) = [f for f in doc["files"] if f["status"] == "scanned"]
    assert fr["impact"]["reached_heads"] == ["class_head", "aux_head"]


def test_rules_and_explain():
    p = run_cli("rules", "--json")
    assert p.returncode == 0
    ids = [r["id"] for r in json.loads(p.stdout)]
    assert ids[:3] == ["BN001", "BN002", "BN003"] and "OPT001" in ids
    p = run_cli("rules")
    assert "bn-variance-outlier" in p.stdout
    p = run_cli("explain", "BN002")
    assert p.returncode == 0
    assert p.stdout.startswith("BN002 (bn-variance-outlier): warning, weight")
    assert "## Why is this bad?" in p.stdout
    p = run_cli("explain", "NOPE1")
    assert p.returncode == 4 and "unknown rule 'NOPE1'" in p.stderr
