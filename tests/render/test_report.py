"""Report model and renderers on hand-made results: exit codes, verdict, formats."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from ckptscan.render import OutputFormat, render
from ckptscan.report import FileResult, Finding, Report, Severity
from ckptscan.settings import SettingsError, parse_toml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "ckptscan" / "schema" / "report.schema.json").read_text())
SARIF_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0.json").read_text())


def _f(sev, rule="BN002", layer="net/bn\x07", var="moving_variance"):
    return Finding(rule, "bn-variance-outlier", sev, f"{layer}/{var}: bad", "m.keras", layer, var, (1, 2), 2,
                   details={"ratio": float("inf")})


REPORT = Report(files=(
    FileResult("m.keras", "scanned", format="keras-zip", findings=(_f(Severity.WARNING), _f(Severity.INFO, "CFG001")),
               layers=("net/conv", "net/bn\x07")),
    FileResult("x.txt", "skipped", reason="not a Keras weight archive"),
))


def test_exit_codes_and_precedence():
    assert REPORT.exit_code("error") == 0
    assert REPORT.exit_code("warning") == 1
    assert REPORT.exit_code("info") == 1
    assert REPORT.exit_code("never") == 0
    err = Report(files=REPORT.files + (FileResult("y.h5", "error", reason="truncated"),))
    assert err.exit_code("warning") == 2  # an unreadable file wins over findings
    assert Report(files=(FileResult("x.txt", "skipped", reason="no"),)).exit_code() == 3
    assert Report().exit_code() == 3


def test_verdict_line():
    assert REPORT.verdict() == "ckptscan: 1 file scanned, 1 skipped: 1 warning, 1 info"
    err = Report(files=(FileResult("y.h5", "error", reason="truncated"),))
    assert err.verdict() == "ckptscan: 0 files scanned, 1 file unreadable: no findings"


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_renders(fmt):
    text = render(REPORT, fmt, fail_on="warning")
    assert text.endswith("\n")


def test_json_schema_and_nonfinite_details():
    doc = json.loads(render(REPORT, "json"))
    jsonschema.validate(doc, SCHEMA)
    assert doc["files"][0]["findings"][0]["details"] == {"ratio": None}
    assert doc["files"][1] == {**doc["files"][1], "status": "skipped", "reason": "not a Keras weight archive"}


def test_sarif_valid_with_levels():
    doc = json.loads(render(REPORT, "sarif"))
    jsonschema.validate(doc, SARIF_SCHEMA)
    assert [r["level"] for r in doc["runs"][0]["results"]] == ["warning", "note"]


def test_junit_fail_on_and_control_chars():
    root = ET.fromstring(render(REPORT, "junit", fail_on="warning"))
    cases = [c.get("name") for c in root.iter("testcase")]
    assert cases == ["net/conv", "net/bn\ufffd", "(file)"]
    assert root.get("failures") == "1" and root.get("skipped") == "1"
    root = ET.fromstring(render(REPORT, "junit", fail_on="error"))
    assert root.get("failures") == "0"


def test_table_groups_by_layer_worst_first():
    text = render(REPORT, "table")
    lines = text.splitlines()
    assert lines[0] == "m.keras  (keras-zip): 1 warning, 1 info"
    assert lines[1] == "  net/bn\x07"
    assert lines[2].startswith("    warning  BN002")
    assert "skipped 1 file:" in text


TOML = '''
[project]
name = "x"  # comment
[tool.ckptscan]
select = ["BN",
  "NUM001"]
fail-on = "warning"
include-optimizer = false
[tool.ckptscan.thresholds]
bn-outlier-decades = 4.5
bn-min-channels = 6
[tool.ckptscan.per-file-ignores]
"runs/*.keras" = ["BN003"]
'''


def test_toml_is_read_by_tomllib():
    assert parse_toml(TOML) == {
        "project": {"name": "x"},
        "tool": {"ckptscan": {
            "select": ["BN", "NUM001"], "fail-on": "warning", "include-optimizer": False,
            "thresholds": {"bn-outlier-decades": 4.5, "bn-min-channels": 6},
            "per-file-ignores": {"runs/*.keras": ["BN003"]},
        }},
    }
    with pytest.raises(SettingsError, match="invalid TOML"):
        parse_toml("a = [", "x.toml")
