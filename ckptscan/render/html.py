"""Self-contained HTML reports: ``scan``, ``timeline`` and ``diff`` (``--format html -o FILE``).

One file, readable offline: the CSS, the few lines of JavaScript (table sorting and
filtering) and every chart are inline; nothing is fetched when it opens (no fonts,
no CDN, not even a favicon: ``<link rel="icon" href="data:,">``). Without JavaScript
every table is still there, unsorted and unfiltered.

Plotting approach: plain SVG written as text by :mod:`ckptscan.render.svg`. The
charts are few and simple (dots per channel, bars per layer, a glyph grid, one line
chart), so a plotting library would add far more than it gives: Plotly's inlined
JavaScript alone is ~3.5 MB per report, Vega-Lite with vega-embed ~1 MB, and both
draw after a script runs (slower to open, blank without JavaScript); matplotlib
would be a 30 MB optional dependency, slow to import (hundreds of ms, more than the
whole ResNet101V2 scan) and emits verbose SVG without our data attributes. Plain SVG
costs nothing at run time (no new dependency, so no ``ckptscan[report]`` extra is
needed), renders before any script, takes the page's CSS (light and dark mode from
``prefers-color-scheme``), and lets each mark carry ``data-*`` attributes (the layer,
the channel, its value) that tests and users read back from the DOM.

Meaning is never carried by colour alone: verdicts and severities have a glyph and a
word (``✕ error``, ``! warning``), every kind of mark has its own shape with a legend
in words, and every chart has a ``<title>`` and ``<desc>``.
"""

from __future__ import annotations

import math
import shlex
from typing import Sequence

from .._version import __version__
from ..report import FileResult, Report, Severity
from . import svg
from .svg import esc, fmt, num

SEV_GLYPH = {"error": "✕", "warning": "!", "info": "i"}

CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--stripe:#f6f8fa;
--err:#b42318;--warn:#9a5b00;--ok:#1a7f37;--info:#0b62d6;--band:rgba(26,127,55,.13);--bar:#6e7781;
--accent:#8250df;--code:#f6f8fa}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#30363d;
--stripe:#151b23;--err:#ff7b72;--warn:#e3b341;--ok:#56d364;--info:#79c0ff;--band:rgba(86,211,100,.14);
--bar:#8b949e;--accent:#d2a8ff;--code:#161b22}}
*{box-sizing:border-box}[hidden]{display:none!important}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
h3{font-size:15px;margin:22px 0 6px}h4{font-size:14px;margin:16px 0 4px;word-break:break-all}
.sub,.muted{color:var(--muted)}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--code);border:1px solid var(--line);border-radius:6px;padding:8px 10px;overflow-x:auto;margin:6px 0}
.verdict{font-size:16px;font-weight:600;margin:6px 0}
.v-error{color:var(--err)}.v-warning{color:var(--warn)}.v-ok{color:var(--ok)}.v-info{color:var(--info)}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
tbody tr:nth-child(even){background:var(--stripe)}
table.findings{table-layout:fixed;min-width:900px}table.findings td{overflow-wrap:anywhere}table.findings th:nth-child(1){width:80px}table.findings th:nth-child(2){width:112px}table.findings th:nth-child(3){width:16%}table.findings th:nth-child(4){width:130px}table.findings th:nth-child(5){width:76px}table.findings th:nth-child(6){width:28%}table.findings code{font-size:12px}table.findings td:nth-child(7){font-size:12px;color:var(--muted)}
table.findings td:nth-child(2) span{display:block;font-size:11.5px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus-visible{outline:2px solid var(--info)}
th[aria-sort=ascending] button::after{content:" ▲"}th[aria-sort=descending] button::after{content:" ▼"}
.sev{white-space:nowrap;font-weight:600}.sev-error{color:var(--err)}.sev-warning{color:var(--warn)}.sev-info{color:var(--info)}
.controls{display:flex;gap:14px;align-items:center;margin:6px 0;flex-wrap:wrap}
.controls select{font:inherit;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:4px;padding:2px 4px}
.wide{overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto;margin:4px 0}
svg text{fill:var(--fg);font:11px system-ui,sans-serif}
svg .ax{fill:var(--muted);font-size:10px}svg .lim{fill:var(--err)}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis{stroke:var(--muted)}
svg .limit{stroke:var(--err);stroke-dasharray:4 3;stroke-width:1.2}
svg .stripe{fill:var(--stripe)}svg .band{fill:var(--band)}
svg .bar{fill:var(--bar)}svg .bar.over{fill:var(--err)}
svg .row.bad .lbl{font-weight:700;fill:var(--err)}svg a .lbl{text-decoration:underline}
svg .flag{fill:var(--err);font-size:11px}
svg .cnt{font-size:10px}
svg .dots{stroke:var(--bar);stroke-width:4.5;stroke-linecap:round;fill:none}
svg .dot{stroke:var(--fg);stroke-width:5;stroke-linecap:round}
svg .mk{stroke-width:1.6}
svg .mk-nan{stroke:var(--err);fill:none;stroke-width:2.2}
svg .mk-posinf,svg .mk-neginf{fill:var(--err);stroke:none}
svg .mk-negative{fill:var(--accent);stroke:none}
svg .mk-above_f16{fill:var(--warn);stroke:none}
svg .mk-flagged{fill:none;stroke:var(--err);stroke-width:1.6}
svg.lg{vertical-align:-2px;margin-right:5px}
svg .cell{font-size:13px;font-weight:700}
svg .st-ok{fill:var(--ok)}svg .st-warning{fill:var(--warn)}svg .st-error{fill:var(--err)}svg .st-unreadable{fill:var(--muted)}
svg .colbox{fill:none;stroke-width:1.5;rx:4}svg .firstbad .colbox{stroke:var(--err)}svg .lastgood .colbox{stroke:var(--ok);stroke-dasharray:4 2}
svg .tag{font-weight:700;font-size:10.5px}
svg .fbline{stroke:var(--err);stroke-dasharray:2 3}
svg .hr .line{fill:none;stroke-width:1.6}
svg .pt{stroke:none}
svg .s0{--c:#0969da}svg .s1{--c:#cf222e}svg .s2{--c:#1a7f37}svg .s3{--c:#9a6700}svg .s4{--c:#8250df}svg .s5{--c:#bf3989}
@media (prefers-color-scheme:dark){svg .s0{--c:#58a6ff}svg .s1{--c:#ff7b72}svg .s2{--c:#56d364}svg .s3{--c:#e3b341}svg .s4{--c:#d2a8ff}svg .s5{--c:#ff9bce}}
svg .hr .line{stroke:var(--c)}svg .hr .pt{fill:var(--c)}
ul.legend{list-style:none;padding:0;margin:2px 0 8px;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:var(--muted)}
.charts{display:flex;flex-wrap:wrap;gap:6px 16px}
ol.path{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;align-items:center;gap:4px}
ol.path li{border:1px solid var(--line);border-radius:5px;padding:2px 7px;font:12px ui-monospace,monospace}
ol.path li.arrow{border:none;padding:0 1px;color:var(--muted);font-family:system-ui}
ol.path li.broken{border-color:var(--err);color:var(--err);font-weight:600}
ol.path li.skip{border-style:dashed;color:var(--muted)}ol.path li.head{border-color:var(--info)}
details summary{cursor:pointer;color:var(--muted)}table.findings details summary{color:inherit}
tr.firstbad td{font-weight:600}.tagtext{font-weight:700;color:var(--err)}.tagtext.ok{color:var(--ok)}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""

JS = """
(function(){
function key(c){var s=c.getAttribute('data-sort');return s===null?c.textContent.trim():s}
function cmp(a,b){var x=parseFloat(a),y=parseFloat(b);
 if(!isNaN(x)&&!isNaN(y)&&String(x)===a.trim()&&String(y)===b.trim())return x-y;
 if(!isNaN(x)&&!isNaN(y)&&/^-?[0-9.e+-]+$/i.test(a)&&/^-?[0-9.e+-]+$/i.test(b))return x-y;
 return a.localeCompare(b)}
document.querySelectorAll('table.sortable').forEach(function(t){
 var body=t.tBodies[0];
 t.querySelectorAll('th button').forEach(function(btn){btn.addEventListener('click',function(){
  var th=btn.parentNode,col=th.cellIndex,dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
  t.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort')});
  th.setAttribute('aria-sort',dir>0?'ascending':'descending');
  Array.prototype.slice.call(body.rows).sort(function(r,s){return dir*cmp(key(r.cells[col]),key(s.cells[col]))})
   .forEach(function(r){body.appendChild(r)})})});
 var box=document.getElementById(t.getAttribute('data-controls'));if(!box)return;
 box.hidden=false;var sels=box.querySelectorAll('select'),out=box.querySelector('output');
 function apply(){var n=0;Array.prototype.forEach.call(body.rows,function(r){var ok=true;
  sels.forEach(function(s){if(s.value&&r.getAttribute('data-'+s.name)!==s.value)ok=false});r.hidden=!ok;if(ok)n++});
  if(out)out.textContent=n+' of '+body.rows.length+' shown'}
 sels.forEach(function(s){s.addEventListener('change',apply)});apply()});
})();
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<meta name=\"generator\" content=\"ckptscan {esc(__version__)}\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}"
            f"<footer>ckptscan {esc(__version__)} · self-contained report: no network access, "
            "works offline and without JavaScript (sorting and filtering need it).</footer>"
            f"</main><script>{JS}</script></body></html>\n")


def _q(path: str) -> str:
    return shlex.quote(path)


def _channels_text(idx: Sequence[int], count: int, limit: int = 12) -> str:
    """``2, 5`` / ``0–31`` / ``0, 3, 9, … (40)``."""
    idx = sorted(int(i) for i in idx)
    if not idx:
        return ""
    runs: list[str] = []
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        runs.append(str(idx[i]) if j == i else f"{idx[i]}–{idx[j]}" if j > i + 1 else f"{idx[i]}, {idx[j]}")
        i = j + 1
    text = ", ".join(runs[:limit]) + (", …" if len(runs) > limit else "")
    if count > len(idx):
        text += f" ({count} in all)"
    return text


def _verdict(fr: FileResult) -> tuple[str, str]:
    e, w, i = (fr.count(s) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO))
    parts = [f"{n} {word}{'s' if n != 1 and word != 'info' else ''}"
             for n, word in ((e, "error"), (w, "warning"), (i, "info")) if n]
    if e:
        return "v-error", f"✕ broken: {', '.join(parts)}"
    if w:
        return "v-warning", f"! suspicious: {', '.join(parts)}"
    return "v-ok", "✓ healthy" + (f": {', '.join(parts)}" if parts else ": no findings")


# --- scan ------------------------------------------------------------------------------


def _findings_table(fr: FileResult, ident: str) -> str:
    if not fr.findings:
        return "<p class=\"muted\">No findings.</p>"
    rules = sorted({f.rule_id for f in fr.findings})
    sevs = [s.value for s in Severity if fr.count(s)]
    opts_s = "".join(f'<option value="{s}">{SEV_GLYPH[s]} {s}</option>' for s in sevs)
    opts_r = "".join(f'<option value="{esc(r)}">{esc(r)}</option>' for r in rules)
    controls = (f'<div class="controls" id="{ident}-ctl" hidden>'
                f'<label>Severity <select name="severity"><option value="">all</option>{opts_s}</select></label>'
                f'<label>Rule <select name="rule"><option value="">all</option>{opts_r}</select></label>'
                f'<output aria-live="polite"></output></div>')
    head = "".join(f'<th scope="col"{" class=num" if n == "Channels" else ""}><button type="button">{n}</button></th>'
                   for n in ("Severity", "Rule", "Layer", "Variable", "Channels", "Message", "Fix"))
    rows = []
    for f in fr.findings:
        s = f.severity.value
        rows.append(
            f'<tr data-severity="{s}" data-rule="{esc(f.rule_id)}" data-layer="{esc(f.layer_path)}" '
            f'data-variable="{esc(f.variable)}" data-indices="{" ".join(str(i) for i in f.indices)}">'
            f'<td class="sev sev-{s}" data-sort="{f.severity.rank}">{SEV_GLYPH[s]} {s}</td>'
            f'<td><code>{esc(f.rule_id)}</code> <span class="muted">{esc(f.rule_name)}</span></td>'
            f'<td><code>{esc(f.layer_path or "(model)")}</code></td><td><code>{esc(f.variable)}</code></td>'
            f'<td class="num" data-sort="{f.count}">{esc(_channels_text(f.indices, f.count))}</td>'
            f'<td>{esc(f.message)}</td><td>{_hint(f.fix_hint)}</td></tr>')
    return (f'{controls}<div class="wide"><table class="sortable findings" id="{ident}" data-controls="{ident}-ctl">'
            f'<caption class="muted" style="text-align:left">{len(fr.findings)} findings, worst first in model order'
            f'</caption><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _hint(text: str, short: int = 44) -> str:
    """The fix hint, folded to its first words (a ``<details>``: opens without JavaScript)."""
    if len(text) <= short + 10:
        return esc(text)
    cut = text[:short].rsplit(" ", 1)[0]
    return f"<details><summary>{esc(cut)} …</summary>{esc(text)}</details>"


def _impact(fr: FileResult) -> str:
    imp = fr.impact or {}
    if not imp.get("origin"):
        return ""
    out = ["<h3>Impact</h3>"]
    origin = imp["origin"]
    heads = imp.get("reached_heads") or []
    first = next((b for b in imp.get("broken_layers", []) if b["layer_path"] == origin), None)
    what = "NaN origin" if first and first.get("severity") == "error" else "first broken layer"
    txt = f"{what}: <code>{esc(origin)}</code>"
    if imp.get("graph"):
        txt += (f"; reaches {len(heads)} of {len(imp.get('heads') or [])} outputs"
                + (": " + ", ".join(f"<code>{esc(h)}</code>" for h in heads) if heads else ""))
    else:
        txt += f" ({esc(imp.get('note', 'no model graph'))})"
    out.append(f"<p>{txt}.</p>")
    paths = (fr.profile or {}).get("impact_paths") or []
    for p in paths:
        items = []
        for st in p["steps"]:
            if "skipped" in st:
                n = st["skipped"]
                items.append(f'<li class="skip" title="healthy layers in between">… {n} layer{"s" if n != 1 else ""} …</li>')
            else:
                cls = "broken" if st["broken"] else ""
                glyph = "✕ " if st["broken"] else ""
                items.append(f'<li class="{cls}" data-layer="{esc(st["layer"])}">{glyph}{esc(st["layer"])}</li>')
        items.append(f'<li class="head" data-head="{esc(p["head"])}">output {esc(p["head"])}</li>')
        arrow = '<li class="arrow" aria-hidden="true">→</li>'
        out.append(f'<ol class="path" aria-label="path from {esc(origin)} to output {esc(p["head"])}">'
                   f'{arrow.join(items)}</ol>')
    if paths:
        out.append('<p class="muted">Path through the model graph (from the config), condensed: broken layers '
                   'marked ✕, healthy layers in between counted.</p>')
    others = [b["layer_path"] for b in imp.get("broken_layers", [])[1:]]
    if others:
        out.append(f"<p>Also broken downstream: {', '.join(f'<code>{esc(o)}</code>' for o in others[:12])}"
                   f"{' …' if len(others) > 12 else ''}</p>")
    if imp.get("inference_only"):
        out.append("<p>Inference only: every broken value is a BatchNormalization moving statistic. Training "
                   "never reads them, so training metrics look fine while <code>predict()</code> is wrong.</p>")
    return "".join(out)


def _fix(fr: FileResult) -> str:
    todo = [f for f in fr.findings if f.severity != Severity.INFO]
    if not todo:
        return ""
    fixable = [f for f in todo if f.patchable]
    out = ["<h3>Repair</h3>"]
    if fixable:
        p = _q(fr.path)
        out.append(f"<p>{len(fixable)} of {len(todo)} findings can be repaired by <code>ckptscan fix</code> "
                   "(strategy <code>auto</code>). Preview, then repair in place keeping a backup:</p>"
                   f'<pre class="fixcmd"><code>ckptscan fix --dry-run {esc(p)}\nckptscan fix --backup {esc(p)}</code></pre>'
                   "<p class=\"muted\">With an earlier healthy checkpoint of the same run, "
                   f"<code>ckptscan fix --from LAST_GOOD.keras {esc(p)}</code> copies its values instead.</p>")
    else:
        out.append("<p>No finding here has an automatic repair; see each finding's fix hint.</p>")
    return "".join(out)


def _layer_charts(fr: FileResult, n: int) -> tuple[str, set]:
    prof = fr.profile or {}
    charts = prof.get("charts") or {}
    kinds: set = set()
    parts = []
    for j, (layer, ch) in enumerate(charts.items()):
        idx = ch.get("index")
        band = ch.get("band") or {}
        fl = ch.get("flagged") or {}
        svgs = []
        for var, log in (("moving_mean", False), ("moving_variance", True)):
            if ch.get(var) is None:
                continue
            s, k = svg.channels(layer, var, ch[var], idx, fl.get(var, []), band.get(var), log, f"f{n}l{j}{var[7]}")
            kinds |= k
            svgs.append(s)
        listed = "; ".join(f"{esc(v)} channels {esc(_channels_text(i, len(i)))}" for v, i in fl.items() if i and v)
        more = (f' <span class="muted">(every {math.ceil(ch["channels"] / len(idx))}th of {ch["channels"]} channels '
                f'drawn, plus every flagged one)</span>' if idx else "")
        parts.append(f'<section class="layer" id="layer-{esc(svg._slug(layer))}" data-layer="{esc(layer)}">'
                     f'<h4>{esc(layer)}</h4><p>{listed or "flagged as a whole"}{more}</p>'
                     f'<div class="charts">{"".join(svgs)}</div></section>')
    if prof.get("charts_skipped"):
        parts.append(f'<p class="muted">{prof["charts_skipped"]} more flagged layers not charted '
                     f'(see the findings table).</p>')
    return "".join(parts), kinds


def _file_section(fr: FileResult, n: int, th_decades: float) -> str:
    out = [f'<section class="file" id="file-{n}" data-path="{esc(fr.path)}">', f"<h2>{esc(fr.path)}</h2>"]
    if fr.status != "scanned":
        cls = "v-error" if fr.status == "error" else "v-info"
        out.append(f'<p class="verdict {cls}">{"✕ unreadable" if fr.status == "error" else "– skipped"}: '
                   f'{esc(fr.reason)}</p></section>')
        return "".join(out)
    cls, text = _verdict(fr)
    out.append(f'<p class="verdict {cls}" data-worst="{fr.worst.value if fr.worst else "none"}">{esc(text)}</p>')
    meta = [("Format", fr.format), ("Keras version", fr.keras_version or "unknown"),
            ("Variables", f"{fr.variables_scanned} scanned, {fr.variables_skipped} not value-checked"),
            ("Size", f"{fr.bytes_scanned / 1e6:.1f} MB of tensors"),
            ("Findings", ", ".join(f"{fr.count(s)} {s.value}" for s in Severity)),
            ("Scan time", f"{fr.seconds:.2f} s")]
    out.append('<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{esc(v)}</dd>" for k, v in meta) + "</dl>")
    out.append(_fix(fr))
    out.append("<h3>Findings</h3>" + _findings_table(fr, f"findings-{n}"))
    out.append(_impact(fr))
    prof = fr.profile or {}
    layers = prof.get("layers") or []
    if layers:
        nflag = sum(1 for s in layers if s.get("flagged"))
        out.append(f"<h3>All BatchNormalization layers ({len(layers)})</h3>"
                   f"<p class=\"muted\">One row per layer in model order; {nflag} flagged (⚑, linked to "
                   "their charts below).</p>")
        out.append(svg.glance(layers, th_decades, f"glance-{n}"))
        out.append(svg.legend(["nan", "negative", "above_f16"]).replace(
            "NaN (drawn at the top edge)", "non-finite channels (mean or variance)"))
        charts, kinds = _layer_charts(fr, n)
        if charts:
            out.append("<h3>Flagged layers per channel</h3><p class=\"muted\">moving_mean (linear scale) and "
                       "moving_variance (log scale); shaded: the layer's healthy band (variance within BN002's "
                       "limit of the median; mean within BN005's).</p>")
            out.append(svg.legend([k for k in svg.MARKS if k in kinds]))
            out.append(charts)
        if prof.get("float16_compute"):
            out.append(_headroom_table(layers, prof.get("headroom_k")))
    for note in fr.notes:
        out.append(f'<p class="muted">Note: {esc(note)}</p>')
    out.append("</section>")
    return "".join(out)


def _headroom_table(layers: list[dict], k) -> str:
    rows = "".join(f"<tr><td><code>{esc(s['layer_path'])}</code></td>"
                   f"<td class=num data-sort=\"{num(s.get('f16_headroom'))}\">{fmt(s.get('f16_headroom'))}×</td></tr>"
                   for s in layers)
    return (f"<h3>float16 headroom</h3><p class=\"muted\">The model computes in float16. Headroom: 65504 / "
            f"max over channels of |moving_mean| + {num(k):g}·√moving_variance (below 1×: the layer's input overflows; "
            f"0: already non-finite).</p><details><summary>per layer</summary><table class=\"sortable\"><thead><tr>"
            f"<th><button type=button>Layer</button></th><th class=num><button type=button>Headroom</button></th>"
            f"</tr></thead><tbody>{rows}</tbody></table></details>")


def render(report: Report, fail_on: str = "error") -> str:
    """The scan report as one self-contained HTML page."""
    from ..rules import Thresholds

    decades = Thresholds().bn_outlier_decades
    files = list(report.files)
    body = [f"<h1>ckptscan report</h1><p class=\"sub\">{esc(report.verdict().removeprefix('ckptscan: '))}</p>"]
    if len(files) > 1:
        rows = []
        for n, fr in enumerate(files):
            cls, text = _verdict(fr) if fr.status == "scanned" else ("v-error" if fr.status == "error" else "v-info",
                                                                      fr.status + ": " + fr.reason)
            rows.append(f'<tr><td><a href="#file-{n}"><code>{esc(fr.path)}</code></a></td>'
                        f'<td class="{cls}">{esc(text)}</td></tr>')
        body.append("<h2>Summary</h2><table class=\"sortable\"><thead><tr><th><button type=button>File</button></th>"
                    f"<th><button type=button>Verdict</button></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    for n, fr in enumerate(files):
        body.append(_file_section(fr, n, decades))
    return _page("ckptscan report" + (f": {files[0].path}" if len(files) == 1 else ""), "".join(body))


# --- timeline ---------------------------------------------------------------------------


def _layer_of(var_path: str) -> str:
    return var_path.rpartition("/")[0] or var_path


def _short_names(paths: list[str]) -> list[str]:
    """Column labels: file names without their common extension (``epoch_05``)."""
    names = [p.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] for p in paths]
    for ext in (".weights.json", ".weights.h5", ".keras", ".h5"):
        if names and all(n.endswith(ext) and len(n) > len(ext) for n in names):
            names = [n[: -len(ext)] for n in names]
            break
    return names if len(set(names)) == len(names) else [p for p in paths]


def render_timeline(tl) -> str:
    """The ``timeline`` as one self-contained HTML page (a :class:`ckptscan.history.Timeline`)."""
    from ..bnprofile import min_headroom

    entries = list(tl.entries)
    names = _short_names([e.path for e in entries])
    fb, lg = tl.first_bad, tl.last_good
    fbi = entries.index(fb) if fb is not None else None
    lgi = entries.index(lg) if lg is not None else None
    body = ["<h1>ckptscan timeline</h1>"]
    if fb is None:
        ok = all(e.status == "good" for e in entries)
        body.append(f'<p class="verdict v-ok">✓ {"all checkpoints healthy" if ok else "no bad checkpoint (some unreadable)"}</p>')
    else:
        body.append(f'<p class="verdict v-error" data-first-bad="{esc(fb.path)}">✕ first bad: <code>{esc(fb.path)}</code>'
                    + (f'; last good: <code>{esc(lg.path)}</code>' if lg else "; no healthy checkpoint before it")
                    + "</p>")
    if tl.fix_command:
        body.append("<h3>Restore</h3><p>Copy the broken values from the last good checkpoint:</p>"
                    f'<pre class="fixcmd"><code>{esc(tl.fix_command)}</code></pre>')
    # table
    rows = []
    hr_any = False
    for i, e in enumerate(entries):
        d = e.details or {}
        low = min_headroom(d.get("f16_headroom"))
        hr_any = hr_any or low is not None
        st = {"good": ("v-ok", "✓ ok"), "bad": ("v-error", "✕ bad"), "error": ("v-info", "? unreadable")}[e.status]
        tag = (' <span class="tagtext">← first bad</span>' if i == fbi else
               ' <span class="tagtext ok">← last good</span>' if i == lgi and fbi is not None else "")
        rows.append(
            f'<tr class="{"firstbad" if i == fbi else ""}" data-checkpoint="{esc(e.path)}" data-status="{e.status}">'
            f'<td class="num" data-sort="{i}">{i + 1}</td><td><code>{esc(e.path)}</code>{tag}</td>'
            f'<td class="{st[0]}">{st[1]}</td><td class="num">{e.findings}</td>'
            f'<td class="num">{d.get("warnings", 0)}</td><td class="num">{e.nonfinite_values}</td>'
            f'<td class="num" data-sort="{low[0] if low else ""}">'
            f'{(fmt(low[0]) + "× <span class=muted>" + esc(low[1]) + "</span>") if low else "–"}</td>'
            f'<td>{esc(e.reason)}</td></tr>')
    head = "".join(f'<th scope="col"{" class=num" if n in ("#", "Errors", "Warnings", "Non-finite", "f16 headroom") else ""}>'
                   f'<button type="button">{n}</button></th>'
                   for n in ("#", "Checkpoint", "Health", "Errors", "Warnings", "Non-finite", "f16 headroom", "Why"))
    body.append("<h3>Checkpoints</h3><div class=\"wide\"><table class=\"sortable timeline\" id=\"timeline\">"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    # grid: layers with a problem in some checkpoint
    cells: dict = {}
    order: list[str] = []
    bn_order: list[str] = []
    for e in entries:
        for p in (e.details or {}).get("bn_layers", []):
            if p not in bn_order:
                bn_order.append(p)
    for j, e in enumerate(entries):
        d = e.details or {}
        if e.status == "error":
            cells[("*", j)] = "unreadable"
        for layer, sev in d.get("layers", {}).items():
            cells[(layer, j)] = "error" if sev == "error" or cells.get((layer, j)) == "error" else "warning"
            if layer not in order:
                order.append(layer)
        for v in e.bad_variables:
            layer = _layer_of(v)
            cells[(layer, j)] = "error"
            if layer not in order:
                order.append(layer)
    pos = {p: i for i, p in enumerate(bn_order)}
    seen = {p: i for i, p in enumerate(order)}
    order.sort(key=lambda p: (pos.get(p, len(pos)), seen[p]))
    for r in order:
        for j, e in enumerate(entries):
            if e.status == "error":
                cells[(r, j)] = "unreadable"
    known = set(bn_order) | set(order)
    other = max(len(known - set(order)), 0)
    if entries:
        body.append("<h3>Layers × checkpoints</h3><p class=\"muted\">Layers with a warning or error in any "
                    "checkpoint, in model order: ✓ healthy, ! warning, ✕ error (non-finite values or an "
                    "error-level finding), ? unreadable.</p>")
        body.append('<div class="wide">' + svg.grid(order, names, cells, fbi, lgi, "grid", other) + "</div>")
    # headroom
    if hr_any:
        layers = bn_order or sorted({k for e in entries for k in ((e.details or {}).get("f16_headroom") or {})})
        series = {layer: [((e.details or {}).get("f16_headroom") or {}).get(layer) if e.status != "error" else None
                          for e in entries] for layer in layers}
        k = next((e.details.get("headroom_k") for e in entries if (e.details or {}).get("headroom_k")), 8)
        body.append("<h3>float16 headroom per BN layer</h3><p class=\"muted\">The model computes in float16 "
                    f"(mixed_float16). Headroom: 65504 / max over channels of |moving_mean| + {num(k):g}·√moving_variance, "
                    "an estimate of how far the layer's float16 input stays from overflow. A run drifting toward "
                    "overflow shows here before any checkpoint turns bad.</p>")
        body.append('<div class="wide">' + svg.headroom(series, names, fbi, num(k), "headroom") + "</div>")
    return _page("ckptscan timeline", "".join(body))


# --- diff -------------------------------------------------------------------------------


def render_diff(result, show_same: bool = False) -> str:
    """The ``diff`` as one self-contained HTML page (a :class:`ckptscan.history.DiffResult`)."""
    s = result.summary()
    body = ["<h1>ckptscan diff</h1>",
            f'<dl class="meta"><dt>A</dt><dd><code>{esc(result.a)}</code> ({esc(result.format_a)})</dd>'
            f'<dt>B</dt><dd><code>{esc(result.b)}</code> ({esc(result.format_b)})</dd>'
            f'<dt>Tolerance</dt><dd>{result.tolerance:g}</dd></dl>']
    if result.identical:
        body.append('<p class="verdict v-ok">✓ identical</p>')
    else:
        cls = "v-error" if s["new_nonfinite_values"] else "v-warning"
        body.append(f'<p class="verdict {cls}">{"✕" if s["new_nonfinite_values"] else "!"} {s["changed"]} of '
                    f'{s["matched"]} matched variables changed'
                    + (f'; {s["new_nonfinite_values"]} values became NaN/Inf in {s["new_nonfinite_variables"]} variables'
                       if s["new_nonfinite_values"] else "; no new NaN/Inf") + "</p>")
    body.append(f'<p class="muted">{s["same"]} identical, {s["shape_mismatch"]} shape mismatch, {s["only_in_a"]} only '
                f'in A, {s["only_in_b"]} only in B, {s["dtype_mismatch"]} dtype mismatch; '
                f'{s["resolved_nonfinite_values"]} non-finite values of A are finite in B.</p>')
    # per layer
    layers: dict[str, list] = {}
    for v in result.variables:
        layers.setdefault(_layer_of(v.path), []).append(v)
    lrows = []
    for layer, vs in layers.items():
        ch = [v for v in vs if v.status != "same" or v.dtype_mismatch]
        if not ch and not show_same:
            continue
        nf = sum(v.new_nonfinite for v in vs)
        rel = max((v.max_rel_diff for v in vs), default=0.0)
        lrows.append(f'<tr data-layer="{esc(layer)}" data-new-nonfinite="{nf}"><td><code>{esc(layer)}</code></td>'
                     f'<td class="num">{len(ch)} / {len(vs)}</td><td class="num" data-sort="{rel}">{fmt(rel)}</td>'
                     f'<td class="num">{"✕ " if nf else ""}{nf}</td></tr>')
    if lrows:
        body.append("<h3>Per layer</h3><table class=\"sortable\" id=\"diff-layers\"><thead><tr>"
                    + "".join(f'<th scope="col"{" class=num" if i else ""}><button type="button">{n}</button></th>'
                              for i, n in enumerate(("Layer", "Variables changed", "Max relative change",
                                                     "New NaN/Inf")))
                    + f"</tr></thead><tbody>{''.join(lrows)}</tbody></table>")
    changed = [v for v in result.variables if v.status == "changed"]
    if changed:
        rows = [dict(path=v.path, max_rel_diff=v.max_rel_diff, max_abs_diff=v.max_abs_diff,
                     changed_values=v.changed_values, new_nonfinite=v.new_nonfinite) for v in changed[:400]]
        body.append("<h3>Change per variable</h3><p class=\"muted\">Largest relative change of each changed variable "
                    "(|a−b| / max(|a|,|b|) over positions finite on both sides, log scale), grouped by layer in "
                    "model order; ✕ and a count where values became NaN/Inf."
                    + (f" First 400 of {len(changed)} shown; all are in the table below." if len(changed) > 400 else "")
                    + "</p>")
        body.append(svg.diff_bars(rows, "diffbars"))
    vrows = []
    for v in result.variables:
        if v.status == "same" and not v.dtype_mismatch and not show_same:
            continue
        vrows.append(
            f'<tr data-status="{esc(v.status)}" data-path="{esc(v.path)}"><td><code>{esc(v.path)}</code>'
            f'{" <span class=muted>(optimizer)</span>" if v.kind == "optimizer" else ""}</td><td>{esc(v.status)}</td>'
            f'<td class="num">{v.changed_values}</td><td class="num" data-sort="{v.max_abs_diff}">{fmt(v.max_abs_diff)}</td>'
            f'<td class="num" data-sort="{v.max_rel_diff}">{fmt(v.max_rel_diff)}</td>'
            f'<td class="num">{v.new_nonfinite}</td><td class="num">{v.resolved_nonfinite}</td>'
            f'<td>{esc(_shape_note(v))}</td></tr>')
    if vrows:
        statuses = sorted({v.status for v in result.variables})
        opts = "".join(f'<option value="{esc(x)}">{esc(x)}</option>' for x in statuses)
        body.append("<h3>Variables</h3>"
                    f'<div class="controls" id="diff-vars-ctl" hidden><label>Status <select name="status">'
                    f'<option value="">all</option>{opts}</select></label><output aria-live="polite"></output></div>'
                    "<div class=\"wide\"><table class=\"sortable\" id=\"diff-vars\" data-controls=\"diff-vars-ctl\"><thead><tr>"
                    + "".join(f'<th scope="col"{" class=num" if 1 < i < 7 else ""}><button type="button">{n}</button></th>'
                              for i, n in enumerate(("Variable", "Status", "Values changed", "Max abs", "Max rel",
                                                     "New NaN/Inf", "Resolved", "Shape / dtype")))
                    + f"</tr></thead><tbody>{''.join(vrows)}</tbody></table></div>")
    return _page("ckptscan diff", "".join(body))


def _shape_note(v) -> str:
    parts = []
    if v.status == "shape-mismatch":
        parts.append(f"shape {tuple(v.shape_a)} vs {tuple(v.shape_b)}")
    if v.dtype_mismatch:
        parts.append(f"dtype {v.dtype_a} vs {v.dtype_b}")
    return "; ".join(parts)


__all__ = ["render", "render_diff", "render_timeline"]
