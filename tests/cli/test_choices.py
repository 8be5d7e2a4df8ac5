"""Every member of the command-line choice Enums maps to something (pip-audit's
``test_to_format_is_exhaustive``): a new member without a case fails here."""

from __future__ import annotations

import pytest

from ckptscan.patch.strategies import Strategy, Verify
from ckptscan.render import OutputFormat
from ckptscan.report import FileResult, Finding, Report, Severity

REPORT = Report(files=(FileResult("m.keras", "scanned", format="keras-zip", findings=(
    Finding("NUM001", "non-finite-weight", Severity.ERROR, "d/kernel: 1 NaN", "m.keras", "d", "kernel",
            (0,), 1),), layers=("d",)),))


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_output_format_renders(fmt):
    text = fmt.renderer()(REPORT, fail_on="error")
    assert isinstance(text, str) and "m.keras" in text
    assert fmt.streams == (fmt is OutputFormat.JSONL)
    # only HTML refuses a terminal and asks the scan for the BN profile its charts draw
    assert fmt.needs_file == (fmt is OutputFormat.HTML)
    assert fmt.profile == ("charts" if fmt is OutputFormat.HTML else "")


def test_output_formats_are_the_scan_choices():
    assert [f.value for f in OutputFormat] == ["table", "json", "sarif", "junit", "jsonl", "html"]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_says_what_it_needs(strategy):
    assert strategy.needs() == {Strategy.FROM: "--from REF", Strategy.VALUE: "--value V"}.get(strategy)
    assert Strategy.of(strategy.value) is strategy


def test_strategies_are_the_fix_choices():
    # ZERO (optimizer slots -> 0) is a member like the others: chosen by name, needs nothing
    assert [s.value for s in Strategy] == ["auto", "reset", "median", "clamp", "from", "value", "zero"]
    assert Strategy.of("zero") is Strategy.ZERO and Strategy.ZERO.needs() is None


@pytest.mark.parametrize("verify", list(Verify))
def test_every_verify_mode_says_what_it_rehashes(verify):
    assert verify.rehashes_all is (verify is Verify.FULL)
    assert Verify.of(verify.value) is verify


def test_unknown_choices_name_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown --strategy 'bogus' \(choose from auto, reset, median, clamp, from, value, zero\)"):
        Strategy.of("bogus")
    with pytest.raises(ValueError, match=r"unknown --verify 'all' \(choose from full, targets\)"):
        Verify.of("all")
