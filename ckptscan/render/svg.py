"""Inline SVG charts for :mod:`ckptscan.render.html`, written as text (no library).

Every chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (its text
alternative), styled by the page's CSS classes (so one chart serves light and dark
mode), and carries its data in ``data-*`` attributes for tests and scripts. Meaning
never rests on colour alone: each kind of mark has its own shape and a legend in
words (:data:`MARKS`).

Ordinary points of a series are drawn as one ``<path>`` of round dots (one element
for thousands of channels); only marked channels get an element of their own, capped
at :data:`MAX_MARK_ELEMENTS` per chart (the full list stays in ``data-flagged``).
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable, Sequence

#: Individual marker elements per chart (the rest are listed in data attributes only).
MAX_MARK_ELEMENTS = 1024

#: kind -> (legend text, shape); shapes are drawn by :func:`mark`.
MARKS = {
    "nan": ("NaN (drawn at the top edge)", "cross"),
    "posinf": ("+Inf (top edge)", "up"),
    "neginf": ("−Inf (bottom edge)", "down"),
    "negative": ("negative variance (bottom edge)", "diamond"),
    "above_f16": ("above float16 max 65504", "square"),
    "flagged": ("flagged by a rule", "ring"),
}


def esc(text: object) -> str:
    """Text safe inside HTML/SVG text and attribute values."""
    return escape(str(text), quote=True)


def num(x: object) -> float:
    """A float from a profile value (``None``, numbers, or ``"nan"``/``"inf"`` strings)."""
    if x is None:
        return float("nan")
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def fmt(x: object) -> str:
    """A short number: ``NaN``, ``+Inf``, ``-Inf`` or 3 significant digits."""
    v = num(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "−Inf"
    return f"{v:.3g}"


def mark(kind: str, x: float, y: float, r: float = 4.0, attrs: str = "") -> str:
    """One marker of ``kind`` (see :data:`MARKS`) centred on ``(x, y)``."""
    shape = MARKS.get(kind, ("", "dot"))[1]
    cls = f"mk mk-{kind}"
    if shape == "cross":
        d = f"M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}M{x - r:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}"
        return f'<path class="{cls}" d="{d}"{attrs}/>'
    if shape == "up":
        return f'<path class="{cls}" d="M{x:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}L{x - r:.1f},{y + r:.1f}Z"{attrs}/>'
    if shape == "down":
        return f'<path class="{cls}" d="M{x:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}L{x - r:.1f},{y - r:.1f}Z"{attrs}/>'
    if shape == "diamond":
        return f'<path class="{cls}" d="M{x:.1f},{y - r:.1f}L{x + r:.1f},{y:.1f}L{x:.1f},{y + r:.1f}L{x - r:.1f},{y:.1f}Z"{attrs}/>'
    if shape == "square":
        return f'<rect class="{cls}" x="{x - r * .8:.1f}" y="{y - r * .8:.1f}" width="{r * 1.6:.1f}" height="{r * 1.6:.1f}"{attrs}/>'
    if shape == "ring":
        return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="{r + 1.5:.1f}"{attrs}/>'
    return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"{attrs}/>'


def legend(kinds: Iterable[str]) -> str:
    """An HTML legend: each marker's shape next to its meaning in words."""
    items = []
    for k in kinds:
        text = MARKS[k][0]
        items.append(f'<li><svg class="lg" width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">'
                     f'{mark(k, 7, 7, 4)}</svg>{esc(text)}</li>')
    return f'<ul class="legend">{"".join(items)}</ul>'


def _open(w: int, h: int, title: str, desc: str, ident: str, cls: str, data: str = "") -> str:
    return (f'<svg class="chart {cls}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'aria-labelledby="{ident}-t {ident}-d" id="{ident}"{data}>'
            f'<title id="{ident}-t">{esc(title)}</title><desc id="{ident}-d">{esc(desc)}</desc>')


class LogScale:
    """Maps positive values to pixels on a log10 axis (``lo`` at ``p0``, ``hi`` at ``p1``)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float):
        lo = max(lo, 1e-300)
        hi = max(hi, lo * 10)
        self.a, self.b = math.log10(lo), math.log10(hi)
        self.p0, self.p1 = p0, p1

    def __call__(self, v: float) -> float:
        t = (math.log10(v) - self.a) / (self.b - self.a)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        """Powers of ten inside the range (at most ~8)."""
        lo, hi = math.ceil(self.a - 1e-9), math.floor(self.b + 1e-9)
        step = max(1, math.ceil((hi - lo + 1) / 8))
        return [10.0 ** e for e in range(lo, hi + 1, step)]


class LinScale:
    """Maps values to pixels linearly."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float):
        if not hi > lo:
            lo, hi = lo - 1.0, hi + 1.0
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        """About five round values inside the range."""
        span = self.hi - self.lo
        step = 10 ** math.floor(math.log10(span / 5)) if span > 0 else 1
        for m in (1, 2, 5, 10):
            if span / (step * m) <= 6:
                step *= m
                break
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step) + 1)]


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    e = math.log10(abs(v))
    if abs(e - round(e)) < 1e-9:
        if e >= 4 or e <= -3:
            return ("−" if v < 0 else "") + f"1e{int(round(e))}"
        return f"{v:g}"
    return f"{v:.3g}"


# --- all BN layers at a glance ----------------------------------------------------------


def glance(layers: Sequence[dict], decades: float, ident: str) -> str:
    """One row per BN layer: the variance max/median ratio on a log axis, then markers
    and counts for non-finite, negative and above-float16 channels."""
    row, top, left, right = 14, 34, 250, 170
    width = 940
    h = top + row * len(layers) + 26
    ratios = [num(s.get("var_ratio")) for s in layers]
    finite = [r for r in ratios if math.isfinite(r) and r >= 1]
    hi = max([10.0 ** (decades + 1)] + [r * 2 for r in finite])
    sx = LogScale(1.0, hi, left, width - right)
    flagged = [s["layer_path"] for s in layers if s.get("flagged")]
    worst = max(zip(ratios, (s["layer_path"] for s in layers)), key=lambda t: t[0] if math.isfinite(t[0]) else -1,
                default=(float("nan"), ""))
    desc = (f"{len(layers)} BatchNormalization layers in model order. Bar length: the layer's moving-variance "
            f"max/median ratio on a log scale (rule BN002 flags channels {10 ** decades:.0f} times the median). "
            f"Largest ratio {fmt(worst[0])} in {worst[1]}. "
            + (f"Flagged layers: {', '.join(flagged)}." if flagged else "No layer is flagged."))
    out = [_open(width, h, "All BatchNormalization layers at a glance", desc, ident, "glance",
                 f' data-layers="{len(layers)}"')]
    # axis
    out.append(f'<text class="ax" x="{left}" y="12">variance max / median (log scale)</text>')
    for t in sx.ticks():
        x = sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{h - 24}"/>'
                   f'<text class="ax" x="{x:.1f}" y="{top - 12}" text-anchor="middle">{_tick_label(t)}×</text>')
    tx = sx(10.0 ** decades)
    out.append(f'<line class="limit" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 8}" y2="{h - 24}"/>'
               f'<text class="ax lim" x="{tx + 3:.1f}" y="{h - 10}">BN002 limit {10 ** decades:.0f}×</text>')
    cx = width - right + 12
    out.append(f'<text class="ax" x="{cx}" y="{top - 12}">bad channels</text>')
    for i, s in enumerate(layers):
        y = top + i * row
        path = s["layer_path"]
        r = ratios[i]
        bad = s.get("flagged")
        label = path if len(path) <= 38 else "…" + path[-37:]
        attrs = (f' data-layer="{esc(path)}" data-ratio="{fmt(r)}" data-nonfinite="{int(num(s.get("nonfinite")) or 0)}"'
                 f' data-negative="{s.get("negative", 0)}" data-above-f16="{s.get("above_f16", 0)}"'
                 f' data-flagged="{"1" if bad else "0"}"')
        out.append(f'<g class="row{" bad" if bad else ""}"{attrs}>')
        tip = (f"{path}: {s.get('channels')} channels, variance median {fmt(s.get('var_median'))}, max "
               f"{fmt(s.get('var_max'))}, ratio {fmt(r)}; non-finite {s.get('nonfinite', 0)}, negative "
               f"{s.get('negative', 0)}, above float16 {s.get('above_f16', 0)}" + ("; flagged" if bad else ""))
        out.append(f"<title>{esc(tip)}</title>")
        if i % 2:
            out.append(f'<rect class="stripe" x="0" y="{y}" width="{width}" height="{row}"/>')
        name = f'<text class="lbl" x="{left - 8}" y="{y + 10.5}" text-anchor="end">{esc(label)}</text>'
        out.append(f'<a href="#layer-{esc(_slug(path))}">{name}</a>' if bad else name)
        if bad:
            out.append(f'<text class="flag" x="4" y="{y + 10.5}">⚑</text>')
        if math.isfinite(r) and r >= 1:
            x = sx(min(r, hi))
            out.append(f'<rect class="bar{" over" if r >= 10 ** decades else ""}" x="{left}" y="{y + 3}" '
                       f'width="{max(x - left, 1.5):.1f}" height="{row - 6}"/>')
        elif not math.isfinite(r):
            out.append(f'<text class="ax" x="{left + 2}" y="{y + 10.5}">no finite variance</text>')
        x = cx
        for kind, key, _label in (("nan", "nonfinite", "non-finite"), ("negative", "negative", "negative"),
                                  ("above_f16", "above_f16", "> 65504")):
            n = int(num(s.get(key)) or 0)
            if n:
                out.append(mark(kind, x + 4, y + 7, 4, f' data-kind="{kind}" data-count="{n}"'))
                out.append(f'<text class="cnt" x="{x + 11}" y="{y + 10.5}">{n}</text>')
                x += 34
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _slug(path: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in path)


# --- per-channel charts -------------------------------------------------------------------


def channels(layer: str, var: str, values: Sequence[object], index: Sequence[int] | None, flagged: Sequence[int],
             band: Sequence[float] | None, log: bool, ident: str) -> tuple[str, set[str]]:
    """``var`` of ``layer`` per channel: dots, flagged channels ringed, NaN/±Inf and (log
    scale) non-positive values as distinct markers at the axis edges, the healthy band
    shaded, the float16 maximum as a dashed line when in range. Returns the SVG and the
    kinds of marks drawn (for the legend).

    Vectorised: ordinary channels become one path; where there are more of them than
    pixels, each pixel column is drawn as one stroke from its lowest to its highest
    value (what the dots would cover), so the page stays small for 2048 channels."""
    import numpy as np

    width, height, left, right, top, bottom = 440, 230, 58, 12, 16, 34
    try:  # floats (in process) or "nan"/"inf" strings (a result read back from the --cache)
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        vals = np.array([num(v) for v in values], dtype=np.float64)
    n = vals.size
    idx = np.asarray(index, dtype=np.int64) if index is not None else np.arange(n)
    total = int(idx[-1]) + 1 if n else 0
    finite = np.isfinite(vals)
    usable = finite & (vals > 0) if log else finite
    fin = vals[usable]
    if log:
        lo = float(fin.min()) if fin.size else 1e-3
        hi = float(fin.max()) if fin.size else 1.0
        if band:
            if num(band[0]) > 0:
                lo = min(lo, num(band[0]))
            hi = max(hi, num(band[1]))
        sy = LogScale(lo / 2, hi * 2, height - bottom, top)
    else:
        lo = float(fin.min()) if fin.size else -1.0
        hi = float(fin.max()) if fin.size else 1.0
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        sy = LinScale(lo - pad, hi + pad, height - bottom, top)
    sx = LinScale(-0.5, max(total, 1) - 0.5, left, width - right)
    fl = sorted(set(int(i) for i in flagged))
    is_fl = np.isin(idx, np.asarray(fl, dtype=np.int64)) if fl else np.zeros(n, bool)
    xs = sx.p0 + (idx - sx.lo) / (sx.hi - sx.lo) * (sx.p1 - sx.p0)
    ys = np.full(n, float(height - bottom + 6))
    with np.errstate(all="ignore"):
        clipped = np.clip(vals, sy_lo(sy), sy_hi(sy))
        if log:
            ys[usable] = sy.p0 + (np.log10(clipped[usable]) - sy.a) / (sy.b - sy.a) * (sy.p1 - sy.p0)
        else:
            ys[usable] = sy.p0 + (clipped[usable] - sy.lo) / (sy.hi - sy.lo) * (sy.p1 - sy.p0)
        above = usable & (vals > 65504) if log else np.zeros(n, bool)
    ys[np.isnan(vals) | np.isposinf(vals)] = top - 6
    special = ~usable | above
    if log:
        special &= ~(finite & (vals == 0))  # a zero variance is an ordinary (dead) channel at the bottom edge
    plain = ~special & ~is_fl
    dots = _dots(xs[plain], ys[plain])
    kinds_seen: set[str] = set()
    marks: list[str] = []
    for i in np.flatnonzero(special | is_fl)[:MAX_MARK_ELEMENTS].tolist():
        v, c, x, y = float(vals[i]), int(idx[i]), float(xs[i]), float(ys[i])
        kind = None
        if math.isnan(v):
            kind = "nan"
        elif math.isinf(v):
            kind = "posinf" if v > 0 else "neginf"
        elif log and v < 0:
            kind = "negative"
        elif above[i]:
            kind = "above_f16"
        attrs = f' data-channel="{c}" data-value="{fmt(v)}"' + (' data-flagged="1"' if is_fl[i] else "")
        parts = []
        if kind:
            kinds_seen.add(kind)
            parts.append(mark(kind, x, y, 4))
        else:
            parts.append(f'<path class="dot" d="M{x:.1f},{y:.1f}h0"/>')
        if is_fl[i]:
            kinds_seen.add("flagged")
            parts.append(mark("flagged", x, y, 4))
        marks.append(f'<g class="ch"{attrs}><title>channel {c}: {esc(fmt(v))}'
                     f'{" (flagged)" if is_fl[i] else ""}</title>{"".join(parts)}</g>')
    scale = "log scale" if log else "linear scale"
    bad_desc = ", ".join(str(c) for c in fl[:40]) + (" …" if len(fl) > 40 else "")
    nonfin = int(n - finite.sum())
    desc = (f"{var} of {layer} for {total} channels ({scale}). "
            + (f"Flagged channels: {bad_desc}. " if fl else "No flagged channel. ")
            + (f"{nonfin} non-finite values drawn at the axis edge. " if nonfin else "")
            + (f"Healthy band {fmt(band[0])} to {fmt(band[1])} shaded." if band else ""))
    data = (f' data-layer="{esc(layer)}" data-variable="{esc(var)}" data-channels="{total}"'
            f' data-flagged="{" ".join(str(c) for c in fl)}"')
    out = [_open(width, height, f"{layer} {var} per channel", desc, ident, "chan", data)]
    # band
    if band:
        b0, b1 = num(band[0]), num(band[1])
        if log:
            b0 = max(b0, sy_lo(sy))
        b1 = min(b1, sy_hi(sy))
        if not log:
            b0 = max(b0, sy_lo(sy))
        if b1 > b0:
            y0, y1 = sy(b1), sy(b0)
            out.append(f'<rect class="band" x="{left}" y="{y0:.1f}" width="{width - left - right}" '
                       f'height="{max(y1 - y0, 1):.1f}"><title>healthy band</title></rect>')
    for t in sy.ticks():
        y = sy(t)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ax" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_tick_label(t)}</text>')
    if log and sy_lo(sy) < 65504 < sy_hi(sy):
        y = sy(65504)
        out.append(f'<line class="limit" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ax lim" x="{width - right - 2}" y="{y - 3:.1f}" text-anchor="end">float16 max</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>'
               f'<line class="axis" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>')
    for t in sx.ticks():
        if 0 <= t < total and float(t).is_integer():
            x = sx(t)
            out.append(f'<text class="ax" x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<text class="ax" x="{(left + width - right) / 2:.0f}" y="{height - 3}" text-anchor="middle">channel</text>')
    if dots:
        out.append(f'<path class="dots" d="{dots}"/>')
    out += marks
    out.append("</svg>")
    return "".join(out), kinds_seen


def _dots(xs, ys) -> str:
    """Path data for round dots at (xs, ys); per pixel column one min–max stroke when dense."""
    import numpy as np

    if xs.size == 0:
        return ""
    if xs.size <= 400:
        return "".join(f"M{x:.1f},{y:.1f}h0" for x, y in zip(xs.tolist(), ys.tolist()))
    px = np.round(xs).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, px[1:] != px[:-1]])  # xs ascend with the channel index
    lo = np.round(np.minimum.reduceat(ys, starts)).astype(np.int64).tolist()
    hi = np.round(np.maximum.reduceat(ys, starts)).astype(np.int64).tolist()
    return "".join(f"M{x},{a}V{b}" if b > a else f"M{x},{a}h0" for x, a, b in zip(px[starts].tolist(), lo, hi))


def sy_lo(s) -> float:
    """The smallest value on a scale's axis."""
    return 10 ** s.a if isinstance(s, LogScale) else s.lo


def sy_hi(s) -> float:
    """The largest value on a scale's axis."""
    return 10 ** s.b if isinstance(s, LogScale) else s.hi


# --- timeline ----------------------------------------------------------------------------

STATUS_GLYPH = {"ok": ("✓", "healthy"), "warning": ("!", "warning"), "error": ("✕", "error"),
                "unreadable": ("?", "unreadable")}


def grid(rows: Sequence[str], cols: Sequence[str], cells: dict, first_bad: int | None, last_good: int | None,
         ident: str, other: int = 0) -> str:
    """Layers x checkpoints: one glyph per cell (✓ healthy, ! warning, ✕ error, ? unreadable),
    the first bad and last good columns outlined and labelled."""
    cw, rh, left, top = 64, 18, 260, 46
    width = left + cw * len(cols) + 20
    height = top + rh * (len(rows) + (1 if other else 0)) + 10
    desc = (f"Health of {len(rows)} layers across {len(cols)} checkpoints. "
            + (f"First bad checkpoint: {cols[first_bad]}. " if first_bad is not None else "No bad checkpoint. ")
            + (f"Last good checkpoint: {cols[last_good]}." if last_good is not None else ""))
    data = (f' data-first-bad="{"" if first_bad is None else esc(cols[first_bad])}"'
            f' data-last-good="{"" if last_good is None else esc(cols[last_good])}"')
    out = [_open(width, height, "Layer health per checkpoint", desc, ident, "grid", data)]
    for j, c in enumerate(cols):
        x = left + j * cw
        label = c if len(c) <= 9 else "…" + c[-8:]
        cls = "col"
        tag = ""
        if j == first_bad:
            cls += " firstbad"
            tag = "first bad"
        elif j == last_good:
            cls += " lastgood"
            tag = "last good"
        out.append(f'<g class="{cls}" data-checkpoint="{esc(c)}"{" data-mark=" + chr(34) + tag + chr(34) if tag else ""}>'
                   f'<title>{esc(c)}{" (" + tag + ")" if tag else ""}</title>')
        if tag:
            out.append(f'<rect class="colbox" x="{x + 2}" y="{top - 16}" width="{cw - 4}" '
                       f'height="{rh * (len(rows) + (1 if other else 0)) + 20}"/>'
                       f'<text class="tag" x="{x + cw / 2}" y="10" text-anchor="middle">{tag}</text>')
        out.append(f'<text class="ax" x="{x + cw / 2}" y="{top - 4}" text-anchor="middle">{esc(label)}</text></g>')
    for i, r in enumerate(rows):
        y = top + i * rh
        label = r if len(r) <= 40 else "…" + r[-39:]
        out.append(f'<text class="lbl" x="{left - 8}" y="{y + 13}" text-anchor="end">{esc(label)}<title>{esc(r)}</title></text>')
        for j, c in enumerate(cols):
            st = cells.get((r, j), "ok")
            g, word = STATUS_GLYPH[st]
            x = left + j * cw + cw / 2
            out.append(f'<text class="cell st-{st}" x="{x}" y="{y + 13}" text-anchor="middle" '
                       f'data-layer="{esc(r)}" data-checkpoint="{esc(c)}" data-status="{st}">{g}'
                       f'<title>{esc(r)} in {esc(c)}: {word}</title></text>')
    if other:
        y = top + len(rows) * rh
        out.append(f'<text class="ax" x="{left - 8}" y="{y + 13}" text-anchor="end">{other} other layers</text>')
        for j, c in enumerate(cols):
            st = cells.get(("*", j), "ok")
            g, word = STATUS_GLYPH[st]
            out.append(f'<text class="cell st-{st}" x="{left + j * cw + cw / 2}" y="{y + 13}" text-anchor="middle">{g}'
                       f'<title>the other layers in {esc(c)}: {word}</title></text>')
    out.append("</svg>")
    return "".join(out)


def headroom(series: dict[str, list[float | None]], cols: Sequence[str], first_bad: int | None, k: float,
             ident: str) -> str:
    """float16 headroom per BN layer per checkpoint, log scale, the overflow line at 1×;
    0 (overflowed) as a cross on the bottom edge; one marker shape per layer."""
    width, height, left, right, top, bottom = 760, 260, 64, 190, 18, 40
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v) and v > 0]
    lo = min(vals + [1.0]) / 2
    hi = max(vals + [10.0]) * 2
    sy = LogScale(lo, hi, height - bottom, top)
    sx = LinScale(-0.5, max(len(cols), 1) - 0.5, left, width - right)
    low = min(((v, name, cols[j]) for name, s in series.items() for j, v in enumerate(s) if v is not None),
              default=None, key=lambda t: t[0])
    desc = (f"float16 headroom of {len(series)} BatchNormalization layers per checkpoint: 65504 divided by the "
            f"largest |moving_mean| + {k:g} x sqrt(moving_variance) over channels; below 1 the layer input "
            f"overflows float16; 0 means the statistics are already non-finite. "
            + (f"Lowest: {fmt(low[0])} in {low[1]} at {low[2]}." if low else ""))
    out = [_open(width, height, "float16 headroom per BN layer", desc, ident, "headroom")]
    for t in sy.ticks():
        y = sy(t)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ax" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_tick_label(t)}×</text>')
    if lo < 1 < hi:
        y = sy(1.0)
        out.append(f'<line class="limit" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ax lim" x="{width - right - 2}" y="{y - 3:.1f}" text-anchor="end">overflow (1×)</text>')
    if first_bad is not None:
        x = sx(first_bad)
        out.append(f'<line class="fbline" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>'
                   f'<text class="tag" x="{x:.1f}" y="{top - 4}" text-anchor="middle">first bad</text>')
    for j, c in enumerate(cols):
        label = c if len(c) <= 10 else "…" + c[-9:]
        out.append(f'<text class="ax" x="{sx(j):.1f}" y="{height - bottom + 16}" text-anchor="middle">{esc(label)}</text>')
    shapes = ["dot", "square", "diamond", "up", "down"]
    for n, (name, s) in enumerate(series.items()):
        shape = shapes[n % len(shapes)]
        pts = []
        out.append(f'<g class="hr s{n % 6}" data-layer="{esc(name)}">')
        for j, v in enumerate(s):
            if v is None or not v == v:
                continue
            x = sx(j)
            if v <= 0:
                out.append(mark("nan", x, height - bottom + 4, 4, f' data-checkpoint="{esc(cols[j])}" data-headroom="0"')
                           .replace("mk mk-nan", "mk mk-nan hrz"))
                pts.append(None)
                continue
            y = sy(min(v, hi))
            pts.append((x, y))
            out.append(f'<g data-checkpoint="{esc(cols[j])}" data-headroom="{fmt(v)}"><title>{esc(name)} at '
                       f'{esc(cols[j])}: headroom {fmt(v)}×</title>{_shape(shape, x, y)}</g>')
        seg = []
        for p in pts + [None]:
            if p is None:
                if len(seg) > 1:
                    out.append('<path class="line" d="M' + "L".join(f"{a:.1f},{b:.1f}" for a, b in seg) + '"/>')
                seg = []
            else:
                seg.append(p)
        ly = top + 6 + n * 16
        out.append(f'{_shape(shape, width - right + 14, ly)}<text class="lbl" x="{width - right + 24}" y="{ly + 4}">'
                   f'{esc(name if len(name) <= 26 else "…" + name[-25:])}</text></g>')
    out.append(f'<text class="ax" x="{width - right + 14}" y="{height - 8}">✕ at the bottom: non-finite</text>')
    out.append("</svg>")
    return "".join(out)


def _shape(shape: str, x: float, y: float) -> str:
    kind = {"dot": "", "square": "above_f16", "diamond": "negative", "up": "posinf", "down": "neginf"}[shape]
    if not kind:
        return f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>'
    return mark(kind, x, y, 4).replace(f"mk mk-{kind}", "pt")


# --- diff --------------------------------------------------------------------------------


def diff_bars(rows: Sequence[dict], ident: str) -> str:
    """One row per changed variable (model order): the largest relative change on a log
    axis (1e-8 to 2), and a cross with the count where values became NaN/Inf."""
    row, top, left, right = 14, 30, 300, 110
    width = 940
    height = top + row * len(rows) + 20
    sx = LogScale(1e-8, 2.0, left, width - right)
    newnf = [r for r in rows if r["new_nonfinite"]]
    desc = (f"{len(rows)} variables that differ. Bar: largest relative change |a-b|/max(|a|,|b|) on a log scale. "
            + (f"New non-finite values in: {', '.join(r['path'] for r in newnf[:20])}." if newnf
               else "No value became non-finite."))
    out = [_open(width, height, "Change per variable", desc, ident, "diffbars", f' data-rows="{len(rows)}"')]
    for t in sx.ticks():
        x = sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 16}"/>'
                   f'<text class="ax" x="{x:.1f}" y="{top - 10}" text-anchor="middle">{_tick_label(t)}</text>')
    out.append(f'<text class="ax" x="{width - right + 10}" y="{top - 10}">new NaN/Inf</text>')
    prev_layer = None
    for i, r in enumerate(rows):
        y = top + i * row
        layer = r["path"].rpartition("/")[0]
        name = r["path"] if layer != prev_layer else "  ↳ " + r["path"].rpartition("/")[2]
        prev_layer = layer
        rel = r["max_rel_diff"]
        out.append(f'<g class="row" data-path="{esc(r["path"])}" data-new-nonfinite="{r["new_nonfinite"]}">'
                   f'<title>{esc(r["path"])}: {r["changed_values"]} values changed, max abs {fmt(r["max_abs_diff"])}, '
                   f'max rel {fmt(rel)}, {r["new_nonfinite"]} new non-finite</title>')
        if i % 2:
            out.append(f'<rect class="stripe" x="0" y="{y}" width="{width}" height="{row}"/>')
        label = name if len(name) <= 46 else "…" + name[-45:]
        out.append(f'<text class="lbl" x="{left - 8}" y="{y + 10.5}" text-anchor="end" xml:space="preserve">{esc(label)}</text>')
        if rel > 0:
            x = sx(min(max(rel, 1e-8), 2.0))
            out.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(x - left, 1.5):.1f}" height="{row - 6}"/>')
        if r["new_nonfinite"]:
            out.append(mark("nan", width - right + 16, y + 7, 4) +
                       f'<text class="cnt" x="{width - right + 24}" y="{y + 10.5}">{r["new_nonfinite"]}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
