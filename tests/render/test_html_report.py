"""``--format html``: the self-contained reports, opened in a real Chromium with the network blocked.

Chromium is Debian's (``.ci/run`` installs it), driven by Playwright for Python with
``executable_path`` (no browser download). Without it the browser tests skip locally
and fail under ``CI=true``. Each page is opened from a ``file://`` URL; every other
request is aborted and recorded, and the test fails on any of them or on any console
error.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FIXTURES, run_cli

K3 = FIXTURES / "k3"
DIVERGE = FIXTURES / "diverge"
FAULTS = json.loads((FIXTURES / "faults.json").read_text())
CHROMIUM = os.environ.get("CKPTSCAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{what} not installed")


@pytest.fixture(scope="module")
def browser():
    """One headless Debian Chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "playwright (pip install -e '.[dev]')")
    _need(os.path.exists(CHROMIUM) or shutil.which("chromium") is not None, "chromium (apt-get install chromium)")
    exe = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Opened:
    """A page opened offline, with what it tried to fetch and what it logged."""

    def __init__(self, browser, path: Path, scheme: str = "light"):
        self.ctx = browser.new_context(color_scheme=scheme, viewport={"width": 1100, "height": 900})
        self.page = self.ctx.new_page()
        self.url = path.resolve().as_uri()
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            u = r.request.url
            if u == self.url or u.startswith("data:"):
                r.continue_()
            else:
                self.blocked.append(u)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(self.url, wait_until="load")

    def check_clean(self) -> None:
        """No request left the page and nothing was logged as an error."""
        assert self.blocked == []
        assert self.errors == []

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def opened(browser):
    pages: list[Opened] = []

    def open_(path: Path, scheme: str = "light") -> Opened:
        o = Opened(browser, path, scheme)
        pages.append(o)
        return o

    yield open_
    for o in pages:
        o.check_clean()
        o.close()


def _scan_html(tmp_path: Path, *paths: Path, name: str = "report.html") -> Path:
    out = tmp_path / name
    p = run_cli("scan", "--format", "html", "-o", out, *paths)
    assert p.returncode in (0, 1), p.stderr
    assert out.exists()
    return out


def _faults(key: str, kind: str = "weight") -> set[tuple[str, str, tuple[int, ...]]]:
    return {(f["layer_path"], f["variable"], tuple(f["indices"])) for f in FAULTS["files"][key]["faults"]
            if f["kind"] == kind}


# --- the scan report ---------------------------------------------------------------------


def test_scan_report_findings_table_is_the_ground_truth(opened, tmp_path):
    page = opened(_scan_html(tmp_path, K3 / "faults.keras")).page
    rows = page.eval_on_selector_all(
        "table.findings tbody tr",
        "rs => rs.map(r => [r.dataset.layer, r.dataset.variable, r.dataset.indices, r.dataset.severity, r.dataset.rule])")
    got = {(layer, var, tuple(int(i) for i in idx.split())) for layer, var, idx, _, _ in rows}
    assert got == _faults("k3/faults.keras")
    assert {r[3] for r in rows} == {"error"}
    assert page.inner_text(".verdict").startswith("✕ broken: 4 errors")
    # format, Keras version and the repair command are shown
    meta = page.inner_text("dl.meta")
    assert "keras-zip" in meta and "3.15.1" in meta
    assert page.inner_text("pre.fixcmd") == (f"ckptscan fix --dry-run {K3 / 'faults.keras'}\n"
                                             f"ckptscan fix --backup {K3 / 'faults.keras'}")


def test_scan_report_channel_charts_mark_the_bad_channels(opened, tmp_path):
    page = opened(_scan_html(tmp_path, K3 / "faults.keras", K3 / "seed_broken.keras")).page

    def marked(layer: str, var: str) -> tuple[list[int], dict[int, str]]:
        sel = f'svg.chan[data-layer="{layer}"][data-variable="{var}"]'
        listed = [int(x) for x in page.get_attribute(sel, "data-flagged").split()]
        kinds = page.eval_on_selector_all(
            sel + " g.ch[data-flagged]",
            "gs => gs.map(g => [+g.dataset.channel, (g.querySelector('.mk:not(.mk-flagged)') || {classList: ['']}).classList[1] || ''])")
        return listed, {c: k for c, k in kinds}

    # every fault of faults.keras and seed_broken.keras, as a marked channel of its chart
    for key in ("k3/faults.keras", "k3/seed_broken.keras"):
        for f in FAULTS["files"][key]["faults"]:
            if f["kind"] != "weight" or f["variable"] not in ("moving_mean", "moving_variance"):
                continue
            listed, kinds = marked(f["layer_path"], f["variable"])
            assert listed == f["indices"], (key, f)
            assert sorted(kinds) == f["indices"], (key, f)
            expect = {"nan": "mk-nan", "inf": "mk-posinf", "negative_variance": "mk-negative",
                      "huge_variance": "mk-above_f16"}[f["fault"]]
            assert set(kinds.values()) == {expect}, (key, f, kinds)
    # conv5_block3_2_bn: the two huge channels and no other
    listed, _ = marked("resnet101v2/conv5_block3_2_bn", "moving_variance")
    assert listed == [2, 5]
    # at a glance: one row per BN layer, the flagged ones marked with their bad-channel counts
    rows = page.eval_on_selector_all(
        "#file-1 svg.glance g.row",
        "gs => gs.map(g => [g.dataset.layer, g.dataset.flagged, +g.dataset.nonfinite, +g.dataset.aboveF16])")
    assert len(rows) == 22
    flagged = {r[0]: r for r in rows if r[1] == "1"}
    assert set(flagged) == {"resnet101v2/conv5_block3_2_bn", "resnet101v2/post_bn"}
    assert flagged["resnet101v2/post_bn"][2] == 64 and flagged["resnet101v2/conv5_block3_2_bn"][3] == 2
    # text alternatives on every chart
    assert page.eval_on_selector_all("svg.chart", "ss => ss.every(s => s.querySelector('title') && s.querySelector('desc'))")


def test_scan_report_impact_path(opened, tmp_path):
    page = opened(_scan_html(tmp_path, K3 / "seed_broken.keras")).page
    paths = page.eval_on_selector_all(
        "ol.path", "os => os.map(o => Array.from(o.querySelectorAll('li:not(.arrow)')).map(li => li.textContent))")
    assert {p[-1] for p in paths} == {"output class_head", "output aux_head"}
    for p in paths:
        assert p[0] == "✕ resnet101v2/conv5_block3_2_bn" and "✕ resnet101v2/post_bn" in p


def test_findings_table_sort_and_filter(opened, tmp_path):
    page = opened(_scan_html(tmp_path, K3 / "seed_broken.keras")).page
    rows = "#findings-0 tbody tr"

    def visible() -> list[str]:
        return page.eval_on_selector_all(rows, "rs => rs.filter(r => !r.hidden).map(r => r.dataset.rule)")

    assert visible() == ["BN004", "BN001", "BN002", "BN003"]
    page.select_option("#findings-0-ctl select[name=severity]", "warning")
    assert visible() == ["BN002", "BN003"]
    assert page.inner_text("#findings-0-ctl output") == "2 of 4 shown"
    page.select_option("#findings-0-ctl select[name=severity]", "")
    page.select_option("#findings-0-ctl select[name=rule]", "BN001")
    assert visible() == ["BN001"]
    page.select_option("#findings-0-ctl select[name=rule]", "")
    page.click("#findings-0 th:nth-child(2) button")  # Rule, ascending
    assert visible() == ["BN001", "BN002", "BN003", "BN004"]
    page.click("#findings-0 th:nth-child(2) button")  # descending
    assert visible() == ["BN004", "BN003", "BN002", "BN001"]
    assert page.get_attribute("#findings-0 th:nth-child(2)", "aria-sort") == "descending"
    page.click("#findings-0 th:nth-child(1) button")  # severity: by rank, not by word
    assert visible()[-2:] in (["BN004", "BN001"], ["BN001", "BN004"])


def test_report_without_javascript_still_lists_everything(browser, tmp_path):
    path = _scan_html(tmp_path, K3 / "seed_broken.keras")
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(path.resolve().as_uri())
    assert page.locator("#findings-0 tbody tr").count() == 4
    assert not page.is_visible("#findings-0-ctl")  # the controls need JavaScript: hidden without it
    ctx.close()


def test_dark_mode(opened, tmp_path):
    path = _scan_html(tmp_path, K3 / "seed_broken.keras")
    bg = {}
    for scheme in ("light", "dark"):
        page = opened(path, scheme).page
        bg[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}


# --- timeline and diff -------------------------------------------------------------------


def test_timeline_marks_the_first_bad_epoch(opened, tmp_path):
    manifest = json.loads((DIVERGE / "manifest.json").read_text())
    first_bad = next(e["file"] for e in manifest["epochs"] if e["epoch"] == manifest["first_bad_epoch"])
    last_good = next(e["file"] for e in manifest["epochs"] if e["epoch"] == manifest["last_good_epoch"])
    out = tmp_path / "run.html"
    epochs = sorted(DIVERGE.glob("epoch_*.keras"))
    p = run_cli("timeline", "--format", "html", "-o", out, *epochs)
    assert p.returncode == 1, p.stderr
    page = opened(out).page
    first_bad, last_good = first_bad.removesuffix(".keras"), last_good.removesuffix(".keras")  # column labels
    assert page.get_attribute("svg.grid", "data-first-bad") == first_bad
    assert page.get_attribute("svg.grid", "data-last-good") == last_good
    marks = page.eval_on_selector_all("svg.grid g.col[data-mark]", "gs => gs.map(g => [g.dataset.checkpoint, g.dataset.mark])")
    assert marks == [[last_good, "last good"], [first_bad, "first bad"]]
    assert page.get_attribute("tr.firstbad", "data-checkpoint").endswith(first_bad + ".keras")
    assert page.inner_text("pre.fixcmd") == (f"ckptscan fix --from {DIVERGE / last_good}.keras "
                                             f"{DIVERGE / first_bad}.keras")
    # every BN layer is an error from the first bad epoch on, healthy-or-warning before
    cells = page.eval_on_selector_all("svg.grid text.cell[data-layer]",
                                      "ts => ts.map(t => [t.dataset.layer, t.dataset.checkpoint, t.dataset.status])")
    for layer, ckpt, status in cells:
        assert (status == "error") == (ckpt >= first_bad), (layer, ckpt, status)
    # float16 headroom: the stem BN is the tightest layer and finite before the first bad epoch, 0 from it on
    stem = page.eval_on_selector_all('svg.headroom g.hr[data-layer="stem_bn"] [data-headroom]',
                                     "gs => gs.map(g => [g.dataset.checkpoint, +g.dataset.headroom])")
    assert [c for c, _ in stem] == [e.stem for e in epochs]
    assert all(1 < h < 10 for c, h in stem if c < first_bad) and all(h == 0 for c, h in stem if c >= first_bad)


def test_timeline_json_and_table_carry_the_headroom():
    epochs = sorted(DIVERGE.glob("epoch_*.keras"))
    doc = json.loads(run_cli("timeline", "--json", *epochs).stdout)
    hr = [c["f16_headroom"] for c in doc["checkpoints"]]
    assert all(set(h) == {"stem_bn", "body/bn2", "body/bn3"} for h in hr)
    assert [h["stem_bn"] > 1 for h in hr] == [True] * 4 + [False] * 2
    assert all(min(h.values()) == h["stem_bn"] for h in hr[:4])
    table = run_cli("timeline", *epochs).stdout
    assert f"[f16 headroom {hr[0]['stem_bn']:.3g}x stem_bn]" in table
    # a float32 model has no headroom figure
    doc = json.loads(run_cli("timeline", "--json", K3 / "seed.keras").stdout)
    assert doc["checkpoints"][0]["f16_headroom"] is None


def test_diff_report(opened, tmp_path):
    out = tmp_path / "diff.html"
    p = run_cli("diff", "--format", "html", "-o", out, DIVERGE / "epoch_04.keras", DIVERGE / "epoch_05.keras")
    assert p.returncode == 1, p.stderr
    page = opened(out).page
    layers = dict(page.eval_on_selector_all("#diff-layers tbody tr",
                                            "rs => rs.map(r => [r.dataset.layer, +r.dataset.newNonfinite])"))
    assert layers == {"stem_conv": 0, "stem_bn": 20, "body/conv2": 0, "body/bn2": 32, "body/conv3": 0,
                      "body/bn3": 64, "quadrant": 0}
    bars = dict(page.eval_on_selector_all("svg.diffbars g.row",
                                          "gs => gs.map(g => [g.dataset.path, +g.dataset.newNonfinite])"))
    assert bars["stem_bn/moving_variance"] == 10 and bars["body/bn3/moving_mean"] == 32
    page.select_option("#diff-vars-ctl select[name=status]", "changed")
    assert page.inner_text("#diff-vars-ctl output") == "17 of 17 shown"


# --- CLI and bounds (no browser) -----------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("scan", "--format", "html", str(K3 / "seed.keras")),
    ("timeline", "--format", "html", str(K3 / "seed.keras")),
    ("diff", "--format", "html", str(K3 / "seed.keras"), str(K3 / "seed.keras")),
])
def test_html_needs_an_output_file(args, tmp_path):
    p = run_cli(*args, cwd=tmp_path)
    assert p.returncode == 4
    assert p.stdout == ""
    assert p.stderr == "ckptscan: error: --format html writes a file: add -o report.html\n"
    assert list(tmp_path.iterdir()) == []


def test_html_is_self_contained(tmp_path):
    text = _scan_html(tmp_path, K3 / "seed_broken.keras").read_text()
    low = text.lower()
    assert "http://" not in low and "https://" not in low
    assert " src=" not in low and "@import" not in low and "url(" not in low
    assert '<link rel="icon" href="data:,">' in text


def test_profile_is_bounded():
    from ckptscan.bnprofile import MAX_CHART_CHANNELS, MAX_CHART_LAYERS, build_profile
    from ckptscan.report import Finding, Severity
    from ckptscan.rules import Thresholds

    rng = np.random.default_rng(0)
    n = 10_000
    layers, findings = [], []
    for i in range(MAX_CHART_LAYERS + 5):
        v = rng.uniform(0.5, 2, n).astype(np.float32)
        v[9_999] = np.nan
        vals = {"gamma": np.ones(n, np.float32), "beta": np.zeros(n, np.float32),
                "moving_mean": rng.normal(size=n).astype(np.float32), "moving_variance": v}
        layers.append(SimpleNamespace(layer_path=f"bn{i}", values=vals, variables={}))
        findings.append(Finding("BN001", "bn-variance-invalid", Severity.ERROR, "m", "f", f"bn{i}",
                                "moving_variance", (9_999,), 1))
    prof = build_profile(layers, findings, SimpleNamespace(model_config=None), Thresholds(), "charts", {})
    assert len(prof["layers"]) == MAX_CHART_LAYERS + 5
    assert len(prof["charts"]) == MAX_CHART_LAYERS and prof["charts_skipped"] == 5
    ch = prof["charts"]["bn0"]
    assert len(ch["moving_variance"]) <= MAX_CHART_CHANNELS + 1 and 9_999 in ch["index"]
    assert np.isnan(ch["moving_variance"][ch["index"].index(9_999)])
    assert build_profile(layers, findings, None, Thresholds(), "") == {}


def test_html_from_the_cache_and_from_workers_is_the_same(tmp_path):
    """The BN profile survives the --cache round trip (JSON: NaN as "nan") and worker processes."""
    import re

    def charts(name: str, *extra: str) -> list[str]:
        out = tmp_path / name
        p = run_cli("scan", "--format", "html", "-o", out, *extra, K3 / "seed_broken.keras", K3 / "faults.keras")
        assert p.returncode == 1, p.stderr
        text = out.read_text()
        return re.findall(r'<svg class="chart (?:chan|glance)"[^>]*>', text) + re.findall(r'data-channel="\d+" data-value="[^"]*"', text)

    plain = charts("plain.html")
    assert len(plain) > 10
    cache = tmp_path / "cache"
    assert charts("first.html", "--cache", cache) == plain
    assert charts("cached.html", "--cache", cache) == plain  # read back from the cache
    assert charts("jobs.html", "--jobs", "2") == plain
