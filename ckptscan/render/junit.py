"""JUnit XML: a ``testsuite`` per file, a ``testcase`` per layer.

A layer with a finding at or above ``--fail-on`` is a ``failure`` (one per layer, the
messages in its text); lower findings go to ``system-out``. An unreadable file is a
testcase with an ``error``; a skipped one a testcase marked ``skipped``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ..report import FileResult, Finding, Report, Severity

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: str) -> str:
    """Text safe for XML 1.0 (control characters from hostile names replaced)."""
    return _BAD_XML.sub("\ufffd", str(text))


def _fails(f: Finding, fail_on: str) -> bool:
    return fail_on != "never" and f.severity.rank >= Severity(fail_on).rank


def _suite(fr: FileResult, fail_on: str) -> ET.Element:
    suite = ET.Element("testsuite", name=_x(fr.path))
    cases = failures = errors = skipped = 0
    if fr.status != "scanned":
        case = ET.SubElement(suite, "testcase", classname=_x(fr.path), name="(file)")
        if fr.status == "error":
            ET.SubElement(case, "error", message=_x(fr.reason), type="unreadable").text = _x(f"{fr.path}: {fr.reason}")
            errors += 1
        else:
            ET.SubElement(case, "skipped", message=_x(fr.reason))
            skipped += 1
        cases = 1
    else:
        by_layer: dict[str, list[Finding]] = {}
        for f in fr.findings:
            by_layer.setdefault(f.layer_path or "(model)", []).append(f)
        names = list(fr.layers) + [p for p in by_layer if p not in fr.layers]
        for layer in names:
            fs = by_layer.get(layer, [])
            case = ET.SubElement(suite, "testcase", classname=_x(fr.path), name=_x(layer))
            cases += 1
            bad = [f for f in fs if _fails(f, fail_on)]
            if bad:
                failures += 1
                worst = max(bad, key=lambda f: f.severity.rank)
                el = ET.SubElement(case, "failure", message=_x(worst.message), type=worst.rule_id)
                el.text = _x("\n".join(f"{f.severity.value} {f.rule_id} {f.message}\n  fix: {f.fix_hint}" for f in bad))
            rest = [f for f in fs if f not in bad]
            if rest:
                ET.SubElement(case, "system-out").text = _x("\n".join(
                    f"{f.severity.value} {f.rule_id} {f.message}" for f in rest))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{fr.seconds:.3f}")
    return suite


def render(report: Report, fail_on: str = "error") -> str:
    """The JUnit XML document (ends with a newline)."""
    root = ET.Element("testsuites", name="ckptscan")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for fr in report.files:
        suite = _suite(fr, fail_on)
        root.append(suite)
        for k in totals:
            totals[k] += int(suite.get(k, "0"))
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
