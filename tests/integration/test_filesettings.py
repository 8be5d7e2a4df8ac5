"""Settings per scanned file (issue 13, item 8): the nearest settings upward from each file."""

from __future__ import annotations

import json
import shutil

from ckptscan.filesettings import settings_for
from conftest import FIXTURES, run_cli

BROKEN = FIXTURES / "k3" / "seed_broken.keras"


def _tree(tmp_path):
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    shutil.copy(BROKEN, root / "a" / "one.keras")
    shutil.copy(BROKEN, root / "b" / "deep" / "two.keras")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.ckptscan]\nignore = ["BN002"]\n')
    (root / "a" / ".ckptscan.toml").write_text('ignore = ["BN001", "BN004"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, elsewhere


def _rules(stdout: str) -> dict[str, set[str]]:
    doc = json.loads(stdout)
    return {f["path"].rsplit("/", 1)[-1]: {x["rule_id"] for x in f["findings"]} for f in doc["files"]
            if f["status"] == "scanned"}


def test_each_file_gets_its_nearest_settings(tmp_path):
    root, elsewhere = _tree(tmp_path)
    for jobs in ("1", "2"):
        out = run_cli("scan", "--format", "json", "--jobs", jobs, root, cwd=elsewhere)
        got = _rules(out.stdout)
        assert got["one.keras"] == {"BN002", "BN003"}, got  # a/.ckptscan.toml: BN001/BN004 ignored
        assert got["two.keras"] == {"BN001", "BN003", "BN004"}, got  # models/pyproject.toml: BN002 ignored
    assert settings_for(root / "b" / "deep" / "two.keras").source == str(root / "pyproject.toml")
    assert settings_for(root / "a" / "one.keras").source == str(root / "a" / ".ckptscan.toml")


def test_command_line_wins_and_settings_option_overrides(tmp_path):
    root, elsewhere = _tree(tmp_path)
    out = run_cli("scan", "--format", "json", "--select", "BN001", root, cwd=elsewhere)
    assert _rules(out.stdout) == {"one.keras": set(), "two.keras": {"BN001"}}  # a/ still ignores BN001
    fixed = tmp_path / "one.toml"
    fixed.write_text('select = ["BN004"]\n')
    out = run_cli("scan", "--format", "json", "--settings", fixed, root, cwd=elsewhere)
    assert _rules(out.stdout) == {"one.keras": {"BN004"}, "two.keras": {"BN004"}}


def test_broken_settings_near_a_file_fail_that_file(tmp_path):
    root, elsewhere = _tree(tmp_path)
    (root / "b" / "deep" / ".ckptscan.toml").write_text('select = ["NOPE999"]\n')
    out = run_cli("scan", root, cwd=elsewhere)
    assert out.returncode == 2
    assert "two.keras" in out.stderr and "NOPE999" in out.stderr
    assert "one.keras" in out.stdout


def test_fail_on_from_the_settings_nearest_to_the_first_path(tmp_path):
    root, elsewhere = _tree(tmp_path)
    (root / "a" / ".ckptscan.toml").write_text('ignore = ["BN001", "BN004"]\nfail-on = "warning"\n')
    assert run_cli("scan", root / "a" / "one.keras", cwd=elsewhere).returncode == 1  # warnings fail here
    assert run_cli("scan", "--fail-on", "error", root / "a" / "one.keras", cwd=elsewhere).returncode == 0
